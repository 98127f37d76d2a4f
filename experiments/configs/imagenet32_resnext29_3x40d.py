"""ResNeXt-29 3x40d (dual curve, rho 1.8) on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_resnext29_3x40d.py --workdir=runs/imagenet32_resnext29_3x40d

Paper: 7.99M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('resnext29', 7.99, cardinality=3, base_width=40)
