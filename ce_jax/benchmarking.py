"""Shared pieces of the benchmark binaries: the machine and versions they ran on, torch import.

Used by ``experiments/benchmark_conv.py`` and ``experiments/benchmark_train.py`` so both record
the same environment in their JSON.
"""

from __future__ import annotations

import os
import platform

import jax
import numpy as np


def versions(torch=None) -> dict:
  """Python, jax, flax, numpy (and torch, with its thread count) versions and the JAX backend."""
  import flax  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version(), 'jax': jax.__version__, 'flax': flax.__version__,
         'numpy': np.__version__, 'backend': jax.default_backend()}
  from ce_jax import onednn  # pylint: disable=g-import-not-at-top
  st = onednn.status()
  out['ce_jax_onednn'] = st['onednn_version'] if st['available'] else f'unavailable: {st["error"]}'
  if torch is not None:
    out['torch'] = torch.__version__
    out['torch_threads'] = torch.get_num_threads()
  return out


def machine() -> dict:
  """CPU model, core count, platform and the load average at the time of the call."""
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return {'cpu': cpu, 'cores': os.cpu_count(), 'platform': platform.platform(),
          'load_average': os.getloadavg()}


def import_torch():
  """Imports torch or raises a one-line ValueError that says how to get it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('torch is not installed: pip install torch==2.13.0 (the `bench` extra), '
                     'or pass --no_torch') from None
  return torch
