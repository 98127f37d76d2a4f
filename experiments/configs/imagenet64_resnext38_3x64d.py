"""ResNeXt-38 3x64d on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_3x64d.py --workdir=runs/imagenet64_resnext38_3x64d

Paper: 56.05M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 56.05, cardinality=3, base_width=64)
