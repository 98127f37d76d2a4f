"""ResNeXt-29 10x10d (dual optimum) on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_resnext29_10x10d.py --workdir=runs/imagenet32_resnext29_10x10d

Paper: 5.24M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('resnext29', 5.24, cardinality=10, base_width=10)
