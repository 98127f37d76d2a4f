"""Tools: plumbing shared by the binaries.

* :mod:`cli`            absl binaries: one-line usage errors, JSON/table output, progress.
* :mod:`guards`         workdir locks, config records, output-path and write checks.
* :mod:`benchmarking`   benchmark records: machine, versions, medians of interleaved rounds.
* :mod:`host_memory`    glibc malloc kept from returning XLA:CPU's per-step scratch to the kernel.
"""

from ce_jax import _lazy

MODULES = ('cli', 'guards', 'benchmarking', 'host_memory')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
