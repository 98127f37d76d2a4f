r"""ImageNet 64x64 (appendix Table 2): ResNeXt-38 designs and a Wide ResNet, one row each.

The argument is the row of ``ROWS`` below::

    python experiments/train.py --config=experiments/configs/imagenet64.py:ROW \
        --workdir=runs/imagenet64_ROW

with ROW one of
``resnext38_1x128d`` (ResNet-38 1x128d, the baseline); ``resnext38_1x96d`` (ResNet-38 1x96d, the
baseline); ``resnext38_2x64d`` (ResNeXt-38 2x64d); ``resnext38_3x64d`` (ResNeXt-38 3x64d);
``resnext38_8x10d`` (ResNeXt-38 8x10d, the dual optimum); ``resnext38_10x10d`` (ResNeXt-38
10x10d, the dual optimum); ``resnext38_22x10d`` (ResNeXt-38 22x10d, the primal optimum);
``resnext38_37x10d`` (ResNeXt-38 37x10d, the primal optimum); ``wrn36_5`` (Wide ResNet 36-5).

The recipe is ``common.RECIPES['imagenet64']``
(batch 512, lr 0.04, wd 5e-4, 60 epochs, /5 at 20, 30 and
40). ``ROWS`` holds each row's model and the parameter count the paper prints.
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
    'resnext38_1x128d': Row('resnext38', {'cardinality': 1, 'base_width': 128}, '57.79'),
    'resnext38_1x96d': Row('resnext38', {'cardinality': 1, 'base_width': 96}, '37.50'),
    'resnext38_2x64d': Row('resnext38', {'cardinality': 2, 'base_width': 64}, '38.98'),
    'resnext38_3x64d': Row('resnext38', {'cardinality': 3, 'base_width': 64}, '56.05'),
    'resnext38_8x10d': Row('resnext38', {'cardinality': 8, 'base_width': 10}, '16.27'),
    'resnext38_10x10d': Row('resnext38', {'cardinality': 10, 'base_width': 10}, '19.13'),
    'resnext38_22x10d': Row('resnext38', {'cardinality': 22, 'base_width': 10}, '36.25'),
    'resnext38_37x10d': Row('resnext38', {'cardinality': 37, 'base_width': 10}, '57.67'),
    'wrn36_5': Row('wrn', {'depth': 36, 'widen_factor': 5}, '37.6'),
}

__doc__ = common.with_commands(__doc__, 'imagenet64.py', ROWS,
                               [f'imagenet64_{row}' for row in ROWS])


def get_config(arg: str | None = None):
  return common.row_config('imagenet64', ROWS, arg, 'imagenet64.py')
