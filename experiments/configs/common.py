"""Training recipes of the paper shared by the row-table configs (one file per paper family).

``cifar_resnext29.py``, ``imagenet32.py``, ``imagenet64.py`` and ``imagenet.py`` each hold a
``ROWS`` table of the paper's designs with the parameter counts the paper prints
(``tests/test_configs.py`` checks the models against them) and build their configs with one of
these recipes; the row is the config argument (``--config=experiments/configs/imagenet64.py:ROW``).

ml_collections' ``--config=FILE.py`` loads a config file from its path, outside any package, so
``from experiments.configs import common`` would need the repository on ``sys.path``. Config
files load their neighbour (``common.py``, or ``default.py``) by path instead, with the same
four lines of ``importlib`` in each (``spec_from_file_location`` on
``os.path.join(os.path.dirname(os.path.abspath(__file__)), 'common.py')``, ``module_from_spec``,
``exec_module``), so they load from any working directory, from any binary, and as
``experiments.configs.X``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

_found = importlib.util.spec_from_file_location(
    'ce_jax_config_default', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'default.py'))
default = importlib.util.module_from_spec(_found)
_found.loader.exec_module(default)


class Row(NamedTuple):
  """One row of a paper table: a ``ce_jax.models.registry`` name, its hyperparameters and the
  parameter count the paper prints (millions, as printed: ``'37.50'``, whose decimals set how
  closely ``tests/test_configs.py`` matches the model's count), None where it prints none."""
  model: str
  model_kwargs: dict
  paper_params_m: str | None


def paper_millions(printed: str | None) -> float | None:
  """A printed parameter count (``'13.78'``) as the config's ``paper_params_m`` float."""
  return None if printed is None else float(printed)


def pick(rows: dict, arg: str | None, config_file: str):
  """``rows[arg]``, or a one-line ``ValueError`` naming ``arg`` and listing the rows."""
  name = (arg or '').strip()
  if name not in rows:
    what = (f'unknown row {name!r}' if name else
            f'needs a row: --config=experiments/configs/{config_file}:ROW')
    raise ValueError(f'{config_file}: {what} (rows: {", ".join(rows)})')
  return rows[name]


def cifar(cardinality: int, base_width: int, dataset: str = 'cifar10',
          paper_params_m: float | None = None):
  """ResNeXt-29 on CIFAR-10/100: SGD 0.9, batch 128, wd 5e-4, lr 0.1, 300 epochs, /10 at 150, 225.

  ``paper_params_m`` is the paper's 10-class count; for CIFAR-100 the classifier adds
  90 * (1024 + 1) parameters.
  """
  if dataset not in ('cifar10', 'cifar100'):
    raise ValueError(f'dataset must be cifar10 or cifar100, got {dataset!r}')
  config = default.get_config()
  config.dataset = dataset
  config.model = 'resnext29'
  config.model_kwargs = {'cardinality': cardinality, 'base_width': base_width}
  if paper_params_m is not None and dataset == 'cifar100':
    paper_params_m = round(paper_params_m + 90 * 1025 / 1e6, 2)
  config.paper_params_m = paper_params_m
  return config


def imagenet32(model: str, paper_params_m: float | None, **model_kwargs):
  """ImageNet 32x32 (appendix Table 1): batch 1024, lr 0.08, wd 5e-4, 80 epochs, /5 at 20, 40, 60."""
  config = default.get_config()
  config.dataset = 'imagenet_resized/32x32'
  config.model = model
  config.model_kwargs = model_kwargs
  config.batch_size = config.eval_batch_size = 1024
  config.learning_rate = 0.08
  config.weight_decay = 5e-4
  config.num_epochs = 80
  config.lr_decay_epochs = (20, 40, 60)
  config.lr_decay_factor = 0.2
  config.checkpoint_every_steps = 2000
  config.paper_params_m = paper_params_m
  return config


def imagenet64(model: str, paper_params_m: float | None, **model_kwargs):
  """ImageNet 64x64 (appendix Table 2): batch 512, lr 0.04, wd 5e-4, 60 epochs, /5 at 20, 30, 40."""
  config = imagenet32(model, paper_params_m, **model_kwargs)
  config.dataset = 'imagenet_resized/64x64'
  config.batch_size = config.eval_batch_size = 512
  config.learning_rate = 0.04
  config.num_epochs = 60
  config.lr_decay_epochs = (20, 30, 40)
  return config


def imagenet(model: str, paper_params_m: float | None, **model_kwargs):
  """ImageNet (ResNet/ResNeXt-50/101): batch 256, lr 0.1, wd 1e-4, 100 epochs, /10 at 30, 60, 90.

  Each host reads its own part of the split (``sharding='split'``); 224x224 random resized crops
  and flips, no lighting.
  """
  config = default.get_config()
  config.dataset = 'imagenet2012'
  config.sharding = 'split'
  config.shuffle_buffer = 16 * 1024
  config.model = model
  config.model_kwargs = model_kwargs
  config.batch_size = config.eval_batch_size = 256
  config.learning_rate = 0.1
  config.weight_decay = 1e-4
  config.num_epochs = 100
  config.lr_decay_epochs = (30, 60, 90)
  config.lr_decay_factor = 0.1
  config.checkpoint_every_steps = 5000
  config.log_every_steps = 500
  config.paper_params_m = paper_params_m
  return config
