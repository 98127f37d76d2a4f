"""Training and evaluation loop (flax ``examples/imagenet`` style), pmapped over local devices.

    from ce_jax.training import train
    from experiments.configs import digits
    summary = train.train_and_evaluate(digits.get_config(), workdir='/tmp/run')

* The config is an ``ml_collections.ConfigDict`` built from ``experiments/configs/default.py``'s
  ``get_config()``, the one place with a default for each key the trainer reads
  (:data:`CONFIG_KEYS`); the trainer reads every key directly, and a config without one of them
  is refused in one line naming it (:func:`require_keys`, called by :func:`validate_config`).
* ``train_step`` / ``eval_step`` are pure and run under ``jax.pmap(axis_name='batch')``;
  gradients, BatchNorm statistics and metrics are averaged with ``lax.pmean``.
* Optimizers: SGD with momentum and (coupled, PyTorch-style) weight decay on every parameter,
  with the paper's step schedules (lr times ``lr_decay_factor`` at each of ``lr_decay_epochs``);
  Adam for dense ensembles (the paper's Fig. 4 setup). Loss: softmax cross-entropy.
* Metrics: train loss and top-1/top-5 error every ``log_every_steps`` (with steps/s and ETA),
  test loss and top-1/top-5 error every ``eval_every_epochs`` epochs and at the end, to
  ``<workdir>/metrics.jsonl`` and TensorBoard event files in ``<workdir>``.
* Checkpoints: orbax, every ``checkpoint_every_steps`` and at the end, the newest
  ``keep_checkpoints`` kept, in ``<workdir>/checkpoints``. A rerun with the same workdir resumes
  from the newest readable checkpoint, data position included (the input order is a function
  of seed and step, see :mod:`ce_jax.training.input_pipeline`), so an interrupted run ends with the
  same parameters as an uninterrupted one.
* A non-finite train loss (or parameters) stops the run with :class:`TrainingDivergedError`;
  no checkpoint is written after the last finite one.
* One run per workdir: ``<workdir>/.lock`` (PID, host) is held while the run lives; a second run
  refuses in one line (:class:`ce_jax.tools.guards.WorkdirLockedError`, a ``ValueError``), a lock
  left by a process that is gone is taken over with a warning.
* The config is recorded in ``<workdir>/config.json``; a rerun whose config differs in a key
  that changes results (anything but bookkeeping such as ``log_every_steps``, see
  :data:`ce_jax.tools.guards.NEUTRAL_KEYS`) refuses in one line listing the keys, unless
  ``config.overwrite`` is true (the run's outputs are removed and it starts afresh). A longer
  ``num_epochs``/``num_train_steps`` extends the run; a length below the newest checkpoint is
  refused. A checkpoint of another model shape is refused too (one line).
* A full disk or another write error (checkpoint, metrics, summary) raises
  :class:`ce_jax.tools.guards.DiskFullError` / :class:`ce_jax.tools.guards.WriteFailedError`, one line
  naming the path; earlier checkpoints stay intact.
* Progress: at the end, a training loss that has not improved over the last
  ``no_progress_window`` of the steps or that sits at (or above) chance, ``ln(num_classes)``
  within ``chance_tolerance``, logs a warning and sets ``summary['no_progress']``; with
  ``fail_on_no_progress`` it raises :class:`ce_jax.tools.guards.NoProgressError` (after writing the
  summary).
* At the end ``<workdir>/summary.json``: ``config``, ``params``, ``steps``,
  ``final_train_loss``, ``test_error_top1``, ``test_error_top5``, ``params_l2`` (L2 norm of
  all parameters), ``wall_s`` (this invocation), plus ``epochs``, ``test_loss``,
  ``final_train_error_top1``, ``resumed_from_step``, ``devices``, ``processes``, ``model``,
  ``no_progress`` (None, or why the run did not learn).

``train_and_evaluate`` may be called several times in one process (several seeds, several
models): pass ``model=`` to train a module built elsewhere.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import math
import os
import time
from typing import Any, Callable

from absl import logging
from flax import jax_utils
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from ce_jax import _validate
from ce_jax.tools import cli
from ce_jax.tools import guards
from ce_jax.training import input_pipeline

__all__ = ['TrainState', 'TrainingDivergedError', 'train_and_evaluate', 'create_model',
           'validate_config', 'create_learning_rate_fn', 'create_optimizer', 'train_step',
           'eval_step', 'initialize_distributed', 'params_l2', 'require_keys', 'CONFIG_KEYS']

DENSE_MODELS = ('dense', 'dense_ensemble')


def _quiet_orbax() -> None:
  """Drops orbax's per-save INFO chatter from the absl log (warnings still show), and its
  background-thread tracebacks for a full disk (the trainer reports those in one line)."""
  import logging as py_logging

  class _Filter(py_logging.Filter):
    def filter(self, record):
      if '/orbax/' not in record.pathname:
        return True
      if record.levelno < py_logging.WARNING:
        return False
      exc = record.exc_info[1] if record.exc_info else None
      return not (exc is not None and guards.is_disk_full(exc))

  absl_logger = logging.get_absl_logger()
  if not any(type(f).__name__ == '_Filter' for f in absl_logger.filters):
    absl_logger.addFilter(_Filter())


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics (an empty dict for models without BN)."""
  batch_stats: Any = None


