"""Every experiments/configs row loads, validates, documents its command and builds its model
with the parameter count the paper prints (read from the config file's ROWS table)."""

import glob
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import REPO

if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ce_jax.design import accounting  # noqa: E402
from ce_jax.training import input_pipeline  # noqa: E402
from ce_jax.training import train  # noqa: E402

CONFIG_DIR = os.path.join(REPO, 'experiments', 'configs')
HELPERS = ('common.py', 'default.py')


def module(name):
  """experiments/configs/<name>, loaded from its path as ``--config=`` loads it."""
  path = os.path.join(CONFIG_DIR, name)
  found = importlib.util.spec_from_file_location('config_under_test_' + name[:-3], path)
  mod = importlib.util.module_from_spec(found)
  found.loader.exec_module(mod)
  return mod


# Row-table files: the config argument of each row (CIFAR: DATASET,CxDd).
FAMILIES = {
    'cifar_resnext29.py': lambda row: f'cifar10,{row}',
    'imagenet32.py': lambda row: row,
    'imagenet64.py': lambda row: row,
    'imagenet.py': lambda row: row,
}
# The rows the docs name (--config=experiments/configs/FILE.py:ROW).
ROW_NAMES = {
    'cifar_resnext29.py': ['1x128d', '3x64d', '37x10d', '10x10d', '44x8d', '60x6d'],
    'imagenet32.py': ['resnext29_1x128d', 'resnext29_3x64d', 'resnext29_3x40d',
                      'resnext29_37x10d', 'resnext29_10x10d', 'wrn28_10', 'wrn28_5'],
    'imagenet64.py': ['resnext38_1x128d', 'resnext38_1x96d', 'resnext38_2x64d',
                      'resnext38_3x64d', 'resnext38_8x10d', 'resnext38_10x10d',
                      'resnext38_22x10d', 'resnext38_37x10d', 'wrn36_5'],
    'imagenet.py': ['resnet50', 'resnet101', 'resnext50_32x4d', 'resnext50_4x16d',
                    'resnext50_12x10d', 'resnext101_32x4d'],
}
TABLES = {name: module(name).ROWS for name in FAMILIES}


def printed_count(name, row):
  """The paper's printed count of a row (a string such as '37.50'), or None."""
  entry = TABLES[name][row]
  return entry if isinstance(entry, str) or entry is None else entry.paper_params_m


# (file, config argument, printed paper count) for every row, and the files without rows.
CASES = [(name, FAMILIES[name](row), printed_count(name, row))
         for name in FAMILIES for row in TABLES[name]]
CASES += [('digits.py', None, None), ('default.py', None, None)]
IDS = [f'{name[:-3]}:{arg}' if arg else name[:-3] for name, arg, _ in CASES]

_RESNEXT_STAGES = {'resnext29': ((3, 3, 3), 'cifar'), 'resnext38': ((3, 3, 3, 3), 'cifar'),
                   'resnext50': ((3, 4, 6, 3), 'imagenet'),
                   'resnext101': ((3, 4, 23, 3), 'imagenet')}


