"""Tools: plumbing shared by the binaries.

* :mod:`cli`            absl binaries: one-line usage errors, JSON/table output, progress.
* :mod:`guards`         workdir locks, config records, output-path and write checks.
* :mod:`benchmarking`   benchmark records: machine, versions, medians of interleaved rounds.
"""

from ce_jax import _lazy

MODULES = ('cli', 'guards', 'benchmarking')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
