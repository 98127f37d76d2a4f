r"""ImageNet 64x64 (appendix Table 2): ResNeXt-38 designs and a Wide ResNet, one row each.

The argument is the row::

    # resnext38_1x128d: ResNet-38 1x128d, the baseline
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_1x128d \
        --workdir=runs/imagenet64_resnext38_1x128d
    # resnext38_1x96d: ResNet-38 1x96d, the baseline
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_1x96d \
        --workdir=runs/imagenet64_resnext38_1x96d
    # resnext38_2x64d: ResNeXt-38 2x64d
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_2x64d \
        --workdir=runs/imagenet64_resnext38_2x64d
    # resnext38_3x64d: ResNeXt-38 3x64d
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_3x64d \
        --workdir=runs/imagenet64_resnext38_3x64d
    # resnext38_8x10d: ResNeXt-38 8x10d, the dual optimum
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_8x10d \
        --workdir=runs/imagenet64_resnext38_8x10d
    # resnext38_10x10d: ResNeXt-38 10x10d, the dual optimum
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_10x10d \
        --workdir=runs/imagenet64_resnext38_10x10d
    # resnext38_22x10d: ResNeXt-38 22x10d, the primal optimum
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_22x10d \
        --workdir=runs/imagenet64_resnext38_22x10d
    # resnext38_37x10d: ResNeXt-38 37x10d, the primal optimum
    python experiments/train.py --config=experiments/configs/imagenet64.py:resnext38_37x10d \
        --workdir=runs/imagenet64_resnext38_37x10d
    # wrn36_5: Wide ResNet 36-5
    python experiments/train.py --config=experiments/configs/imagenet64.py:wrn36_5 \
        --workdir=runs/imagenet64_wrn36_5

The recipe is ``common.imagenet64`` (batch 512, lr 0.04, wd 5e-4, 60 epochs, /5 at 20, 30 and
40). ``ROWS`` holds each row's model and the parameter count the paper prints.
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


def get_config(arg: str | None = None):
  row = common.pick(ROWS, arg, 'imagenet64.py')
  return common.imagenet64(row.model, common.paper_millions(row.paper_params_m),
                           **row.model_kwargs)
