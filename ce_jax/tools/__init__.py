"""Tools: plumbing shared by the binaries.

* :mod:`cli`            absl binaries: one-line usage errors, JSON/table output, progress.
* :mod:`guards`         workdir locks, config records, output-path and write checks.
* :mod:`benchmarking`   benchmark records: machine, versions, medians of interleaved rounds.
"""

import importlib

MODULES = (
    'cli', 'guards', 'benchmarking',
)

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(MODULES))
