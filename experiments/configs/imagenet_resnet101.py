"""ResNet-101 (1x64d), baseline on ImageNet (main text Table 2).

    python experiments/train.py --config=experiments/configs/imagenet_resnet101.py \
        --workdir=runs/imagenet_resnet101 --config.data_dir=$TFDS_DATA_DIR

Parameters: 44.55M parameters (torchvision count).
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet('resnext101', 44.55, cardinality=1, base_width=64)
