"""ce_jax: Collegial Ensembles in JAX/Flax.

The package has five layers, one subpackage each (imported on first use, so ``import ce_jax``
stays light and works without neural-tangents, tensorflow or optax):

* :mod:`ce_jax.theory`    empirical NTKs, the infinite-width NTK, Monte-Carlo NTK moments and
                          the Neural Mean Kernel, Algorithm 1 (the alpha fit).
* :mod:`ce_jax.design`    members (any Flax block), exact parameter / FLOP accounting, closed
                          forms, the primal / dual solver (Algorithm 2), the paper's presets.
* :mod:`ce_jax.models`    Flax models by name (dense ensembles, bottlenecks, ResNeXt, ResNet,
                          WRN), the generic ensemble, fast layers; the oneDNN extension in
                          :mod:`ce_jax.models.native`.
* :mod:`ce_jax.training`  the pmap trainer, input pipelines, checkpoints.
* :mod:`ce_jax.studies`   the paper's experiments as functions (Fig. 2, Fig. 4, Theorem 1) and
                          every figure.

plus :mod:`ce_jax.tools` (command-line plumbing, workdir guards, benchmark records).

The entry points most programs need are re-exported here (also lazily)::

    import ce_jax
    kernel_fn = ce_jax.ensemble_ntk_fn(member_apply)          # theory.ntk
    m = ce_jax.Member(MyBlock, input_shape=(8, 8, 64))         # design.member: any Flax block
    est = ce_jax.estimate_alpha(m, trials=1000)                # theory.alpha: Algorithm 1
    r = ce_jax.solve(ce_jax.member_problem(m, baseline_width=256), est.fit.alpha)  # design.solver
    model = ce_jax.models.get('resnext29', cardinality=37, base_width=10)

The flat module paths of version 0.1 (``ce_jax.ntk``, ``ce_jax.solver``, ...) still import, as
deprecated aliases of their new homes (a ``DeprecationWarning`` on first use); they will be
removed in the next release. ``MOVED`` maps each old path to its new module(s).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

__version__ = '0.2.0'

SUBPACKAGES = ('theory', 'design', 'models', 'training', 'studies', 'tools')

# name -> module that defines it: the dozen functions and types a user calls first.
EXPORTS = {
    'empirical_ntk_fn': 'ce_jax.theory.ntk',
    'ensemble_ntk_fn': 'ce_jax.theory.ntk',
    'ntk_diagonal_fn': 'ce_jax.theory.ntk',
    'ntk_moments': 'ce_jax.theory.variance',
    'neural_mean_kernel': 'ce_jax.theory.variance',
    'estimate_alpha': 'ce_jax.theory.alpha',
    'fit_alpha': 'ce_jax.theory.alpha',
    'Member': 'ce_jax.design.member',
    'count_params': 'ce_jax.design.accounting',
    'count_flops': 'ce_jax.design.accounting',
    'member_problem': 'ce_jax.design.solver',
    'solve': 'ce_jax.design.solver',
    'search': 'ce_jax.design.solver',
    'ensemble': 'ce_jax.models.ensemble',
    'train_and_evaluate': 'ce_jax.training.train',
}

# Deprecated flat paths of version 0.1 -> their modules now (first one that has the name wins).
MOVED = {
    'ce_jax.ntk': ('ce_jax.theory.ntk',),
    'ce_jax.infinite': ('ce_jax.theory.infinite',),
    'ce_jax.variance': ('ce_jax.theory.variance', 'ce_jax.studies.convergence'),
    'ce_jax.alpha': ('ce_jax.theory.alpha',),
    'ce_jax.conditional': ('ce_jax.theory.conditional',),
    'ce_jax.blocks': ('ce_jax.design.blocks',),
    'ce_jax.accounting': ('ce_jax.design.accounting',),
    'ce_jax.solver': ('ce_jax.design.solver',),
    'ce_jax.member': ('ce_jax.design.member',),
    'ce_jax.presets': ('ce_jax.design.presets',),
    'ce_jax.train': ('ce_jax.training.train',),
    'ce_jax.input_pipeline': ('ce_jax.training.input_pipeline',),
    'ce_jax.checkpointing': ('ce_jax.training.checkpointing',),
    'ce_jax.ablation': ('ce_jax.studies.ablation',),
    'ce_jax.dynamics': ('ce_jax.studies.dynamics',),
    'ce_jax.plotting': ('ce_jax.studies.plotting',),
    'ce_jax.cli': ('ce_jax.tools.cli',),
    'ce_jax.guards': ('ce_jax.tools.guards',),
    'ce_jax.benchmarking': ('ce_jax.tools.benchmarking',),
    'ce_jax.onednn': ('ce_jax.models.native.onednn',),
}

__all__ = sorted(EXPORTS) + list(SUBPACKAGES) + ['__version__']


class _DeprecatedAlias(types.ModuleType):
  """An old flat module path: attribute reads go to the new module(s), with one warning."""

  def __init__(self, name: str, targets: tuple[str, ...]):
    super().__init__(name, f'Deprecated alias of {", ".join(targets)}.')
    self.__targets = targets
    self.__warned = False

  def __modules(self):
    if not self.__warned:
      self.__warned = True
      warnings.warn(f'{self.__name__} is deprecated: import {" / ".join(self.__targets)}',
                    DeprecationWarning, stacklevel=3)
    return [importlib.import_module(t) for t in self.__targets]

  def __getattr__(self, attr):
    if attr.startswith('__'):
      raise AttributeError(attr)
    for module in self.__modules():
      if hasattr(module, attr):
        return getattr(module, attr)
    raise AttributeError(f'module {self.__name__!r} (now {", ".join(self.__targets)}) has no '
                         f'attribute {attr!r}')

  def __dir__(self):
    return sorted({a for m in self.__modules() for a in dir(m)})


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds the deprecated flat paths in :data:`MOVED` (after every real module)."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname in MOVED:
      return importlib.util.spec_from_loader(fullname, self)
    return None

  def create_module(self, spec):
    return _DeprecatedAlias(spec.name, MOVED[spec.name])

  def exec_module(self, module):
    pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
  sys.meta_path.append(_MovedModules())


def __getattr__(name):
  if name in EXPORTS:
    return getattr(importlib.import_module(EXPORTS[name]), name)
  if name in SUBPACKAGES or f'{__name__}.{name}' in MOVED:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(SUBPACKAGES) + list(EXPORTS))
