"""The trainer on real data (digits): summary and metrics files, resume, corrupted checkpoints,
the NaN guard, BatchNorm models, optimizers, schedules, config validation, search designs."""

import glob
import json
import math
import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO

if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ce_jax.training import train  # noqa: E402
from experiments.configs import default  # noqa: E402
from experiments.configs import digits  # noqa: E402

SUMMARY_KEYS = {'config', 'params', 'steps', 'final_train_loss', 'test_error_top1',
                'test_error_top5', 'params_l2', 'wall_s'}


def tiny_digits(**overrides):
  config = digits.get_config()
  config.m, config.n, config.depth = 2, 16, 3
  config.batch_size = config.eval_batch_size = 64
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  config.keep_checkpoints = 2
  config.num_train_steps = 30
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


# ------------------------------------------------------------------ fast: config and optimizer


@pytest.mark.parametrize('key,value,match', [
    ('learning_rate', -0.1, 'learning_rate must be a finite number > 0'),
    ('dataset', 'svhn', 'dataset must be one of'),
    ('model', 'resnet7', 'model must be one of'),
    ('batch_size', 0, 'batch_size must be an integer >= 1'),
    ('optimizer', 'rmsprop', 'optimizer must be one of'),
    ('weight_decay', -1.0, 'weight_decay must be'),
])
def test_invalid_config_values_are_one_line(key, value, match):
  config = tiny_digits(**{key: value})
  with pytest.raises(ValueError, match=match) as e:
    train.validate_config(config, device_count=1)
  assert '\n' not in str(e.value)


def test_default_sets_every_key_the_trainer_reads():
  keys = set(default.get_config().keys())
  assert set(train.CONFIG_KEYS) <= keys
  source = open(train.__file__).read()
  read = set(re.findall(r'(?<![\w.])config\.([a-z_][a-z0-9_]*)', source)) - {'to_dict', 'json'}
  assert read and read <= set(train.CONFIG_KEYS), sorted(read - set(train.CONFIG_KEYS))
  assert not re.search(r'config\.get\(|getattr\(config', source)  # no second default


@pytest.mark.parametrize('key', ['momentum', 'seed', 'eval_batch_size', 'shuffle_buffer'])
def test_a_missing_key_is_one_line_naming_it(key):
  config = tiny_digits()
  del config[key]
  with pytest.raises(ValueError, match=rf"^config \(ConfigDict\) has no key '{key}': start "
                                       r"from experiments/configs/default.py's get_config\(\)"):
    train.validate_config(config, device_count=1)


def test_helpers_name_the_keys_a_hand_built_config_lacks():
  import ml_collections
  bare = ml_collections.ConfigDict({'optimizer': 'sgd', 'learning_rate': 0.1})
  with pytest.raises(ValueError, match="no keys 'momentum', 'nesterov', 'weight_decay'") as e:
    train.create_optimizer(bare, optax.constant_schedule(0.1))
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match="no keys 'lr_decay_epochs', 'lr_decay_factor'"):
    train.create_learning_rate_fn(bare, 10)
  with pytest.raises(ValueError, match=r"no keys 'dataset', 'data_dir', .* and \d+ more"):
    train.validate_config(bare, device_count=1)
  with pytest.raises(ValueError, match=r"config \(dict\) has no keys 'dataset'"):
    train.validate_config({'dataset': 'digits'}, device_count=1)


def test_batch_must_divide_over_devices():
  with pytest.raises(ValueError, match=r'divisible by the number of devices \(3\), got 64'):
    train.validate_config(tiny_digits(), device_count=3)
  train.validate_config(tiny_digits(), device_count=4)


def test_step_schedule_and_warmup():
  c = default.get_config()  # lr 0.1, /10 at epochs 150 and 225
  fn = train.create_learning_rate_fn(c, steps_per_epoch=10)
  assert [float(fn(s)) for s in (0, 1499, 1500, 2249, 2250)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001])
  c.warmup_epochs = 1.0
  fn = train.create_learning_rate_fn(c, steps_per_epoch=10)
  assert float(fn(5)) == pytest.approx(0.05) and float(fn(10)) == pytest.approx(0.1)


