"""ResNet-29 1x128d (baseline) on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_resnext29_1x128d.py --workdir=runs/imagenet32_resnext29_1x128d

Paper: 14.79M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('resnext29', 14.79, cardinality=1, base_width=128)