class TrainingDivergedError(FloatingPointError):
  """The train loss or the parameters became NaN/Inf."""


# ---------------------------------------------------------------------------------------------
# Config, model, optimizer


# The keys each part of the trainer reads; ``experiments/configs/default.py`` sets every one
# (its value there is the default; other configs start from it).
MODEL_KEYS = ('model', 'model_kwargs', 'n', 'm', 'depth', 'search_json', 'search_design')
SCHEDULE_KEYS = ('learning_rate', 'lr_decay_epochs', 'lr_decay_factor', 'warmup_epochs')
OPTIMIZER_KEYS = ('optimizer', 'momentum', 'nesterov', 'weight_decay')
CONFIG_KEYS = (
    ('dataset', 'data_dir', 'sharding', 'shuffle_buffer', 'num_train_examples',
     'num_test_examples', 'flatten_inputs') + MODEL_KEYS + SCHEDULE_KEYS + OPTIMIZER_KEYS +
    ('batch_size', 'eval_batch_size', 'num_epochs', 'num_train_steps', 'eval_every_epochs',
     'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'async_checkpointing',
     'seed', 'overwrite', 'fail_on_no_progress', 'no_progress_window', 'chance_tolerance'))


def require_keys(config, keys: tuple[str, ...] = CONFIG_KEYS) -> None:
  """One-line ``ValueError`` naming the ``keys`` that ``config`` lacks (a config built by hand
  instead of from ``experiments/configs/default.py``'s ``get_config()``)."""
  missing = [k for k in keys if not hasattr(config, k)]
  if not missing:
    return
  names = ', '.join(map(repr, missing[:6])) + (f' and {len(missing) - 6} more'
                                               if len(missing) > 6 else '')
  raise ValueError(f'config ({type(config).__name__}) has no key{"s" if len(missing) > 1 else ""} '
                   f'{names}: start from experiments/configs/default.py\'s get_config(), which '
                   f'sets every key the trainer reads')


