"""Studies: the paper's experiments as library functions, and every figure.

* :mod:`convergence`   Fig. 2: NTK variance of ensembles against multiplicity and width.
* :mod:`ablation`      Fig. 4: primal / dual designs of the dense member trained on real data.
* :mod:`dynamics`      Theorem 1: NTK change during training against the design.
* :mod:`plotting`      every figure (matplotlib, imported on use).
"""

from ce_jax import _lazy

MODULES = ('convergence', 'ablation', 'dynamics', 'plotting')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
