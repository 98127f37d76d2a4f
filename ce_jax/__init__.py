"""ce_jax: Collegial Ensembles in JAX/Flax.

Submodules (imported on first use, so ``import ce_jax`` stays light and works without
neural-tangents or tensorflow):

* :mod:`ce_jax.ntk`         empirical NTKs (neural-tangents, pure JAX, structured), ensemble NTK,
                            diagonal fast path.
* :mod:`ce_jax.infinite`    infinite-width NTK of the dense member (ReLU recursion / nt.stax).
* :mod:`ce_jax.variance`    NTK moments over initializations, Neural Mean Kernel (Monte Carlo).
* :mod:`ce_jax.alpha`       Algorithm 1: fan-in sums and the fit of alpha.
* :mod:`ce_jax.blocks`      closed forms beta(n), S(n) of dense members and bottleneck paths.
* :mod:`ce_jax.accounting`  exact parameter and FLOP counts of Flax modules (``jax.eval_shape``).
* :mod:`ce_jax.solver`      primal / dual architecture search (Algorithm 2).
* :mod:`ce_jax.models`      dense member/ensemble, NTK bottleneck, ResNeXt, ResNet, WRN.
* :mod:`ce_jax.train`, :mod:`ce_jax.input_pipeline`  pmap training on tfds / digits.
* :mod:`ce_jax.ablation`, :mod:`ce_jax.dynamics`     Fig. 4 and Theorem 1 experiments.
* :mod:`ce_jax.guards`      workdir locks, config records, write errors, progress checks.
"""

from __future__ import annotations

import importlib

__version__ = '0.1.0'

_SUBMODULES = (
    'ablation', 'accounting', 'alpha', 'blocks', 'cli', 'dynamics', 'guards', 'infinite',
    'input_pipeline', 'models', 'ntk', 'solver', 'train', 'variance',
)

__all__ = list(_SUBMODULES) + ['__version__']


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