def resnext_params(name, cardinality, base_width, num_classes):
  """Closed-form parameter count of the paper's ResNeXt (independent of the flax code)."""
  sizes, stem = _RESNEXT_STAGES[name]
  total = (7 * 7 if stem == 'imagenet' else 3 * 3) * 3 * 64 + 2 * 64
  c_in = 64
  for i, blocks in enumerate(sizes):
    out = 256 * 2**i
    width = cardinality * (base_width * out // 256)
    for _ in range(blocks):
      total += c_in * width + 2 * width                     # 1x1 + BN
      total += 9 * width * width // cardinality + 2 * width  # grouped 3x3 + BN
      total += width * out + 2 * out                        # 1x1 + BN
      if c_in != out:
        total += c_in * out + 2 * out                       # projection shortcut + BN
      c_in = out
  return total + c_in * num_classes + num_classes


def load(name, arg=None):
  mod = module(name)
  return mod.get_config(arg) if arg is not None else mod.get_config()


def tolerance(printed):
  """Half a unit of the last printed decimal (13.78: +-0.005M; 37.1: +-0.05M), plus slack for
  float rounding."""
  decimals = len(printed.partition('.')[2])
  return 0.51 * 10.0**-decimals


def count(config):
  info = input_pipeline.get_info(config.dataset, num_train=1, num_test=1)  # no data needed
  model = train.create_model(config, info.num_classes)
  if config.flatten_inputs:
    x = jax.ShapeDtypeStruct((1, int(jnp.prod(jnp.array(info.image_shape)))), jnp.float32)
  else:
    x = jax.ShapeDtypeStruct((1,) + tuple(info.image_shape), jnp.float32)
  kwargs = {'train': False} if train._takes_train(model) else {}  # pylint: disable=protected-access
  return accounting.count_params(model, x, **kwargs).params, info.num_classes


def test_every_config_file_is_a_table_or_digits():
  names = {os.path.basename(f) for f in glob.glob(os.path.join(CONFIG_DIR, '*.py'))}
  assert names - set(HELPERS) == set(FAMILIES) | {'digits.py'}


def test_tables_hold_the_rows_the_docs_name():
  for name, rows in ROW_NAMES.items():
    assert list(TABLES[name]) == rows, name
  printed = [p for _, _, p in CASES if p is not None]
  assert len(printed) == len(CASES) - 4  # all but ImageNet 4x16d, 12x10d, digits, default
  assert all(float(p) > 0 for p in printed)


@pytest.mark.parametrize('name,arg,printed', CASES, ids=IDS)
def test_config_validates_and_documents_its_command(name, arg, printed):
  config = load(name, arg)
  train.validate_config(config, device_count=1)
  assert config.paper_params_m == (None if printed is None else float(printed))
  if name == 'default.py':
    return
  doc = module(name).__doc__
  command = 'python experiments/train.py --config=experiments/configs/' + name
  assert command + (f':{arg} ' if arg else ' ') in doc


@pytest.mark.parametrize('name', [n for n in FAMILIES if n != 'cifar_resnext29.py'])
def test_unknown_or_missing_row_is_one_line_listing_the_rows(name):
  mod = module(name)
  for arg, words in (('resnext77_9x9d', ["unknown row 'resnext77_9x9d'"]),
                     (None, ['needs a row', f'--config=experiments/configs/{name}:ROW']),
                     ('', ['needs a row'])):
    with pytest.raises(ValueError) as e:
      mod.get_config() if arg is None else mod.get_config(arg)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(f'{name}: ')
    assert all(w in msg for w in words) and all(row in msg for row in ROW_NAMES[name]), msg


def test_cifar_argument_errors_are_one_line():
  for arg, words in (('cifar10,wide', ['DATASET,CxDd', "'cifar10,wide'", '44x8d']),
                     ('cifar10,37x10d,extra', ['DATASET,CxDd']),
                     ('svhn,37x10d', ['cifar10 or cifar100', "'svhn'"])):
    with pytest.raises(ValueError) as e:
      load('cifar_resnext29.py', arg)
    assert '\n' not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize('name,arg,printed', CASES, ids=IDS)
def test_config_builds_model_with_paper_param_count(name, arg, printed):
  config = load(name, arg)
  params, num_classes = count(config)
  if config.model in _RESNEXT_STAGES:
    kw = config.model_kwargs
    assert params == resnext_params(config.model, kw.cardinality, kw.base_width, num_classes)
  if printed is not None:
    assert abs(params / 1e6 - float(printed)) <= tolerance(printed), (name, arg, params)
  if name == 'digits.py':
    m, n, d = config.m, config.n, config.depth
    assert params == m * (64 * n + (d - 2) * n * n + n * 10)


def test_cifar100_and_curve_points():
  c = load('cifar_resnext29.py', 'cifar100,37x10d')
  assert c.dataset == 'cifar100' and c.paper_params_m == pytest.approx(13.74 + 0.09225, abs=0.01)
  assert load('cifar_resnext29.py', 'cifar100').to_dict() == c.to_dict()  # 37x10d by default
  assert load('cifar_resnext29.py').to_dict() == load('cifar_resnext29.py',
                                                     'cifar10,37x10d').to_dict()
  c = load('cifar_resnext29.py', 'cifar100,12x10d')  # a curve point, not a paper row
  assert (c.dataset, c.model_kwargs.cardinality, c.model_kwargs.base_width) == ('cifar100', 12, 10)
  assert c.paper_params_m is None


def test_training_recipes():
  i32 = load('imagenet32.py', 'resnext29_37x10d')
  assert (i32.batch_size, i32.learning_rate, i32.weight_decay, i32.num_epochs,
          tuple(i32.lr_decay_epochs), i32.lr_decay_factor) == (1024, 0.08, 5e-4, 80, (20, 40, 60),
                                                               0.2)
  i64 = load('imagenet64.py', 'resnext38_22x10d')
  assert (i64.batch_size, i64.learning_rate, i64.num_epochs, tuple(i64.lr_decay_epochs)) == (
      512, 0.04, 60, (20, 30, 40))
  inet = load('imagenet.py', 'resnext50_12x10d')
  assert (inet.batch_size, inet.learning_rate, inet.weight_decay, inet.num_epochs,
          tuple(inet.lr_decay_epochs), inet.lr_decay_factor) == (256, 0.1, 1e-4, 100,
                                                                 (30, 60, 90), 0.1)
  cif = load('cifar_resnext29.py', 'cifar10,44x8d')
  assert (cif.batch_size, cif.learning_rate, cif.weight_decay, cif.num_epochs,
          tuple(cif.lr_decay_epochs), cif.momentum) == (128, 0.1, 5e-4, 300, (150, 225), 0.9)


def test_configs_load_from_any_directory_without_the_repository_on_sys_path(tmp_path):
  """ml_collections loads a config from its path; its neighbours load relative to the file."""
  import subprocess
  code = ('import importlib.util, sys\n'
          f'assert {REPO!r} not in sys.path\n'
          'path = sys.argv[1]\n'
          'found = importlib.util.spec_from_file_location("c", path)\n'
          'mod = importlib.util.module_from_spec(found)\n'
          'found.loader.exec_module(mod)\n'
          'print(mod.get_config("resnext38_37x10d").paper_params_m)\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  proc = subprocess.run([sys.executable, '-c', code, os.path.join(CONFIG_DIR, 'imagenet64.py')],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == '57.67'
