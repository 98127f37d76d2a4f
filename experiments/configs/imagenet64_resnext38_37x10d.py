"""ResNeXt-38 37x10d (primal optimum) on ImageNet 64x64 (appendix Table 2, ImageNet 64x64).

    python experiments/train.py --config=experiments/configs/imagenet64_resnext38_37x10d.py --workdir=runs/imagenet64_resnext38_37x10d

Paper: 57.67M parameters.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet64('resnext38', 57.67, cardinality=37, base_width=10)
