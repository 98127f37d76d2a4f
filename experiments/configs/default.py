"""Default hyperparameters: the paper's CIFAR recipe with the ResNeXt-29 1x128d baseline.

This is the one place with a default for each key: the trainer (ce_jax.training.train) reads
every key directly and refuses, in one line naming it, a config that lacks one, so every other
config (and any config built in code) starts from ``get_config()`` here and overrides a few
keys. Any key can be overridden on the command line::

    python experiments/train.py --config=experiments/configs/default.py --workdir=runs/default \
        --config.num_epochs=1 --config.batch_size=64

Keys (see docs/TRAINING.md):
  dataset, data_dir, sharding ('global'|'split'), shuffle_buffer: the input pipeline.
  num_train_examples, num_test_examples: the split sizes when the dataset has no metadata
    (tests under tfds.testing.mock_data); None: read from the prepared dataset.
  model, model_kwargs: a name of ce_jax.models.registry and its hyperparameters (num_classes
    comes from the dataset). Dense models: n, depth (depth - 1 hidden layers of width n), m
    (ensemble members), flatten_inputs.
  search_json, search_design: take n and m from experiments/search.py's JSON ('primal'|'dual').
  optimizer ('sgd'|'adam'), learning_rate, momentum, nesterov, weight_decay, lr_decay_epochs,
    lr_decay_factor, warmup_epochs: the optimizer and its step schedule.
  batch_size (global), eval_batch_size, num_epochs, num_train_steps (-1: num_epochs).
  eval_every_epochs, log_every_steps, checkpoint_every_steps, keep_checkpoints,
    async_checkpointing, seed.
  overwrite: start afresh in a workdir that holds a run of another config (its checkpoints,
    metrics and summary are removed); without it such a rerun is refused.
  fail_on_no_progress, no_progress_window, chance_tolerance: a run whose train loss has not
    improved over the last no_progress_window of the steps, or ends within chance_tolerance
    (relative) of chance ln(num_classes) or above, warns; with fail_on_no_progress it fails
    (exit code 1).
  paper_params_m: the parameter count (millions) the paper reports for this row (from the
    config file's ROWS table, checked by tests/experiments/test_configs.py), None where it reports none.
"""

from __future__ import annotations

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = 'cifar10'
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.sharding = 'global'
  config.shuffle_buffer = 50_000
  config.num_train_examples = ml_collections.FieldReference(None, field_type=int)  # None: metadata
  config.num_test_examples = ml_collections.FieldReference(None, field_type=int)
  # Model.
  config.model = 'resnext29'
  config.model_kwargs = ml_collections.ConfigDict({'cardinality': 1, 'base_width': 128})
  config.n = ml_collections.FieldReference(None, field_type=int)
  config.m = ml_collections.FieldReference(None, field_type=int)
  config.depth = ml_collections.FieldReference(None, field_type=int)
  config.flatten_inputs = False
  config.search_json = ''
  config.search_design = 'primal'
  # Optimization (CIFAR, ResNeXt recipe).
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.lr_decay_epochs = (150, 225)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0
  config.batch_size = 128
  config.eval_batch_size = 128
  config.num_epochs = 300
  config.num_train_steps = -1
  # Bookkeeping.
  config.eval_every_epochs = 1
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.async_checkpointing = True  # orbax writes in a background thread
  config.seed = 0
  # Guards (docs/RELIABILITY.md).
  config.overwrite = False
  config.fail_on_no_progress = False
  config.no_progress_window = 0.2
  config.chance_tolerance = 0.02
  config.paper_params_m = ml_collections.FieldReference(None, field_type=float)
  return config
