"""Design: from a member block to the primal / dual ensemble (Algorithm 2).

* :mod:`member`       a Flax block as a member: structure, widths, exact counts of its networks.
* :mod:`accounting`   exact parameter and FLOP counts of Flax modules (jax.eval_shape, jaxprs).
* :mod:`blocks`       closed forms beta(n), S(n) of dense members and bottleneck paths.
* :mod:`solver`       the primal / dual problems and their jit-compiled sweep.
* :mod:`presets`      the paper's members (dense, bottleneck) and three more families.
"""

import importlib

MODULES = (
    'member', 'accounting', 'blocks', 'solver', 'presets',
)

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(MODULES))
