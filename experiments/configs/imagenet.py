r"""ImageNet (main text Table 2): ResNet and ResNeXt-50/101 designs, one row each.

The argument is the row (``--config.data_dir`` is where tensorflow-datasets prepared
imagenet2012)::

    # resnet50: ResNet-50 (1x64d), the primal/dual baseline
    python experiments/train.py --config=experiments/configs/imagenet.py:resnet50 \
        --workdir=runs/imagenet_resnet50 --config.data_dir=$TFDS_DATA_DIR
    # resnet101: ResNet-101 (1x64d), a baseline
    python experiments/train.py --config=experiments/configs/imagenet.py:resnet101 \
        --workdir=runs/imagenet_resnet101 --config.data_dir=$TFDS_DATA_DIR
    # resnext50_32x4d: ResNeXt-50 32x4d (ResNeXt paper)
    python experiments/train.py --config=experiments/configs/imagenet.py:resnext50_32x4d \
        --workdir=runs/imagenet_resnext50_32x4d --config.data_dir=$TFDS_DATA_DIR
    # resnext50_4x16d: ResNeXt-50 4x16d, on the dual curve (Table 2b)
    python experiments/train.py --config=experiments/configs/imagenet.py:resnext50_4x16d \
        --workdir=runs/imagenet_resnext50_4x16d --config.data_dir=$TFDS_DATA_DIR
    # resnext50_12x10d: ResNeXt-50 12x10d, the primal optimum (Table 2a)
    python experiments/train.py --config=experiments/configs/imagenet.py:resnext50_12x10d \
        --workdir=runs/imagenet_resnext50_12x10d --config.data_dir=$TFDS_DATA_DIR
    # resnext101_32x4d: ResNeXt-101 32x4d (ResNeXt paper)
    python experiments/train.py --config=experiments/configs/imagenet.py:resnext101_32x4d \
        --workdir=runs/imagenet_resnext101_32x4d --config.data_dir=$TFDS_DATA_DIR

The recipe is ``common.imagenet`` (batch 256, lr 0.1, wd 1e-4, 100 epochs, /10 at 30, 60 and
90). ``ROWS`` holds each row's model and its parameter count: the baselines' are torchvision's
(ResNeXt-101 32x4d: the reference implementation's); the text gives none for 4x16d and 12x10d
(``tests/test_configs.py`` checks those against an independent closed-form count).
"""

from __future__ import annotations

import importlib.util
import os

# Config files are loaded from their path, outside any package (see common.py).
_found = importlib.util.spec_from_file_location(
    'ce_jax_config_common', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py'))
common = importlib.util.module_from_spec(_found)
_found.loader.exec_module(common)

Row = common.Row
ROWS = {
    'resnet50': Row('resnext50', {'cardinality': 1, 'base_width': 64}, '25.56'),
    'resnet101': Row('resnext101', {'cardinality': 1, 'base_width': 64}, '44.55'),
    'resnext50_32x4d': Row('resnext50', {'cardinality': 32, 'base_width': 4}, '25.03'),
    'resnext50_4x16d': Row('resnext50', {'cardinality': 4, 'base_width': 16}, None),
    'resnext50_12x10d': Row('resnext50', {'cardinality': 12, 'base_width': 10}, None),
    'resnext101_32x4d': Row('resnext101', {'cardinality': 32, 'base_width': 4}, '44.18'),
}


def get_config(arg: str | None = None):
  row = common.pick(ROWS, arg, 'imagenet.py')
  return common.imagenet(row.model, common.paper_millions(row.paper_params_m),
                         **row.model_kwargs)