def _number(name: str, value: Any) -> float:
  """``value`` as a float, or a one-line ``ValueError`` naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f'{name} must be a number, got {value!r}')
  return float(value)


def validate_config(config, device_count: int | None = None, check_model: bool = True) -> None:
  """Checks config values before any work; raises a one-line ``ValueError``.

  ``device_count`` defaults to ``jax.device_count()`` (which starts the backend: pass 1 to skip
  the divisibility check before ``jax.distributed.initialize``); ``check_model=False`` skips
  the model name (a module is passed to :func:`train_and_evaluate` directly).
  """
  from ce_jax.models import registry
  require_keys(config)
  _validate.choice('dataset', config.dataset, input_pipeline.DATASETS)
  if not check_model:
    pass
  elif not config.search_json:
    _validate.choice('model', config.model, registry.names())
  else:
    _validate.choice('search_design', config.search_design, ('primal', 'dual'))
  _validate.choice('optimizer', config.optimizer, ('sgd', 'adam'))
  _validate.finite_positive('learning_rate', config.learning_rate)
  wd = _number('weight_decay', config.weight_decay)
  if not math.isfinite(wd) or wd < 0:
    raise ValueError(f'weight_decay must be a finite number >= 0, got {wd!r}')
  mom = _number('momentum', config.momentum)
  if not 0 <= mom < 1:
    raise ValueError(f'momentum must be in [0, 1), got {mom!r}')
  factor = _number('lr_decay_factor', config.lr_decay_factor)
  if not 0 < factor <= 1:
    raise ValueError(f'lr_decay_factor must be in (0, 1], got {factor!r}')
  if not isinstance(config.lr_decay_epochs, (list, tuple)):
    raise ValueError(f'lr_decay_epochs must be a list of epochs (() for none), got '
                     f'{config.lr_decay_epochs!r}')
  for e in config.lr_decay_epochs:
    _validate.finite_positive('lr_decay_epochs[]', e)
  warmup = _number('warmup_epochs', config.warmup_epochs)
  if not math.isfinite(warmup) or warmup < 0:
    raise ValueError(f'warmup_epochs must be a finite number >= 0, got {warmup!r}')
  batch = _validate.positive_int('batch_size', config.batch_size)
  eval_batch = _validate.positive_int('eval_batch_size', config.eval_batch_size)
  _validate.positive_int('num_epochs', config.num_epochs)
  if config.num_train_steps != -1:
    _validate.positive_int('num_train_steps (or -1)', config.num_train_steps)
  for key in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
              'eval_every_epochs', 'shuffle_buffer'):
    _validate.positive_int(key, config[key])
  window = _number('no_progress_window', config.no_progress_window)
  if not 0 < window <= 1:
    raise ValueError(f'no_progress_window must be in (0, 1], got {window!r}')
  tol = _number('chance_tolerance', config.chance_tolerance)
  if not 0 <= tol < 1:
    raise ValueError(f'chance_tolerance must be in [0, 1), got {tol!r}')
  _validate.positive_int('seed', config.seed, minimum=0)
  _validate.choice('sharding', config.sharding, ('global', 'split'))
  n_dev = jax.device_count() if device_count is None else device_count
  for name, b in (('batch_size', batch), ('eval_batch_size', eval_batch)):
    if b % n_dev:
      raise ValueError(f'{name} must be divisible by the number of devices ({n_dev}), got {b}')


def _search_design(config) -> dict:
  path = config.search_json
  if not os.path.exists(path):
    raise ValueError(f'search_json {path!r} does not exist (write it with experiments/search.py)')
  with open(path) as f:
    payload = json.load(f)
  design = config.search_design
  if design not in payload:
    raise ValueError(f'search_json {path!r} has no {design!r} design (keys: '
                     f'{", ".join(sorted(payload))})')
  return payload[design]


def _design_n_m(design: dict) -> tuple[Any, int]:
  for key in ('n', 'm_int'):
    if key not in design:
      raise ValueError(f'search design lacks key {key!r} (has {", ".join(sorted(design))})')
  return design['n'], int(design['m_int'])


def model_hyperparameters(config, num_classes: int) -> tuple[str, dict]:
  """``(registry name, hyperparameters)`` of the config's model.

  Dense models take ``widths`` from ``model_kwargs`` or build them from ``n`` and ``depth``
  (``depth - 1`` hidden layers of width ``n``); ensembles take ``m``. Conv models take
  ``model_kwargs`` and ``num_classes`` from the dataset. With ``search_json`` the design's
  ``n`` and integer ``m`` replace ``n``/``m`` (dense) or ``base_width``/``cardinality`` (ResNeXt).
  """
  require_keys(config, MODEL_KEYS)
  name = config.model
  kw = dict(config.model_kwargs or {})
  n, m = config.n, config.m
  if config.search_json:
    n, m = _design_n_m(_search_design(config))
    if name.startswith('resnext'):
      kw['base_width'], kw['cardinality'] = int(np.ravel(n)[0]), m
  if name in DENSE_MODELS:
    if 'widths' not in kw or config.search_json:
      depth = _validate.positive_int('depth', config.depth, minimum=2)
      if isinstance(n, (list, tuple)):
        kw['widths'] = tuple(int(v) for v in n)
      else:
        kw['widths'] = (_validate.positive_int('n', n),) * (depth - 1)
    else:
      kw['widths'] = tuple(kw['widths'])
    if name == 'dense_ensemble':
      kw['m'] = _validate.positive_int('m', kw.get('m', m))
    kw['num_outputs'] = num_classes
  else:
    kw['num_classes'] = num_classes
  return name, kw


def create_model(config, num_classes: int):
  """Builds the config's flax module with :func:`ce_jax.models.registry.get`."""
  from ce_jax.models import registry
  name, kw = model_hyperparameters(config, num_classes)
  return registry.get(name, **kw)


