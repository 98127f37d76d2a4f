"""Grouped 3x3 convolution, forward + backward: ce_jax GroupedConv vs stock flax vs torch.

For each design ``G x w`` (G groups of w channels, C = G * w channels in and out): a 3x3 stride-1
SAME convolution without bias on a ``(batch, size, size, C)`` input, timed as
``value_and_grad`` of ``sum(conv(x) * R)`` w.r.t. the kernel AND the input, with a fixed random
cotangent ``R`` (``grad`` of ``sum(conv(x))`` lets XLA drop work). Variants:

* ``ce_jax``: :class:`ce_jax.models.layers.GroupedConv` (``impl='auto'``: the oneDNN extension,
  :mod:`ce_jax.models.native.onednn`, where it is available), jitted;
* ``xla_only``: ``GroupedConv(impl='loop')``, the fastest formulation without the extension
  (``'stock'`` for one group), jitted;
* ``stock_flax``: ``flax.linen.Conv(feature_group_count=G)``, jitted (slow on XLA:CPU for G > 1;
  designs with ``G >= --stock_once_groups`` are timed once);
* ``torch``: ``torch.nn.Conv2d(groups=G)`` eager, channels_last, float32, same kernel and input.

Rounds are interleaved (every variant of every design once per round), medians of ``--reps``
rounds after a warm-up call. Outputs and both gradients are checked against stock flax (and
torch): relative errors are in the JSON. ``ratio = ce_jax_s / torch_s``.

  python experiments/benchmark_conv.py --json_out=/tmp/bench_conv.json
  python experiments/benchmark_conv.py --quick --no_torch     # tiny sizes, JAX only
"""

from __future__ import annotations

import statistics
import time

from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.tools import benchmarking
from ce_jax.tools import cli
from ce_jax.models import layers

FLAGS = flags.FLAGS
timed, rel_err = benchmarking.timed, benchmarking.max_relative_error
flags.DEFINE_string('designs', '1x128,3x64,37x10,10x10', 'comma list of GROUPSxWIDTH')
flags.DEFINE_integer('batch', 32, 'batch size')
flags.DEFINE_integer('size', 32, 'image height = width')
flags.DEFINE_integer('stock_once_groups', 20, 'stock flax is timed once for designs with at least '
                     'this many groups (it takes ~40 s per call at 37x10)')
flags.DEFINE_bool('no_torch', False, 'skip torch (JAX variants only)')
flags.DEFINE_string('torch_device', 'cpu', "torch's device: cpu, or cuda beside a JAX GPU")
cli.define_benchmark_flags('designs 1x8,3x4,5x2, batch 2, size 8, 2 rounds', rounds=('reps', 5))


def _jax_step(module, r):
  """Jitted ``value_and_grad`` of ``sum(module(x) * r)`` w.r.t. (params, x).

  ``r`` is bound as an argument (not a closure constant, which XLA would constant-fold).
  """
  def loss(p, x, r):
    return jnp.sum(module.apply(p, x) * r)
  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return lambda p, x: f(p, x, r)


def _torch_step(torch, conv, x, r):
  def step():
    x.grad = None
    conv.weight.grad = None
    loss = (conv(x) * r).sum()
    loss.backward()
    if x.is_cuda:
      torch.cuda.synchronize()
    return loss
  return step


