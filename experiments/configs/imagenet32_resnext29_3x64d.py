"""ResNeXt-29 3x64d on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_resnext29_3x64d.py --workdir=runs/imagenet32_resnext29_3x64d

Paper: 14.36M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('resnext29', 14.36, cardinality=3, base_width=64)