def create_learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  """Piecewise-constant schedule: ``learning_rate * lr_decay_factor**k`` after the k-th boundary.

  Optional linear warmup over ``warmup_epochs``.
  """
  require_keys(config, SCHEDULE_KEYS)
  factor = float(config.lr_decay_factor)
  boundaries = {int(round(e * steps_per_epoch)): factor for e in config.lr_decay_epochs}
  schedule = optax.piecewise_constant_schedule(float(config.learning_rate), boundaries)
  warmup = int(round(float(config.warmup_epochs) * steps_per_epoch))
  if warmup > 0:
    ramp = optax.linear_schedule(0.0, float(config.learning_rate), warmup)
    return optax.join_schedules([ramp, lambda s: schedule(s + warmup)], [warmup])
  return schedule


def create_optimizer(config, learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, nesterov) or Adam, with coupled L2 weight decay on all parameters."""
  require_keys(config, OPTIMIZER_KEYS)
  wd = float(config.weight_decay)
  if config.optimizer == 'sgd':
    opt = optax.sgd(learning_rate_fn, momentum=float(config.momentum) or None,
                    nesterov=bool(config.nesterov))
  else:
    opt = optax.adam(learning_rate_fn)
  return optax.chain(optax.add_decayed_weights(wd), opt) if wd > 0 else opt


def _takes_train(model) -> bool:
  return 'train' in inspect.signature(type(model).__call__).parameters


def create_train_state(rng, model, image_shape, tx, flatten: bool) -> TrainState:
  """Initializes parameters (and BatchNorm statistics) on the host's default device."""
  shape = (1, int(np.prod(image_shape))) if flatten else (1,) + tuple(image_shape)
  x = jnp.zeros(shape, jnp.float32)
  kwargs = {'train': False} if _takes_train(model) else {}
  variables = jax.jit(functools.partial(model.init, **kwargs))(rng, x)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats', {}))


def params_l2(params) -> float:
  """L2 norm of all parameters (float64 on the host)."""
  leaves = jax.tree_util.tree_leaves(jax.device_get(params))
  return float(math.sqrt(sum(float(np.sum(np.asarray(p, np.float64) ** 2)) for p in leaves)))


def num_params(params) -> int:
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


# ---------------------------------------------------------------------------------------------
# Steps


def _errors(logits, labels):
  """Per-example top-1 and top-5 errors (0/1)."""
  k = min(5, logits.shape[-1])
  top1 = (jnp.argmax(logits, -1) != labels).astype(jnp.float32)
  topk = jax.lax.top_k(logits, k)[1]
  top5 = 1.0 - jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)
  return top1, top5


def _inputs(batch, flatten: bool):
  x = batch['image']
  return x.reshape(x.shape[0], -1) if flatten else x


def train_step(state: TrainState, batch, *, flatten: bool, takes_train: bool):
  """One SGD/Adam step on one device's batch; collectives over ``axis_name='batch'``.

  Returns ``(new_state, metrics)`` with metrics ``loss``, ``error_top1``, ``error_top5``
  averaged over all devices.
  """
  x, labels = _inputs(batch, flatten), batch['label']
  has_bn = bool(state.batch_stats)

  def loss_fn(params):
    variables = {'params': params}
    kwargs = {'train': True} if takes_train else {}
    if has_bn:
      variables['batch_stats'] = state.batch_stats
      logits, new_vars = state.apply_fn(variables, x, mutable=['batch_stats'], **kwargs)
    else:
      logits, new_vars = state.apply_fn(variables, x, **kwargs), {}
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = lax.pmean(grads, 'batch')
  batch_stats = lax.pmean(new_vars['batch_stats'], 'batch') if has_bn else state.batch_stats
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  top1, top5 = _errors(logits, labels)
  metrics = lax.pmean({'loss': loss, 'error_top1': top1.mean(), 'error_top5': top5.mean()},
                      'batch')
  return new_state, metrics


