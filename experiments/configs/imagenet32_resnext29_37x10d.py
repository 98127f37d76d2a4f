"""ResNeXt-29 37x10d (primal optimum) on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_resnext29_37x10d.py --workdir=runs/imagenet32_resnext29_37x10d

Paper: 14.76M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('resnext29', 14.76, cardinality=37, base_width=10)
