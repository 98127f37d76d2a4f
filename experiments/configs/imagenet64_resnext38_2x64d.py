"""ResNeXt-38 2x64d on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_2x64d.py --workdir=runs/imagenet64_resnext38_2x64d

Paper: 38.98M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 38.98, cardinality=2, base_width=64)
