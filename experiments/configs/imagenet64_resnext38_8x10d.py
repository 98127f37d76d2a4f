"""ResNeXt-38 8x10d (dual optimum) on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_8x10d.py --workdir=runs/imagenet64_resnext38_8x10d

Paper: 16.27M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 16.27, cardinality=8, base_width=10)
