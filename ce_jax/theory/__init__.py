"""Theory: the kernels and the Monte Carlo of the paper, as pure functions.

* :mod:`ntk`           empirical NTKs (pure JAX, structured, neural-tangents), ensemble NTK,
                       diagonal fast path.
* :mod:`infinite`      infinite-width NTK of the dense member (ReLU recursion / nt.stax).
* :mod:`variance`      NTK moments over initializations, Neural Mean Kernel, variance ratios (Monte
                       Carlo).
* :mod:`conditional`   exact-in-law conditional samplers of the diagonal NTK entry.
* :mod:`alpha`         Algorithm 1: fan-in sums and the fit of alpha.
"""

from ce_jax import _lazy

MODULES = ('ntk', 'infinite', 'variance', 'conditional', 'alpha')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
