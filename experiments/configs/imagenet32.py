r"""ImageNet 32x32 (appendix Table 1): ResNeXt-29 designs and Wide ResNets, one row each.

The argument is the row::

    # resnext29_1x128d: ResNet-29 1x128d, the baseline
    python experiments/train.py --config=experiments/configs/imagenet32.py:resnext29_1x128d \
        --workdir=runs/imagenet32_resnext29_1x128d
    # resnext29_3x64d: ResNeXt-29 3x64d
    python experiments/train.py --config=experiments/configs/imagenet32.py:resnext29_3x64d \
        --workdir=runs/imagenet32_resnext29_3x64d
    # resnext29_3x40d: ResNeXt-29 3x40d, on the dual curve (rho 1.8)
    python experiments/train.py --config=experiments/configs/imagenet32.py:resnext29_3x40d \
        --workdir=runs/imagenet32_resnext29_3x40d
    # resnext29_37x10d: ResNeXt-29 37x10d, the primal optimum
    python experiments/train.py --config=experiments/configs/imagenet32.py:resnext29_37x10d \
        --workdir=runs/imagenet32_resnext29_37x10d
    # resnext29_10x10d: ResNeXt-29 10x10d, the dual optimum
    python experiments/train.py --config=experiments/configs/imagenet32.py:resnext29_10x10d \
        --workdir=runs/imagenet32_resnext29_10x10d
    # wrn28_10: Wide ResNet 28-10
    python experiments/train.py --config=experiments/configs/imagenet32.py:wrn28_10 \
        --workdir=runs/imagenet32_wrn28_10
    # wrn28_5: Wide ResNet 28-5
    python experiments/train.py --config=experiments/configs/imagenet32.py:wrn28_5 \
        --workdir=runs/imagenet32_wrn28_5

The recipe is ``common.imagenet32`` (batch 1024, lr 0.08, wd 5e-4, 80 epochs, /5 at 20, 40 and
60). ``ROWS`` holds each row's model and the parameter count the paper prints.
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
    'resnext29_1x128d': Row('resnext29', {'cardinality': 1, 'base_width': 128}, '14.79'),
    'resnext29_3x64d': Row('resnext29', {'cardinality': 3, 'base_width': 64}, '14.36'),
    'resnext29_3x40d': Row('resnext29', {'cardinality': 3, 'base_width': 40}, '7.99'),
    'resnext29_37x10d': Row('resnext29', {'cardinality': 37, 'base_width': 10}, '14.76'),
    'resnext29_10x10d': Row('resnext29', {'cardinality': 10, 'base_width': 10}, '5.24'),
    'wrn28_10': Row('wrn', {'depth': 28, 'widen_factor': 10}, '37.1'),
    'wrn28_5': Row('wrn', {'depth': 28, 'widen_factor': 5}, '9.5'),
}


def get_config(arg: str | None = None):
  row = common.pick(ROWS, arg, 'imagenet32.py')
  return common.imagenet32(row.model, common.paper_millions(row.paper_params_m),
                           **row.model_kwargs)
