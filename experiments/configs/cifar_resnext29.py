r"""ResNeXt-29 CxDd on CIFAR-10/100: the paper's designs (Tables 1, 3) and any point of the primal
and dual curves (Fig. 6).

The argument is ``DATASET,CxDd`` (default ``cifar10,37x10d``; ``DATASET`` alone keeps 37x10d):
``DATASET`` is cifar10 or cifar100, ``CxDd`` is cardinality x bottleneck width. The paper's
designs, each on CIFAR-10 (``cifar100,CxDd`` for CIFAR-100)::

    python experiments/train.py --config=experiments/configs/cifar_resnext29.py:cifar10,CxDd \
        --workdir=runs/cifar10_resnext29_CxDd

with CxDd one of
``1x128d`` (ResNet-29, the baseline, Table 1a/1b, Table 3); ``3x64d`` (the ResNeXt paper's
baseline, Table 1a, Table 3); ``37x10d`` (the primal optimum, Table 1a); ``10x10d`` (the dual
optimum, Table 1b); ``44x8d`` (the FLOPs-primal optimum, appendix Table 3); ``60x6d`` (near
the FLOPs-primal optimum, appendix Table 3).

Any other CxDd trains too (``paper_params_m`` is then None)::

    python experiments/train.py --config=experiments/configs/cifar_resnext29.py:cifar100,12x10d \
        --workdir=runs/cifar100_resnext29_12x10d

To train the design that experiments/search.py found instead, pass its JSON::

    python experiments/train.py --config=experiments/configs/cifar_resnext29.py:cifar10 \
        --config.search_json=runs/search/resnext29.json --config.search_design=dual \
        --workdir=runs/cifar10_dual

The recipe is ``common.cifar`` (SGD 0.9, batch 128, wd 5e-4, lr 0.1, 300 epochs, /10 at 150 and
225). ``ROWS`` holds the paper's parameter count of each design (10 classes; CIFAR-100 adds the
wider classifier's 90 * 1025).
"""

from __future__ import annotations

import os
import re
import runpy
import types

# Loaded by path: ml_collections loads config files outside any package (see common.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
common = types.SimpleNamespace(**runpy.run_path(os.path.join(_HERE, 'common.py')))

# CxDd: the parameter count the paper prints (millions, 10 classes).
ROWS = {
    '1x128d': '13.78',
    '3x64d': '13.35',
    '37x10d': '13.74',
    '10x10d': '4.22',
    '44x8d': '12.71',
    '60x6d': '12.57',
}

__doc__ = common.with_commands(__doc__, 'cifar_resnext29.py', [f'cifar10,{row}' for row in ROWS],
                               [f'cifar10_resnext29_{row}' for row in ROWS])


def get_config(arg: str | None = None):
  parts = [p.strip() for p in (arg or 'cifar10,37x10d').split(',') if p.strip()]
  dataset = parts[0] if parts else 'cifar10'
  design = parts[1] if len(parts) > 1 else '37x10d'
  match = re.fullmatch(r'(\d+)x(\d+)d', design)
  if not match or len(parts) > 2:
    raise ValueError(f'config argument must be DATASET,CxDd (e.g. cifar100,12x10d; the paper\'s '
                     f'designs: {", ".join(ROWS)}), got {arg!r}')
  cardinality, base_width = int(match.group(1)), int(match.group(2))
  printed = ROWS.get(f'{cardinality}x{base_width}d')
  return common.cifar(cardinality, base_width, dataset,
                      paper_params_m=common.paper_millions(printed))
