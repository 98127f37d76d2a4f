"""Theory: the kernels and the Monte Carlo of the paper, as pure functions.

* :mod:`ntk`           empirical NTKs (pure JAX, structured, neural-tangents), ensemble NTK, diagonal fast path.
* :mod:`infinite`      infinite-width NTK of the dense member (ReLU recursion / nt.stax).
* :mod:`variance`      NTK moments over initializations, Neural Mean Kernel, variance ratios (Monte Carlo).
* :mod:`conditional`   exact-in-law conditional samplers of the diagonal NTK entry.
* :mod:`alpha`         Algorithm 1: fan-in sums and the fit of alpha.
"""

import importlib

MODULES = (
    'ntk', 'infinite', 'variance', 'conditional', 'alpha',
)

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(MODULES))
