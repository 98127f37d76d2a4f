"""ResNeXt-50 4x16d, on the dual curve (Table 2b) on ImageNet (main text Table 2).

    python experiments/train.py --config=experiments/configs/imagenet_resnext50_4x16d.py \
        --workdir=runs/imagenet_resnext50_4x16d --config.data_dir=$TFDS_DATA_DIR

Parameters: no parameter count in the text we have; tests/test_configs.py checks it against an independent count.
"""

from __future__ import annotations

from experiments.configs import common


def get_config():
  return common.imagenet('resnext50', None, cardinality=4, base_width=16)
