"""A dense collegial ensemble on scikit-learn's digits (offline, real data): trains in seconds.

    python experiments/train.py --config=experiments/configs/digits.py --workdir=runs/digits \
        --config.m=4 --config.n=32

m members, each a ReLU MLP with depth - 1 hidden layers of width n (NTK parameterization,
paper Eq. 3), 10 outputs; Adam (the paper's dense-ensemble optimizer, Fig. 4); inputs are
the 8x8 images flattened to 64 features.
"""

from __future__ import annotations

import os
import runpy
import types

# Loaded by path: ml_collections loads config files outside any package (see common.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
default = types.SimpleNamespace(**runpy.run_path(os.path.join(_HERE, 'default.py')))


def get_config():
  config = default.get_config()
  config.dataset = 'digits'
  config.model = 'dense_ensemble'
  config.model_kwargs = {}
  config.m = 4
  config.n = 32
  config.depth = 3
  config.flatten_inputs = True
  config.optimizer = 'adam'
  config.learning_rate = 1e-2
  config.momentum = 0.0
  config.weight_decay = 0.0
  config.lr_decay_epochs = ()
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 10
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  return config
