"""Wide ResNet 36-5 on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_wrn36_5.py --workdir=runs/imagenet64_wrn36_5

Paper: 37.6M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('wrn', 37.6, depth=36, widen_factor=5)