def eval_step(state: TrainState, batch, *, flatten: bool, takes_train: bool):
  """Masked sums over all devices: ``loss``, ``error_top1``, ``error_top5``, ``count``."""
  x, labels, mask = _inputs(batch, flatten), batch['label'], batch['mask']
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  kwargs = {'train': False} if takes_train else {}
  logits = state.apply_fn(variables, x, **kwargs)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  top1, top5 = _errors(logits, labels)
  sums = {'loss': jnp.sum(loss * mask), 'error_top1': jnp.sum(top1 * mask),
          'error_top5': jnp.sum(top5 * mask), 'count': jnp.sum(mask)}
  return lax.psum(sums, 'batch')


@functools.lru_cache(maxsize=None)
def _pmapped(flatten: bool, takes_train: bool):
  p_train = jax.pmap(functools.partial(train_step, flatten=flatten, takes_train=takes_train),
                     axis_name='batch', donate_argnums=(0,))
  p_eval = jax.pmap(functools.partial(eval_step, flatten=flatten, takes_train=takes_train),
                    axis_name='batch')
  return p_train, p_eval


@functools.lru_cache(maxsize=None)
def _p_all_finite():
  return jax.pmap(lambda t: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                               for x in jax.tree_util.tree_leaves(t)])))


# ---------------------------------------------------------------------------------------------
# Metrics


