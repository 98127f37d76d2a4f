"""Training: the pmap trainer, its input pipelines and checkpoints.

* :mod:`train`            train_and_evaluate: pmap/jit training and evaluation from an
                          ml_collections config.
* :mod:`input_pipeline`   tensorflow-datasets and offline digits pipelines, per-host sharding.
* :mod:`checkpointing`    orbax checkpoints: save, restore, resume.
"""

from ce_jax import _lazy

MODULES = ('train', 'input_pipeline', 'checkpointing')
__all__ = list(MODULES)
__getattr__, __dir__ = _lazy.submodules(__name__, MODULES)
