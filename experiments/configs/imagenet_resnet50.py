"""ResNet-50 (1x64d), the primal/dual baseline on ImageNet (main text Table 2).

    python experiments/train.py --config=experiments/configs/imagenet_resnet50.py \
        --workdir=runs/imagenet_resnet50 --config.data_dir=$TFDS_DATA_DIR

Parameters: 25.56M parameters (torchvision count).
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet('resnext50', 25.56, cardinality=1, base_width=64)
