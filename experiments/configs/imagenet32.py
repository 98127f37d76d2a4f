r"""ImageNet 32x32 (appendix Table 1): ResNeXt-29 designs and Wide ResNets, one row each.

The argument is the row of ``ROWS`` below::

    python experiments/train.py --config=experiments/configs/imagenet32.py:ROW \
        --workdir=runs/imagenet32_ROW

with ROW one of
``resnext29_1x128d`` (ResNet-29 1x128d, the baseline); ``resnext29_3x64d`` (ResNeXt-29 3x64d);
``resnext29_3x40d`` (ResNeXt-29 3x40d, on the dual curve (rho 1.8)); ``resnext29_37x10d``
(ResNeXt-29 37x10d, the primal optimum); ``resnext29_10x10d`` (ResNeXt-29 10x10d, the dual
optimum); ``wrn28_10`` (Wide ResNet 28-10); ``wrn28_5`` (Wide ResNet 28-5).

The recipe is ``common.RECIPES['imagenet32']``
(batch 1024, lr 0.08, wd 5e-4, 80 epochs, /5 at 20, 40 and
60). ``ROWS`` holds each row's model and the parameter count the paper prints.
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
    'resnext29_1x128d': Row('resnext29', {'cardinality': 1, 'base_width': 128}, '14.79'),
    'resnext29_3x64d': Row('resnext29', {'cardinality': 3, 'base_width': 64}, '14.36'),
    'resnext29_3x40d': Row('resnext29', {'cardinality': 3, 'base_width': 40}, '7.99'),
    'resnext29_37x10d': Row('resnext29', {'cardinality': 37, 'base_width': 10}, '14.76'),
    'resnext29_10x10d': Row('resnext29', {'cardinality': 10, 'base_width': 10}, '5.24'),
    'wrn28_10': Row('wrn', {'depth': 28, 'widen_factor': 10}, '37.1'),
    'wrn28_5': Row('wrn', {'depth': 28, 'widen_factor': 5}, '9.5'),
}

__doc__ = common.with_commands(__doc__, 'imagenet32.py', ROWS,
                               [f'imagenet32_{row}' for row in ROWS])


def get_config(arg: str | None = None):
  return common.row_config('imagenet32', ROWS, arg, 'imagenet32.py')
