"""Any ResNeXt-29 CxDd on CIFAR-10/100: the points of the primal and dual curves (Fig. 6).

    python experiments/train.py --config=experiments/configs/cifar_resnext29.py:cifar100,12x10d \
        --workdir=runs/cifar100_resnext29_12x10d

The argument is ``DATASET,CxDd`` (default ``cifar10,37x10d``). To train the design that
experiments/search.py found instead, pass its JSON::

    python experiments/train.py --config=experiments/configs/cifar_resnext29.py:cifar10 \
        --config.search_json=runs/search/resnext29.json --config.search_design=dual \
        --workdir=runs/cifar10_dual
"""

from __future__ import annotations

import re

from experiments.configs import common


def get_config(arg: str | None = None):
  parts = [p.strip() for p in (arg or 'cifar10,37x10d').split(',') if p.strip()]
  dataset = parts[0] if parts else 'cifar10'
  design = parts[1] if len(parts) > 1 else '37x10d'
  match = re.fullmatch(r'(\d+)x(\d+)d', design)
  if not match:
    raise ValueError(f'config argument must be DATASET,CxDd (e.g. cifar100,12x10d), got {arg!r}')
  return common.cifar(int(match.group(1)), int(match.group(2)), dataset)