def test_sgd_weight_decay_and_momentum_match_pytorch_update():
  c = default.get_config()
  c.learning_rate, c.weight_decay, c.momentum = 0.1, 0.01, 0.9
  tx = train.create_optimizer(c, train.create_learning_rate_fn(c, 10))
  p = {'w': jnp.array([1.0, -2.0])}
  g = {'w': jnp.array([0.5, 0.5])}
  s = tx.init(p)
  # PyTorch SGD: d = g + wd p; buf = mom buf + d; p -= lr buf.
  buf = np.zeros(2)
  ref = np.array([1.0, -2.0])
  for _ in range(3):
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    buf = 0.9 * buf + (np.array([0.5, 0.5]) + 0.01 * ref)
    ref = ref - 0.1 * buf
  np.testing.assert_allclose(p['w'], ref, rtol=1e-6)
  c.optimizer = 'adam'
  c.weight_decay = 0.0
  tx = train.create_optimizer(c, train.create_learning_rate_fn(c, 10))
  u, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(u['w'], [-0.1, -0.1], rtol=1e-4)  # Adam's first step: -lr sign(g)


def test_model_from_config_and_from_search_json(tmp_path):
  c = tiny_digits()
  name, kw = train.model_hyperparameters(c, 10)
  assert name == 'dense_ensemble' and kw == {'m': 2, 'widths': (16, 16), 'num_outputs': 10}
  path = tmp_path / 'search.json'
  path.write_text(json.dumps({'primal': {'n': 12, 'm': 5.4, 'm_int': 5},
                              'dual': {'n': 12, 'm': 2.2, 'm_int': 2}}))
  c.search_json, c.search_design = str(path), 'dual'
  assert train.model_hyperparameters(c, 10)[1] == {'m': 2, 'widths': (12, 12), 'num_outputs': 10}
  c.search_design = 'primal'
  assert train.create_model(c, 10).m == 5
  r = default.get_config()
  r.search_json = str(path)
  assert train.model_hyperparameters(r, 100) == (
      'resnext29', {'cardinality': 5, 'base_width': 12, 'num_classes': 100})
  r.search_json = str(tmp_path / 'missing.json')
  with pytest.raises(ValueError, match='does not exist'):
    train.model_hyperparameters(r, 10)


# ------------------------------------------------------------------ slow: training on digits


def _rel(a, b):
  return abs(a - b) / abs(b)


@pytest.mark.slow
def test_digits_trains_and_writes_summary_metrics_checkpoints(tmp_path):
  config = tiny_digits(num_train_steps=-1, num_epochs=3, learning_rate=0.01)
  s = train.train_and_evaluate(config, str(tmp_path))
  assert SUMMARY_KEYS <= set(s)
  on_disk = json.load(open(tmp_path / 'summary.json'))
  assert SUMMARY_KEYS <= set(on_disk) and on_disk['steps'] == s['steps'] == 3 * (1347 // 64)
  assert s['params'] == 2 * (64 * 16 + 16 * 16 + 16 * 10)
  assert on_disk['config']['m'] == 2
  assert s['test_error_top1'] < 0.5 and s['test_error_top5'] <= s['test_error_top1']
  assert math.isfinite(s['final_train_loss']) and s['params_l2'] > 0
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  evals = [r for r in rows if 'test_error_top1' in r]
  assert [r['step'] for r in evals] == [21, 42, 63]  # every epoch
  assert all(r['test_count'] == 450 for r in evals)
  assert any('train_loss' in r and 'learning_rate' in r for r in rows)
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert steps == [60, 63]  # every 10 steps and at the end, keep 2
  # Independent check of params_l2 from the restored final checkpoint.
  from ce_jax.training import checkpointing
  ck = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'))
  with pytest.raises(ValueError, match='different model or optimizer'):  # and nothing moved
    ck.restore_latest(jax.device_get(train.create_train_state(
        jax.random.PRNGKey(0), train.create_model(config, 10), (8, 8, 1), optax.sgd(0.1), True)))
  tx = train.create_optimizer(config, train.create_learning_rate_fn(config, 21))
  state = train.create_train_state(jax.random.PRNGKey(0), train.create_model(config, 10),
                                   (8, 8, 1), tx, True)
  restored, meta = ck.restore_latest(jax.device_get(state))
  ck.close()
  assert meta['step'] == 63 and meta['epoch'] == 3 and meta['position_in_epoch'] == 0
  l2 = math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64))))
                     for x in jax.tree_util.tree_leaves(restored.params)))
  assert _rel(l2, s['params_l2']) < 1e-9


