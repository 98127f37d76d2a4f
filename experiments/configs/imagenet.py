r"""ImageNet (main text Table 2): ResNet and ResNeXt-50/101 designs, one row each.

The argument is the row of ``ROWS`` below (``--config.data_dir`` is where tensorflow-datasets
prepared imagenet2012)::

    python experiments/train.py --config=experiments/configs/imagenet.py:ROW \
        --workdir=runs/imagenet_ROW --config.data_dir=$TFDS_DATA_DIR

with ROW one of
``resnet50`` (ResNet-50 (1x64d), the primal/dual baseline); ``resnet101`` (ResNet-101 (1x64d), a
baseline); ``resnext50_32x4d`` (ResNeXt-50 32x4d (ResNeXt paper)); ``resnext50_4x16d``
(ResNeXt-50 4x16d, on the dual curve (Table 2b)); ``resnext50_12x10d`` (ResNeXt-50 12x10d, the
primal optimum (Table 2a)); ``resnext101_32x4d`` (ResNeXt-101 32x4d (ResNeXt paper)).

The recipe is ``common.RECIPES['imagenet']``
(batch 256, lr 0.1, wd 1e-4, 100 epochs, /10 at 30, 60 and
90). ``ROWS`` holds each row's model and its parameter count: the baselines' are torchvision's
(ResNeXt-101 32x4d: the reference implementation's); the text gives none for 4x16d and 12x10d
(``tests/experiments/test_configs.py`` checks those against an independent closed-form count).
"""

from __future__ import annotations

import os
import runpy
import types

# Loaded by path: ml_collections loads config files outside any package (see common.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
common = types.SimpleNamespace(**runpy.run_path(os.path.join(_HERE, 'common.py')))

Row = common.Row
ROWS = {
    'resnet50': Row('resnext50', {'cardinality': 1, 'base_width': 64}, '25.56'),
    'resnet101': Row('resnext101', {'cardinality': 1, 'base_width': 64}, '44.55'),
    'resnext50_32x4d': Row('resnext50', {'cardinality': 32, 'base_width': 4}, '25.03'),
    'resnext50_4x16d': Row('resnext50', {'cardinality': 4, 'base_width': 16}, None),
    'resnext50_12x10d': Row('resnext50', {'cardinality': 12, 'base_width': 10}, None),
    'resnext101_32x4d': Row('resnext101', {'cardinality': 32, 'base_width': 4}, '44.18'),
}

__doc__ = common.with_commands(__doc__, 'imagenet.py', ROWS,
                               [f'imagenet_{row}' for row in ROWS],
                               ' --config.data_dir=$TFDS_DATA_DIR')


def get_config(arg: str | None = None):
  return common.row_config('imagenet', ROWS, arg, 'imagenet.py')
