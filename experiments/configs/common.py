"""Training recipes of the paper shared by the row-table configs (one file per paper family).

``cifar_resnext29.py``, ``imagenet32.py``, ``imagenet64.py`` and ``imagenet.py`` each hold a
``ROWS`` table of the paper's designs with the parameter counts the paper prints
(``tests/experiments/test_configs.py`` checks the models against them) and build their configs with one of
these recipes; the row is the config argument (``--config=experiments/configs/imagenet64.py:ROW``).

ml_collections' ``--config=FILE.py`` loads a config file from its path, outside any package, so
``from experiments.configs import common`` would need the repository on ``sys.path``. Config
files load their neighbour (``common.py``, or ``default.py``) by path instead
(``runpy.run_path`` next to ``__file__``), so they load from any working directory, from any
binary, and as ``experiments.configs.X``.
"""

from __future__ import annotations

import os
import runpy
import types
from typing import NamedTuple

_HERE = os.path.dirname(os.path.abspath(__file__))
default = types.SimpleNamespace(**runpy.run_path(os.path.join(_HERE, 'default.py')))


class Row(NamedTuple):
  """One row of a paper table: a ``ce_jax.models.registry`` name, its hyperparameters and the
  parameter count the paper prints (millions, as printed: ``'37.50'``, whose decimals set how
  closely ``tests/experiments/test_configs.py`` matches the model's count), None where it prints none."""
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


# The paper's recipes per data set family: the keys each sets over default.py's defaults.
RECIPES = {
    # ImageNet 32x32 (appendix Table 1): batch 1024, lr 0.08, wd 5e-4, 80 epochs, /5 at 20, 40, 60.
    'imagenet32': dict(dataset='imagenet_resized/32x32', batch_size=1024, eval_batch_size=1024,
                       learning_rate=0.08, weight_decay=5e-4, num_epochs=80,
                       lr_decay_epochs=(20, 40, 60), lr_decay_factor=0.2,
                       checkpoint_every_steps=2000),
    # ImageNet (ResNet/ResNeXt-50/101): batch 256, lr 0.1, wd 1e-4, 100 epochs, /10 at 30, 60, 90;
    # each host reads its own part of the split; 224x224 random resized crops and flips.
    'imagenet': dict(dataset='imagenet2012', sharding='split', shuffle_buffer=16 * 1024,
                     batch_size=256, eval_batch_size=256, learning_rate=0.1, weight_decay=1e-4,
                     num_epochs=100, lr_decay_epochs=(30, 60, 90), lr_decay_factor=0.1,
                     checkpoint_every_steps=5000, log_every_steps=500),
}
# ImageNet 64x64 (appendix Table 2): ImageNet 32x32's with batch 512, lr 0.04, 60 epochs, /5 at
# 20, 30, 40.
RECIPES['imagenet64'] = dict(RECIPES['imagenet32'], dataset='imagenet_resized/64x64',
                             batch_size=512, eval_batch_size=512, learning_rate=0.04,
                             num_epochs=60, lr_decay_epochs=(20, 30, 40))


def recipe(name: str, model: str, paper_params_m: float | None, **model_kwargs):
  """default.py's config with ``RECIPES[name]`` and the model (a ``ce_jax.models`` name)."""
  config = default.get_config()
  for key, value in RECIPES[name].items():
    setattr(config, key, value)
  config.model = model
  config.model_kwargs = model_kwargs
  config.paper_params_m = paper_params_m
  return config


def with_commands(doc: str, config_file: str, args, workdirs, extra: str = '') -> str:
  """``doc`` followed by the training command of each row (the module's ``__doc__``).

  ``args``: the config argument of each row; ``workdirs``: its ``--workdir`` (same order).
  """
  lines = [f'    python experiments/train.py --config=experiments/configs/{config_file}:{arg} '
           f'--workdir=runs/{workdir}{extra}' for arg, workdir in zip(args, workdirs)]
  return doc.rstrip() + '\n\nEvery row\'s command::\n\n' + '\n'.join(lines) + '\n'


def row_config(name: str, rows: dict, arg: str | None, config_file: str):
  """The config of row ``arg`` of a family's ``rows`` table under recipe ``name``."""
  row = pick(rows, arg, config_file)
  return recipe(name, row.model, paper_millions(row.paper_params_m), **row.model_kwargs)
