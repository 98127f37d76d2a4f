"""ResNeXt-50 32x4d (ResNeXt paper) on ImageNet (main text Table 2).

    python experiments/train.py --config=experiments/configs/imagenet_resnext50_32x4d.py \
        --workdir=runs/imagenet_resnext50_32x4d --config.data_dir=$TFDS_DATA_DIR

Parameters: 25.03M parameters (torchvision count).
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet('resnext50', 25.03, cardinality=32, base_width=4)
