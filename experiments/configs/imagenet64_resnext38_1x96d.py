"""ResNet-38 1x96d (baseline) on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_1x96d.py --workdir=runs/imagenet64_resnext38_1x96d

Paper: 37.5M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 37.5, cardinality=1, base_width=96)
