"""ResNeXt-38 22x10d (primal optimum) on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_22x10d.py --workdir=runs/imagenet64_resnext38_22x10d

Paper: 36.25M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 36.25, cardinality=22, base_width=10)
