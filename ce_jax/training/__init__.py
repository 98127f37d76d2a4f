"""Training: the pmap trainer, its input pipelines and checkpoints.

* :mod:`train`            train_and_evaluate: pmap/jit training and evaluation from an ml_collections config.
* :mod:`input_pipeline`   tensorflow-datasets and offline digits pipelines, per-host sharding.
* :mod:`checkpointing`    orbax checkpoints: save, restore, resume.
"""

import importlib

MODULES = (
    'train', 'input_pipeline', 'checkpointing',
)

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(MODULES))