class _Writer:
  """metrics.jsonl plus TensorBoard events (clu when importable, else tf.summary)."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.events = os.path.join(workdir, 'events.out.tfevents.*')
    self._clu = self._tf = None
    if not enabled:
      return
    with guards.writing(self.events, 'TensorBoard events'):
      try:
        from clu import metric_writers
        self._clu = metric_writers.create_default_writer(workdir, asynchronous=False)
      except ImportError:  # clu's TensorBoard writer needs the `tensorboard` package
        try:
          tf = input_pipeline._tf()  # pylint: disable=protected-access
          self._tf = tf.summary.create_file_writer(workdir)
        except ImportError:
          self._tf = None

  def truncate_after(self, step: int) -> None:
    """Drops rows written after ``step`` (they are replayed on resume), and a last row cut
    short by a crash or a full disk."""
    if not self.enabled or not os.path.exists(self.path):
      return
    rows = []
    with open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line) if line.strip() else None
        except ValueError:
          logging.warning('dropping an unreadable row of %s: %r', self.path, line[:80])
          continue
        if isinstance(row, dict) and row.get('step', 0) <= step:
          rows.append(json.dumps(row) + '\n')
    with guards.writing(self.path, 'metrics'):
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(rows)
      os.replace(tmp, self.path)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    with guards.writing(self.path, 'metrics'):
      with open(self.path, 'a') as f:
        f.write(json.dumps({'step': int(step), **scalars}) + '\n')
    with guards.writing(self.events, 'TensorBoard events'):
      if self._clu is not None:
        self._clu.write_scalars(int(step), scalars)
      elif self._tf is not None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2
        meta = summary_pb2.SummaryMetadata()
        meta.plugin_data.plugin_name = 'scalars'
        with self._tf.as_default():
          for k, v in scalars.items():
            tf.summary.write(k, tf.constant(v, tf.float32), step=int(step), metadata=meta)

  def close(self, raise_errors: bool = True) -> None:
    try:
      with guards.writing(self.events, 'TensorBoard events'):
        if self._clu is not None:
          self._clu.flush()
          self._clu.close()
        if self._tf is not None:
          self._tf.flush()
          self._tf.close()
    except Exception:  # pylint: disable=broad-except
      if raise_errors:
        raise
    finally:
      self._clu = self._tf = None


def _eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(max(0, seconds))))


# ---------------------------------------------------------------------------------------------
# Multi-host


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """``jax.distributed.initialize`` when a coordinator is given (no-op otherwise).

  On CPU the gloo collectives are selected so that pmap works across processes.
  """
  if not coordinator_address:
    return
  num_processes = _validate.positive_int('num_processes', num_processes)
  process_id = _validate.positive_int('process_id', process_id, minimum=0)
  if process_id >= num_processes:
    raise ValueError(f'process_id must be < num_processes ({num_processes}), got {process_id}')
  if os.environ.get('JAX_PLATFORMS', '').startswith('cpu') or not _has_accelerator_env():
    try:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    except Exception:  # pylint: disable=broad-except
      pass
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _has_accelerator_env() -> bool:
  return bool(os.environ.get('CUDA_VISIBLE_DEVICES') or os.environ.get('TPU_NAME'))


# ---------------------------------------------------------------------------------------------
# The loop


def _config_dict(config) -> dict:
  if hasattr(config, 'to_dict'):
    return config.to_dict()
  return dict(config)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _prepare_workdir(config, workdir: str, is_main: bool) -> None:
  """Checks ``config`` against the workdir's record (one-line ``ValueError``) and removes the
  old outputs for ``overwrite``."""
  current = guards.normalize_config(_config_dict(config))
  overwrite = bool(config.overwrite)
  guards.check_config_record(workdir, current, overwrite=overwrite)
  if overwrite and is_main:
    removed = guards.remove_run_outputs(workdir)
    if removed:
      logging.warning('overwrite: removed %s from %s; starting afresh', ', '.join(removed),
                      workdir)
  _barrier('ce_jax_overwrite')
  if (is_main and guards.read_config_record(workdir) is None
      and os.path.isdir(os.path.join(workdir, 'checkpoints'))):
    logging.warning('%s has checkpoints but no config record: the config can not be checked '
                    'against them (only the model shapes are)', workdir)


def _record_config(config, workdir: str) -> None:
  """Writes ``<workdir>/config.json`` (once the checkpoints are known to fit ``config``)."""
  path = os.path.join(workdir, guards.RECORD_NAME)
  with guards.writing(path, 'the config record'):
    cli.write_json(path, guards.normalize_config(_config_dict(config)))


def train_and_evaluate(config, workdir: str, *, model=None,
                       on_checkpoint: Callable[[int], None] | None = None) -> dict:
  """Trains ``config``'s model on its dataset, evaluates every epoch; returns the summary.

  Args:
    config: an ``ml_collections.ConfigDict`` from ``experiments/configs/default.py``'s
      ``get_config()`` (every key of :data:`CONFIG_KEYS`), with any overrides.
    workdir: checkpoints, ``metrics.jsonl``, TensorBoard events and ``summary.json`` go here;
      an existing workdir with checkpoints of the same config is resumed.
    model: a flax module to train instead of ``config.model`` (for in-process studies).
    on_checkpoint: called with the step after each checkpoint is handed to orbax (tests).

  Returns:
    The ``summary.json`` payload (a dict).

  Raises:
    ValueError: invalid config values, a missing config key, unknown dataset/model, dataset
      not prepared, a workdir that is a file or under one, a workdir in use by another run
      (:class:`ce_jax.tools.guards.WorkdirLockedError`), a workdir holding a run of another config
      (before any training work).
    TrainingDivergedError: the loss or the parameters became NaN/Inf.
    ce_jax.tools.guards.DiskFullError, ce_jax.tools.guards.WriteFailedError: an output could not be
      written (one line naming the path).
    ce_jax.tools.guards.NoProgressError: the run did not learn and ``config.fail_on_no_progress``.
  """
  t_start = time.time()
  _quiet_orbax()
  validate_config(config, check_model=model is None)
  guards.check_output_dir(workdir, '--workdir', required=True)
  info = input_pipeline.get_info(config.dataset, config.data_dir,
                                 num_train=config.num_train_examples,
                                 num_test=config.num_test_examples)
  if model is None:
    model = create_model(config, info.num_classes)
  is_main = jax.process_index() == 0
  with guards.maybe_lock(workdir, enabled=is_main):
    _prepare_workdir(config, workdir, is_main)
    return _train(config, workdir, model, info, on_checkpoint, t_start, is_main)


def _train(config, workdir, model, info, on_checkpoint, t_start, is_main) -> dict:
  """The loop of :func:`train_and_evaluate` (the workdir is locked and checked)."""
  flatten = bool(config.flatten_inputs)
  takes_train = _takes_train(model)
  batch_size = int(config.batch_size)
  eval_batch_size = int(config.eval_batch_size)
  spe = input_pipeline.steps_per_epoch(info, batch_size)
  total_steps = int(config.num_train_steps)
  if total_steps <= 0:
    total_steps = int(config.num_epochs) * spe
  seed = int(config.seed)
  log_every = int(config.log_every_steps)
  ckpt_every = int(config.checkpoint_every_steps)
  eval_every = int(config.eval_every_epochs)

  lr_fn = create_learning_rate_fn(config, spe)
  tx = create_optimizer(config, lr_fn)
  state = create_train_state(jax.random.PRNGKey(seed), model, info.image_shape, tx, flatten)
  n_params = num_params(state.params)

  from ce_jax.training import checkpointing
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    keep=int(config.keep_checkpoints),
                                    asynchronous=bool(config.async_checkpointing))
  writer = None
  try:
    start_step = 0
    last_train = {'loss': float('nan'), 'error_top1': float('nan'), 'error_top5': float('nan')}
    loss_history: list[list[float]] = []  # [step, logged train loss], for the progress check
    restored = ckpt.restore_latest(jax.device_get(state))
    if restored is not None:
      state, meta = restored
      if int(meta.get('batch_size', batch_size)) != batch_size:
        raise ValueError(f'the checkpoints in {workdir} were written with batch_size '
                         f'{meta["batch_size"]}, got {batch_size}; use a fresh --workdir')
      start_step = int(meta['step'])
      if start_step > total_steps:
        raise ValueError(
            f'{workdir} holds a checkpoint at step {start_step}, beyond this config\'s '
            f'{total_steps} steps (num_epochs/num_train_steps); rerun with '
            f'--config.overwrite=True to start afresh, or use another --workdir')
      last_train.update(meta.get('train_metrics', {}))
      loss_history = [list(p) for p in meta.get('loss_history', [])]
      logging.info('resumed from step %d (epoch %d) in %s', start_step, start_step // spe,
                   workdir)

    if is_main:
      _record_config(config, workdir)
    writer = _Writer(workdir, is_main)
    writer.truncate_after(start_step)
    logging.info('%s on %s: %d params, %d steps (%d/epoch), batch %d on %d devices x %d '
                 'processes', type(model).__name__, info.name, n_params, total_steps, spe,
                 batch_size, jax.local_device_count(), jax.process_count())

    p_train, p_eval = _pmapped(flatten, takes_train)
    state = jax_utils.replicate(state)
    n_eval = input_pipeline.eval_steps(info, eval_batch_size, jax.process_count())

    def evaluate(step):
      sums = None
      for batch in input_pipeline.eval_iterator(
          info.name, global_batch_size=eval_batch_size, data_dir=config.data_dir,
          num_steps=n_eval):
        out = p_eval(state, batch)
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
      sums = jax.device_get(jax_utils.unreplicate(sums))
      count = max(float(sums['count']), 1.0)
      result = {'test_loss': sums['loss'] / count, 'test_error_top1': sums['error_top1'] / count,
                'test_error_top5': sums['error_top5'] / count, 'test_count': sums['count']}
      writer.write(step, {**result, 'epoch': step / spe})
      logging.info('eval at step %d (epoch %.2f): loss %.4f, top-1 error %.4f, top-5 error %.4f '
                   '(%d examples)', step, step / spe, result['test_loss'],
                   result['test_error_top1'], result['test_error_top5'], count)
      return result

    def check_finite(step, what, value=None):
      ok = (value is None or math.isfinite(value)) and bool(
          jax.device_get(_p_all_finite()(state.params))[0])
      if not ok:
        ckpt.wait()
        kept = ckpt.steps()
        raise TrainingDivergedError(
            f'training diverged at step {step} (epoch {step // spe}): {what} is not finite; '
            f'the last good checkpoint is '
            f'{f"step {kept[-1]} in {ckpt.directory}" if kept else "none (no checkpoint yet)"}; '
            f'lower learning_rate (now {config.learning_rate}) or check the inputs')

    def save(step):
      check_finite(step, 'the parameters')
      meta = {'step': step, 'epoch': step // spe, 'position_in_epoch': step % spe,
              'steps_per_epoch': spe, 'batch_size': batch_size, 'seed': seed,
              'train_metrics': last_train, 'loss_history': loss_history}
      ckpt.save(step, jax.device_get(jax_utils.unreplicate(state)), meta)
      if on_checkpoint is not None:
        on_checkpoint(step)

    step = start_step
    window, window_start, t_window = [], step, time.time()
    last_eval = None
    t_loop = time.time()
    while step < total_steps:
      epoch, position = divmod(step, spe)
      batches = input_pipeline.train_iterator(
          info.name, global_batch_size=batch_size, seed=seed, epoch=epoch, start_step=position,
          num_steps=spe, data_dir=config.data_dir, sharding=config.sharding,
          shuffle_buffer=int(config.shuffle_buffer))
      seen = 0
      for batch in jax_utils.prefetch_to_device(batches, 2):
        state, metrics = p_train(state, batch)
        step += 1
        seen += 1
        window.append(metrics)
        if step % log_every == 0 or step == total_steps:
          window = jax.device_get(window)  # metrics are pmean'ed: replica 0 holds them
          last_train = {k: float(np.mean([w[k][0] for w in window])) for k in window[0]}
          if not math.isfinite(last_train['loss']):
            check_finite(step, f'the train loss ({last_train["loss"]})', last_train['loss'])
          loss_history.append([step, last_train['loss']])
          now = time.time()
          sps = (step - window_start) / max(now - t_window, 1e-9)
          writer.write(step, {'train_' + k: v for k, v in last_train.items()} | {
              'learning_rate': float(lr_fn(step - 1)), 'steps_per_sec': sps, 'epoch': step / spe})
          logging.info('step %d/%d (%.1f%%, epoch %d): train loss %.4f, top-1 error %.4f | '
                       '%.1f steps/s, ETA %s', step, total_steps, 100.0 * step / total_steps,
                       (step - 1) // spe, last_train['loss'], last_train['error_top1'], sps,
                       _eta((total_steps - step) / max(sps, 1e-9)))
          window, window_start, t_window = [], step, now
        if step % ckpt_every == 0 or step == total_steps:
          save(step)
        if step >= total_steps:
          break
      if seen == 0:
        raise ValueError(f'dataset {info.name} yielded no training batch at epoch {epoch}')
      epoch_done = step % spe == 0 or step == total_steps
      if epoch_done and (((step - 1) // spe + 1) % eval_every == 0 or step == total_steps):
        last_eval = evaluate(step)
    if last_eval is None:
      last_eval = evaluate(step)
    ckpt.close()

    no_progress = guards.progress_problem(
        loss_history, total_steps, info.num_classes,
        window=float(config.no_progress_window),
        chance_tolerance=float(config.chance_tolerance))
    if no_progress:
      no_progress += f' (learning_rate {config.learning_rate}, {workdir})'
      logging.warning('%s', no_progress)

    final = jax.device_get(jax_utils.unreplicate(state))
    summary = {
        'config': _config_dict(config),
        'params': n_params,
        'steps': int(step),
        'epochs': step / spe,
        'final_train_loss': last_train['loss'],
        'final_train_error_top1': last_train['error_top1'],
        'test_loss': float(last_eval['test_loss']),
        'test_error_top1': float(last_eval['test_error_top1']),
        'test_error_top5': float(last_eval['test_error_top5']),
        'params_l2': params_l2(final.params),
        'wall_s': time.time() - t_start,
        'train_wall_s': time.time() - t_loop,
        'resumed_from_step': start_step,
        'devices': jax.device_count(),
        'processes': jax.process_count(),
        'model': type(model).__name__,
        'no_progress': no_progress,
    }
    if is_main:
      path = os.path.join(workdir, 'summary.json')
      with guards.writing(path, 'the summary'):
        cli.write_json(path, summary)
    writer.close()
  except BaseException:
    ckpt.close(raise_errors=False)
    if writer is not None:
      writer.close(raise_errors=False)
    raise
  logging.info('done: %d steps, test top-1 error %.4f, params_l2 %.6g, %.1fs', step,
               summary['test_error_top1'], summary['params_l2'], summary['wall_s'])
  if no_progress and bool(config.fail_on_no_progress):
    raise guards.NoProgressError(no_progress)
  return summary
