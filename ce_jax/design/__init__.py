"""Design: from a member block to the primal / dual ensemble (Algorithm 2).

* :mod:`member`       a Flax block as a member: structure, widths, exact counts of its networks.
* :mod:`accounting`   exact parameter and FLOP counts of Flax modules (jax.eval_shape, jaxprs).
* :mod:`blocks`       closed forms beta(n), S(n) of dense members and bottleneck paths.
* :mod:`solver`       the primal / dual problems and their jit-compiled sweep.
* :mod:`presets`      the paper's members (dense, bottleneck) and three more families.
"""

from ce_jax import _lazy

MODULES = ('member', 'accounting', 'blocks', 'solver', 'presets')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
