"""Wide ResNet 28-10 on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_wrn28_10.py --workdir=runs/imagenet32_wrn28_10

Paper: 37.1M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('wrn', 37.1, depth=28, widen_factor=10)