@pytest.mark.slow
def test_resume_matches_uninterrupted_and_corrupt_latest_falls_back(tmp_path, caplog):
  full = train.train_and_evaluate(tiny_digits(num_train_steps=30), str(tmp_path / 'full'))
  part = str(tmp_path / 'part')
  first = train.train_and_evaluate(tiny_digits(num_train_steps=15), part)
  assert first['steps'] == 15
  resumed = train.train_and_evaluate(tiny_digits(num_train_steps=30), part)
  assert resumed['resumed_from_step'] == 15 and resumed['steps'] == 30
  assert _rel(resumed['params_l2'], full['params_l2']) < 1e-6
  assert resumed['final_train_loss'] == pytest.approx(full['final_train_loss'], rel=1e-6)
  # Corrupt the newest checkpoint (30): the run falls back to 20 with a warning and still ends
  # at the uninterrupted result.
  ckdir = os.path.join(part, 'checkpoints')
  assert sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) == [20, 30]
  for f in glob.glob(os.path.join(ckdir, '30', '**', '*'), recursive=True):
    if os.path.isfile(f):
      with open(f, 'r+b') as fh:
        fh.truncate(max(0, os.path.getsize(f) // 3))
  with caplog.at_level('WARNING'):
    again = train.train_and_evaluate(tiny_digits(num_train_steps=30), part)
  assert again['resumed_from_step'] == 20
  assert any('unreadable' in r.getMessage() for r in caplog.records)
  assert os.path.isdir(os.path.join(part, 'checkpoints_corrupt', '30'))
  assert _rel(again['params_l2'], full['params_l2']) < 1e-6


@pytest.mark.slow
def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  class Exploding(nn.Module):
    """Linear model whose output becomes NaN once a weight passes 0.25 (after ~12 SGD steps)."""

    @nn.compact
    def __call__(self, x):
      w = self.param('w', nn.initializers.zeros, (x.shape[-1], 10))
      logits = x @ w
      return jnp.where(jnp.max(jnp.abs(w)) > 0.25, jnp.nan, 1.0) * logits

  config = tiny_digits(optimizer='sgd', learning_rate=0.2, momentum=0.0, num_train_steps=40,
                       log_every_steps=1, checkpoint_every_steps=3)
  with pytest.raises(train.TrainingDivergedError, match='training diverged at step') as e:
    train.train_and_evaluate(config, str(tmp_path), model=Exploding())
  msg = str(e.value)
  assert '\n' not in msg and 'last good checkpoint is step' in msg
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert steps and f'step {steps[-1]} in' in msg


class TinyBNNet(nn.Module):
  """A small conv net with BatchNorm (the conv models' ``train`` flag and batch_stats path)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).reshape((x.shape[0], -1))
    return nn.Dense(10)(x)


@pytest.mark.slow
def test_batchnorm_model_trains_and_updates_statistics(tmp_path):
  config = tiny_digits(flatten_inputs=False, optimizer='sgd', learning_rate=0.1,
                       momentum=0.9, weight_decay=5e-4, num_train_steps=20)
  s = train.train_and_evaluate(config, str(tmp_path), model=TinyBNNet())
  assert s['steps'] == 20 and math.isfinite(s['final_train_loss'])
  assert s['test_error_top1'] < 0.3
  from ce_jax.training import checkpointing
  ck = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'))
  tx = train.create_optimizer(config, train.create_learning_rate_fn(config, 21))
  state = train.create_train_state(jax.random.PRNGKey(0), TinyBNNet(), (8, 8, 1), tx, False)
  restored, _ = ck.restore_latest(jax.device_get(state))
  ck.close()
  mean = restored.batch_stats['BatchNorm_0']['mean']
  assert np.any(np.abs(np.asarray(mean)) > 1e-3)  # running statistics moved from their init


@pytest.mark.slow
def test_cifar10_recipe_trains_under_mock_data(tmp_path):
  """The CIFAR config path (tfds pipeline with augmentation, SGD + wd, BatchNorm) on mock data.

  A tiny BN conv net stands in for ResNeXt-29, whose CPU compile alone takes minutes here.
  """
  tfds = pytest.importorskip('tensorflow_datasets')
  config = default.get_config()  # CIFAR-10 ResNeXt-29 recipe, shrunk
  config.data_dir = str(tmp_path / 'data')
  config.num_train_examples = config.num_test_examples = 8
  config.batch_size = config.eval_batch_size = 4
  config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps = 2, 1, 1
  # mock_data swaps the file system while a dataset is built: an orbax background write at
  # that moment would land in the mock, so save synchronously here.
  config.async_checkpointing = False
  with tfds.testing.mock_data(num_examples=8, data_dir=config.data_dir):
    s = train.train_and_evaluate(config, str(tmp_path / 'run'), model=TinyBNNet())
  assert s['steps'] == 2 and math.isfinite(s['final_train_loss'])
  assert s['params'] > 0 and 0.0 <= s['test_error_top5'] <= s['test_error_top1'] <= 1.0
  rows = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert [r['test_count'] for r in rows if 'test_count' in r] == [8]
