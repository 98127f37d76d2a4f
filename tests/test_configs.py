"""Every experiments/configs file loads, validates and builds its model with the paper's size."""

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
HELPERS = ('common.py', 'default.py', '__init__.py')
ROW_FILES = sorted(f for f in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
                   if os.path.basename(f) not in HELPERS)

# Parameter counts (millions) from the paper's tables (2 decimals: +-0.005M;
# 1 decimal: +-0.05M); ImageNet baselines: torchvision's ResNet-50/101 and ResNeXt-50/101 32x4d.
PAPER_M = {
    'cifar_resnext29_1x128d': 13.78, 'cifar_resnext29_3x64d': 13.35,
    'cifar_resnext29_37x10d': 13.74, 'cifar_resnext29_10x10d': 4.22,
    'cifar_resnext29_44x8d': 12.71, 'cifar_resnext29_60x6d': 12.57,
    'imagenet32_resnext29_1x128d': 14.79, 'imagenet32_resnext29_3x64d': 14.36,
    'imagenet32_resnext29_37x10d': 14.76, 'imagenet32_resnext29_10x10d': 5.24,
    'imagenet32_resnext29_3x40d': 7.99, 'imagenet32_wrn28_10': (37.1, 0.05),
    'imagenet32_wrn28_5': (9.5, 0.05),
    'imagenet64_resnext38_1x96d': 37.50, 'imagenet64_resnext38_2x64d': 38.98,
    'imagenet64_resnext38_22x10d': 36.25, 'imagenet64_resnext38_8x10d': 16.27,
    'imagenet64_resnext38_1x128d': 57.79, 'imagenet64_resnext38_3x64d': 56.05,
    'imagenet64_resnext38_37x10d': 57.67, 'imagenet64_resnext38_10x10d': 19.13,
    'imagenet64_wrn36_5': (37.6, 0.05),
    'imagenet_resnet50': 25.56, 'imagenet_resnext50_32x4d': 25.03,
    'imagenet_resnet101': 44.55, 'imagenet_resnext101_32x4d': 44.18,
}

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


def load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def count(config):
  info_shape = input_pipeline._SPECS[config.dataset]['shape']  # pylint: disable=protected-access
  num_classes = input_pipeline._SPECS[config.dataset]['num_classes']  # pylint: disable=protected-access
  model = train.create_model(config, num_classes)
  if config.flatten_inputs:
    x = jax.ShapeDtypeStruct((1, int(jnp.prod(jnp.array(info_shape)))), jnp.float32)
  else:
    x = jax.ShapeDtypeStruct((1,) + tuple(info_shape), jnp.float32)
  kwargs = {'train': False} if train._takes_train(model) else {}  # pylint: disable=protected-access
  return accounting.count_params(model, x, **kwargs).params, num_classes


def test_every_row_has_a_reference():
  names = {os.path.basename(f)[:-3] for f in ROW_FILES}
  assert set(PAPER_M) <= names
  assert {'digits', 'cifar_resnext29', 'imagenet_resnext50_12x10d',
          'imagenet_resnext50_4x16d'} <= names


@pytest.mark.parametrize('path', ROW_FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_config_validates_and_documents_its_command(path):
  config = load(path)
  train.validate_config(config, device_count=1)
  doc = open(path).read()
  assert 'python experiments/train.py --config=experiments/configs/' + os.path.basename(path) in doc


@pytest.mark.slow
@pytest.mark.parametrize('path', ROW_FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_config_builds_model_with_paper_param_count(path):
  name = os.path.basename(path)[:-3]
  config = load(path)
  params, num_classes = count(config)
  if config.model in _RESNEXT_STAGES:
    kw = config.model_kwargs
    assert params == resnext_params(config.model, kw.cardinality, kw.base_width, num_classes)
  if name in PAPER_M:
    ref = PAPER_M[name]
    ref, tol = ref if isinstance(ref, tuple) else (ref, 0.0051)
    assert abs(params / 1e6 - ref) <= tol, (name, params)
    assert config.paper_params_m == pytest.approx(ref)
  if name == 'digits':
    m, n, d = config.m, config.n, config.depth
    assert params == m * (64 * n + (d - 2) * n * n + n * 10)


def test_cifar100_and_curve_points():
  c = load(os.path.join(CONFIG_DIR, 'cifar_resnext29_37x10d.py'), 'cifar100')
  assert c.dataset == 'cifar100' and c.paper_params_m == pytest.approx(13.74 + 0.09225, abs=0.01)
  c = load(os.path.join(CONFIG_DIR, 'cifar_resnext29.py'), 'cifar100,12x10d')
  assert (c.dataset, c.model_kwargs.cardinality, c.model_kwargs.base_width) == ('cifar100', 12, 10)
  with pytest.raises(ValueError, match='DATASET,CxDd'):
    load(os.path.join(CONFIG_DIR, 'cifar_resnext29.py'), 'cifar10,wide')


def test_recipes_follow_spec_section_5():
  i32 = load(os.path.join(CONFIG_DIR, 'imagenet32_resnext29_37x10d.py'))
  assert (i32.batch_size, i32.learning_rate, i32.weight_decay, i32.num_epochs,
          tuple(i32.lr_decay_epochs), i32.lr_decay_factor) == (1024, 0.08, 5e-4, 80, (20, 40, 60),
                                                               0.2)
  i64 = load(os.path.join(CONFIG_DIR, 'imagenet64_resnext38_22x10d.py'))
  assert (i64.batch_size, i64.learning_rate, i64.num_epochs, tuple(i64.lr_decay_epochs)) == (
      512, 0.04, 60, (20, 30, 40))
  inet = load(os.path.join(CONFIG_DIR, 'imagenet_resnext50_12x10d.py'))
  assert (inet.batch_size, inet.learning_rate, inet.weight_decay, inet.num_epochs,
          tuple(inet.lr_decay_epochs), inet.lr_decay_factor) == (256, 0.1, 1e-4, 100,
                                                                 (30, 60, 90), 0.1)
  cif = load(os.path.join(CONFIG_DIR, 'cifar_resnext29_44x8d.py'))
  assert (cif.batch_size, cif.learning_rate, cif.weight_decay, cif.num_epochs,
          tuple(cif.lr_decay_epochs), cif.momentum) == (128, 0.1, 5e-4, 300, (150, 225), 0.9)