def run(designs, batch, size, reps, stock_once_groups, use_torch, log=print,
        torch_device='cpu'):
  """Runs the benchmark; returns the list of per-design result dicts."""
  torch = benchmarking.import_torch() if use_torch else None
  setups = []
  for g, w in designs:
    c = g * w
    kx, kr, kp = jax.random.split(jax.random.PRNGKey(g * 1000 + w), 3)
    x = jax.random.normal(kx, (batch, size, size, c), jnp.float32)
    r = jax.random.normal(kr, (batch, size, size, c), jnp.float32)
    kw = dict(features=c, kernel_size=(3, 3), padding='SAME', feature_group_count=g,
              use_bias=False)
    ours, stock = layers.GroupedConv(**kw), nn.Conv(**kw)
    xla_only = layers.GroupedConv(impl='loop' if g > 1 else 'stock', **kw)
    params = stock.init(kp, x)
    s = {'groups': g, 'width': w, 'x': x, 'params': params,
         'impl': layers.choose_impl(g, padding=((1, 1), (1, 1))),
         'ce_jax': _jax_step(ours, r), 'stock_flax': _jax_step(stock, r),
         'xla_only': _jax_step(xla_only, r)}
    if torch is not None:
      tx = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2)).to(torch_device).contiguous(
          memory_format=torch.channels_last).requires_grad_(True)
      tr = torch.tensor(np.asarray(r).transpose(0, 3, 1, 2)).to(torch_device).contiguous(
          memory_format=torch.channels_last)
      conv = torch.nn.Conv2d(c, c, 3, padding=1, groups=g, bias=False)
      with torch.no_grad():
        kernel = np.asarray(params['params']['kernel'])  # (kh, kw, in/G, out) -> OIHW
        conv.weight.copy_(torch.tensor(kernel.transpose(3, 2, 0, 1)))
      conv = conv.to(torch_device).to(memory_format=torch.channels_last)
      s['torch'] = _torch_step(torch, conv, tx, tr)
      s['torch_objects'] = (tx, conv)
    setups.append(s)

  results = []
  times = {}
  for s in setups:  # warm-up (compile) + correctness
    key = (s['groups'], s['width'])
    log(f'{key[0]}x{key[1]}: compiling / warm-up ({s["impl"]})')
    (v, (gp, gx)) = s['ce_jax'](s['params'], s['x'])
    (v_ref, (gp_ref, gx_ref)) = s['stock_flax'](s['params'], s['x'])  # compile + warm-up
    (v_x, (gp_x, gx_x)) = s['xla_only'](s['params'], s['x'])
    err = max(rel_err(v, v_ref), rel_err(gx, gx_ref),
              rel_err(gp['params']['kernel'], gp_ref['params']['kernel']),
              rel_err(v_x, v_ref), rel_err(gx_x, gx_ref),
              rel_err(gp_x['params']['kernel'], gp_ref['params']['kernel']))
    res = {'groups': s['groups'], 'width': s['width'], 'channels': s['groups'] * s['width'],
           'impl': s['impl'], 'max_rel_err_vs_stock': err}
    times[key] = {'ce_jax': [], 'stock_flax': [], 'torch': [], 'xla_only': []}
    if s['groups'] >= stock_once_groups:
      times[key]['stock_flax'].append(timed(lambda s=s: s['stock_flax'](s['params'], s['x'])))
    if 'torch' in s:
      s['torch']()
      tx, conv = s['torch_objects']
      tgx = tx.grad.detach().cpu().numpy().transpose(0, 2, 3, 1)
      tgw = conv.weight.grad.detach().cpu().numpy().transpose(2, 3, 1, 0)
      res['max_rel_err_vs_torch'] = max(rel_err(gx, tgx), rel_err(gp['params']['kernel'], tgw))
    results.append(res)

  for rnd in range(reps):
    log(f'round {rnd + 1}/{reps}')
    for s in setups:
      key = (s['groups'], s['width'])
      times[key]['ce_jax'].append(timed(lambda s=s: s['ce_jax'](s['params'], s['x'])))
      times[key]['xla_only'].append(timed(lambda s=s: s['xla_only'](s['params'], s['x'])))
      if s['groups'] < stock_once_groups:
        times[key]['stock_flax'].append(timed(lambda s=s: s['stock_flax'](s['params'], s['x'])))
      if 'torch' in s:
        t0 = time.perf_counter()
        s['torch']()
        times[key]['torch'].append(time.perf_counter() - t0)

  for res in results:
    t = times[(res['groups'], res['width'])]
    res['ce_jax_s'] = statistics.median(t['ce_jax'])
    res['xla_only_s'] = statistics.median(t['xla_only'])
    res['stock_flax_s'] = statistics.median(t['stock_flax'])
    res['stock_flax_reps'] = len(t['stock_flax'])
    res['torch_s'] = statistics.median(t['torch']) if t['torch'] else None
    res['ratio'] = res['ce_jax_s'] / res['torch_s'] if res['torch_s'] else None
    res['ce_jax_all_s'] = t['ce_jax']
    res['torch_all_s'] = t['torch']
  return results, torch


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  # Every flag is checked, also those --quick replaces.
  designs = _validate.design_list('designs', FLAGS.designs, ('groups', 'width'))
  batch = _validate.positive_int('batch', FLAGS.batch)
  size = _validate.positive_int('size', FLAGS.size, minimum=3)
  reps = _validate.positive_int('reps', FLAGS.reps)
  if FLAGS.quick:
    designs, batch, size, reps = [(1, 8), (3, 4), (5, 2)], 2, 8, 2
  stock_once = _validate.positive_int('stock_once_groups', FLAGS.stock_once_groups)
  device = _validate.choice('torch_device', FLAGS.torch_device, ('cpu', 'cuda'))
  results, torch = run(designs, batch, size, reps, stock_once, not FLAGS.no_torch,
                       log=logging.info, torch_device=device)
  print(f'3x3 conv fwd+bwd, batch {batch}, {size}x{size}, float32, median of {reps} '
        f'interleaved rounds (seconds)')
  print(f'{"design":>8} {"impl":>6} {"ce_jax":>9} {"xla_only":>9} {"stock_flax":>11} '
        f'{"torch":>9} {"ratio":>6} {"err":>8}')
  for r in results:
    torch_s = f'{r["torch_s"]:9.4f}' if r['torch_s'] else f'{"-":>9}'
    ratio = f'{r["ratio"]:6.2f}' if r['ratio'] else f'{"-":>6}'
    print(f'{r["groups"]:>4}x{r["width"]:<3} {r["impl"]:>6} {r["ce_jax_s"]:9.4f} '
          f'{r["xla_only_s"]:9.4f} {r["stock_flax_s"]:11.4f} {torch_s} {ratio} '
          f'{r["max_rel_err_vs_stock"]:8.1e}')
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'grouped 3x3 conv forward + backward (param and input gradients)',
      'settings': {'batch': batch, 'size': size, 'reps': reps, 'stock_once_groups': stock_once,
                   'dtype': 'float32', 'torch_layout': 'channels_last', 'quick': FLAGS.quick,
                   'torch_device': device},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(torch), 'designs': results})


if __name__ == '__main__':
  cli.run_main(main)
