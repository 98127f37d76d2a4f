"""Wide ResNet 28-5 on ImageNet 32x32 (appendix Table 1, ImageNet 32x32).

    python experiments/train.py --config=experiments/configs/imagenet32_wrn28_5.py --workdir=runs/imagenet32_wrn28_5

Paper: 9.5M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet32('wrn', 9.5, depth=28, widen_factor=5)
