"""Studies: the paper's experiments as library functions, and every figure.

* :mod:`convergence`   Fig. 2: NTK variance of ensembles against multiplicity and width.
* :mod:`ablation`      Fig. 4: primal / dual designs of the dense member trained on real data.
* :mod:`dynamics`      Theorem 1: NTK change during training against the design.
* :mod:`plotting`      every figure (matplotlib, imported on use).
"""

import importlib

MODULES = (
    'convergence', 'ablation', 'dynamics', 'plotting',
)

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(MODULES))
