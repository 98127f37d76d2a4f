"""Shared pieces of the benchmark binaries: timing, errors, machine and versions, torch ResNeXt.

Used by the ``experiments/benchmark_*.py`` binaries so they record the same environment in
their JSON, and compare with the same torch models (:func:`torch_resnext`, loaded with flax
weights by :func:`torch_state_from_flax`).
"""

from __future__ import annotations

import os
import platform
import time

import flax
import jax
import numpy as np

from ce_jax.models import resnext
from ce_jax.models.native import onednn
from ce_jax.tools import host_memory


def timed(fn) -> float:
  """Seconds of one call of ``fn()``, its result ready (``jax.block_until_ready``)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def max_relative_error(a, b) -> float:
  """``max |a - b| / max |b|`` in float64 (0 when both are zero)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b))))


def versions(torch=None) -> dict:
  """Python, jax, flax, numpy (and torch, with its thread count) versions and the JAX backend."""
  out = {'python': platform.python_version(), 'jax': jax.__version__, 'flax': flax.__version__,
         'numpy': np.__version__, 'backend': jax.default_backend()}
  st = onednn.status()
  out['ce_jax_onednn'] = st['onednn_version'] if st['available'] else f'unavailable: {st["error"]}'
  if torch is not None:
    out['torch'] = torch.__version__
    out['torch_threads'] = torch.get_num_threads()
  return out


def machine() -> dict:
  """CPU model, core count, platform, the load average at the time of the call and the malloc
  setting (``'reuse'`` or ``'default'``, :mod:`ce_jax.tools.host_memory`)."""
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
          'load_average': os.getloadavg(), 'malloc': host_memory.setting()}


def import_torch():
  """Imports torch or raises a one-line ValueError that says how to get it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('torch is not installed: pip install torch==2.13.0 (the `bench` extra), '
                     'or pass --no_torch') from None
  return torch


def torch_resnext(torch, name: str, cardinality: int, base_width: int, num_classes: int,
                  stage_outputs=None, stem_channels: int = 64):
  """The ``ce_jax.models.resnext`` architecture ``name`` in torch (NCHW), for the benchmarks.

  Same layers, order and hyper-parameters (BatchNorm eps 1e-5, torch momentum 0.1 = flax 0.9;
  the ``'cifar'`` 3x3 stem or the ``'imagenet'`` 7x7/2 stem with a 3x3/2 max pool); weights
  from :func:`torch_state_from_flax` make its outputs those of the flax model.
  """
  tnn = torch.nn
  sizes, outputs, stem = resnext.ARCHITECTURES[name]
  outputs = tuple(stage_outputs or outputs)

  def bn(c):
    return tnn.BatchNorm2d(c, momentum=0.1, eps=1e-5)

  class Bottleneck(tnn.Module):
    def __init__(self, cin, width, out, groups, stride):
      super().__init__()
      self.conv1, self.bn1 = tnn.Conv2d(cin, width, 1, bias=False), bn(width)
      self.conv2 = tnn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups,
                              bias=False)
      self.bn2 = bn(width)
      self.conv3, self.bn3 = tnn.Conv2d(width, out, 1, bias=False), bn(out)
      self.shortcut = None
      if cin != out or stride != 1:
        self.shortcut = tnn.Sequential(tnn.Conv2d(cin, out, 1, stride=stride, bias=False),
                                       bn(out))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = torch.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))

  class Net(tnn.Module):
    def __init__(self):
      super().__init__()
      if stem == 'cifar':
        self.stem = tnn.Sequential(tnn.Conv2d(3, stem_channels, 3, padding=1, bias=False),
                                   bn(stem_channels), tnn.ReLU())
      else:
        self.stem = tnn.Sequential(
            tnn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False),
            bn(stem_channels), tnn.ReLU(), tnn.MaxPool2d(3, stride=2, padding=1))
      blocks, cin = [], stem_channels
      for i, (n, out) in enumerate(zip(sizes, outputs)):
        width = resnext.stage_width(cardinality, base_width, out)
        for j in range(n):
          blocks.append(Bottleneck(cin, width, out, cardinality, 2 if (i > 0 and j == 0) else 1))
          cin = out
      self.blocks = tnn.Sequential(*blocks)
      self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
      x = self.blocks(self.stem(x))
      return self.fc(x.mean(dim=(2, 3)))

  return Net()


def torch_state_from_flax(torch, net, variables, dtype=None) -> dict:
  """A ``state_dict`` for :func:`torch_resnext`'s ``net`` holding the flax ``variables``.

  Kernels HWIO -> OIHW, Dense (in, out) -> (out, in); BatchNorm scale, bias, running mean and
  variance. Every tensor of ``net`` is filled (a KeyError names any left out).
  """
  params, stats = variables['params'], variables['batch_stats']
  pairs = [('stem.0', 'stem_conv', 'conv'), ('stem.1', 'stem_bn', 'bn')]
  blocks = sorted((k for k in params if k.startswith('stage')),
                  key=lambda k: tuple(int(t) for t in k[5:].split('_block')))
  for i, name in enumerate(blocks):
    for part in ('conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3'):
      pairs.append((f'blocks.{i}.{part}', f'{name}/{part}', part[:-1] if 'conv' in part
                    else 'bn'))
    if 'shortcut_conv' in params[name]:
      pairs += [(f'blocks.{i}.shortcut.0', f'{name}/shortcut_conv', 'conv'),
                (f'blocks.{i}.shortcut.1', f'{name}/shortcut_bn', 'bn')]

  def get(tree, path):
    for p in path.split('/'):
      tree = tree[p]
    return np.asarray(tree, np.float64)

  out = {}
  for t_name, f_name, kind in pairs:
    if kind == 'conv':
      out[f'{t_name}.weight'] = get(params, f'{f_name}/kernel').transpose(3, 2, 0, 1)
    else:
      out[f'{t_name}.weight'] = get(params, f'{f_name}/scale')
      out[f'{t_name}.bias'] = get(params, f'{f_name}/bias')
      out[f'{t_name}.running_mean'] = get(stats, f'{f_name}/mean')
      out[f'{t_name}.running_var'] = get(stats, f'{f_name}/var')
  out['fc.weight'] = get(params, 'classifier/kernel').T
  out['fc.bias'] = get(params, 'classifier/bias')
  state = net.state_dict()
  missing = [k for k in state if k not in out and not k.endswith('num_batches_tracked')]
  if missing:
    raise KeyError(f'torch tensors without a flax value: {missing[:5]}')
  dtype = dtype or torch.float32
  return {k: (torch.tensor(out[k], dtype=dtype) if k in out else v) for k, v in state.items()}
