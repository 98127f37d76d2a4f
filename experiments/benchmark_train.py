"""One ResNeXt-29 training step, ce_jax vs the same architecture in torch.

A step is forward (BatchNorm in train mode), cross-entropy on random labels, backward and an
SGD-with-momentum update (lr 0.1, momentum 0.9), on a batch of ``--batch`` random 32x32x3 images.

* ``ce_jax``: ``ce_jax.models.resnext`` ResNeXt-29 as built by default (``layers='fast'``):
  ``GroupedConv`` and
  :class:`ce_jax.models.layers.FastBatchNorm` (same parameter tree as the model zoo's), jitted,
  optax SGD;
* ``xla_only`` (``--compare_xla``): the same model with ``GroupedConv(impl='loop')`` -- the
  fastest convolutions without the oneDNN extension (:mod:`ce_jax.models.native.onednn`);
* ``ce_jax_flax_bn`` (``--compare_bn``): the model zoo's ResNeXt-29 with ``conv=GroupedConv``
  and stock ``nn.BatchNorm`` (isolates the BatchNorm change);
* ``torch``: the same ResNeXt-29 in torch (``ce_jax.tools.benchmarking.torch_resnext``; eager,
  channels_last, float32); the parameter counts are asserted equal;
* ``torch_compile`` (``--torch_compile``, on by default with torch): the same torch model
  through ``torch.compile`` (inductor, CPU: generated C++ kernels; what a PyTorch user who
  cares about speed runs), from the same initial weights; its compilation time is reported
  apart (``torch_compile_compile_s``).

Rounds are interleaved, medians of ``--reps`` after a warm-up step. ``ratio = ce_jax_img_s /
torch_img_s`` and ``ratio_compile = ce_jax_img_s / torch_compile_img_s`` (``--quick`` leaves
torch.compile out unless ``--torch_compile`` is given). With ``--check_stock`` (always in
``--quick``) one step of the ce_jax model is
compared with the stock flax model (nn.Conv + nn.BatchNorm) from the same state.

  python experiments/benchmark_train.py --json_out=/tmp/bench_train.json
  python experiments/benchmark_train.py --quick --no_torch
"""

from __future__ import annotations

import functools
import statistics
import time

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ce_jax import _validate
from ce_jax.tools import benchmarking
from ce_jax.tools import cli
from ce_jax.models import layers
from ce_jax.models import resnext

FLAGS = flags.FLAGS
flags.DEFINE_string('models', '1x128d,3x64d,37x10d,10x10d',
                    'comma list of CARDINALITYxBASE_WIDTHd ResNeXt-29 designs')
flags.DEFINE_integer('batch', 16, 'batch size')
flags.DEFINE_integer('size', 32, 'image height = width')
flags.DEFINE_bool('no_torch', False, 'skip torch (JAX only)')
flags.DEFINE_string('torch_device', 'cpu', "torch's device: cpu, or cuda beside a JAX GPU")
flags.DEFINE_bool('torch_compile', True, 'also time torch.compile (inductor) of the torch model')
flags.DEFINE_bool('compare_bn', False, 'also time the model zoo ResNeXt with stock nn.BatchNorm')
flags.DEFINE_bool('compare_xla', False, "also time it with GroupedConv(impl='loop') (no oneDNN)")
flags.DEFINE_bool('check_stock', False, 'compare one ce_jax step with the stock flax model')
cli.define_benchmark_flags('stage outputs 16,32,64, stem 8, model 2x16d, batch 2, 8x8 images, '
                           '2 rounds', rounds=('reps', 5))

NUM_CLASSES = 10


def jax_models(cardinality, base_width, stage_outputs, stem_channels):
  sizes, _, _ = resnext.ARCHITECTURES['resnext29']
  kw = dict(stage_sizes=sizes, stage_outputs=stage_outputs, cardinality=cardinality,
            base_width=base_width, num_classes=NUM_CLASSES, stem='cifar',
            stem_channels=stem_channels)
  return {
      'ce_jax': resnext.ResNeXt(layers='fast', **kw),  # the zoo's default
      'ce_jax_flax_bn': resnext.ResNeXt(conv=layers.GroupedConv, layers='stock', **kw),
      'xla_only': resnext.ResNeXt(conv=functools.partial(layers.GroupedConv, impl='loop'),
                                  layers='fast', **kw),
      'stock_flax': resnext.ResNeXt(layers='stock', **kw),
  }


def make_jax_step(model, tx):
  """Jitted SGD step: (params, batch_stats, opt_state, x, y) -> (new state..., loss)."""
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, new = model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt_state, loss
  return jax.jit(step)


def run_benchmark(models, batch, size, reps, stage_outputs, stem_channels, use_torch, compare_bn,
                  check_stock, log=print, compare_xla=False, torch_compile=False,
                  torch_device='cpu'):
  """Runs the benchmark; returns (list of per-model result dicts, torch module or None)."""
  torch = benchmarking.import_torch() if use_torch else None
  tx = optax.sgd(0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  x_np = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
  y_np = rng.integers(0, NUM_CLASSES, batch)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  variants = (['ce_jax'] + (['ce_jax_flax_bn'] if compare_bn else [])
              + (['xla_only'] if compare_xla else []))
  torch_variants = [] if torch is None else ['torch'] + (['torch_compile'] if torch_compile
                                                         else [])
  setups = []
  for card, width in models:
    name = f'{card}x{width}d'
    mods = jax_models(card, width, stage_outputs, stem_channels)
    v = mods['stock_flax'].init(jax.random.PRNGKey(0), x, train=False)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(v['params']))
    s = {'name': name, 'cardinality': card, 'base_width': width, 'params': n_params, 'states': {},
         'steps': {}, 'times': {k: [] for k in variants + torch_variants}}
    for k in variants:
      s['steps'][k] = make_jax_step(mods[k], tx)
      s['states'][k] = (v['params'], v['batch_stats'], tx.init(v['params']))
    if check_stock:
      s['check'] = (make_jax_step(mods['stock_flax'], tx), v)
    if torch is not None:
      net = benchmarking.torch_resnext(torch, 'resnext29', card, width, NUM_CLASSES,
                                       stage_outputs, stem_channels)
      n_torch = sum(p.numel() for p in net.parameters())
      if n_torch != n_params:
        raise AssertionError(f'{name}: torch model has {n_torch} parameters, ce_jax {n_params}')
      net = net.to(torch_device).to(memory_format=torch.channels_last).train()
      tx_t = torch.tensor(x_np.transpose(0, 3, 1, 2)).to(torch_device).contiguous(
          memory_format=torch.channels_last)
      ty_t = torch.tensor(y_np, dtype=torch.long).to(torch_device)

      def make_torch_step(net, tx_t=tx_t, ty_t=ty_t):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def torch_step():
          opt.zero_grad(set_to_none=True)
          loss = torch.nn.functional.cross_entropy(net(tx_t), ty_t)
          loss.backward()
          opt.step()
          return loss.item()
        return torch_step
      if torch_compile:   # same initial weights, compiled module (forward and backward)
        twin = benchmarking.torch_resnext(torch, 'resnext29', card, width, NUM_CLASSES,
                                       stage_outputs, stem_channels)
        twin.load_state_dict(net.state_dict())
        twin = twin.to(torch_device).to(memory_format=torch.channels_last).train()
        s['torch_compile'] = make_torch_step(torch.compile(twin))
      s['torch'] = make_torch_step(net)
    setups.append(s)

  def jax_step(s, k):
    params, bs, opt_state = s['states'][k]
    t0 = time.perf_counter()
    params, bs, opt_state, loss = s['steps'][k](params, bs, opt_state, x, y)
    jax.block_until_ready((params, loss))
    dt = time.perf_counter() - t0
    s['states'][k] = (params, bs, opt_state)
    return dt, float(loss)

  results = []
  for s in setups:
    res = {'name': s['name'], 'cardinality': s['cardinality'], 'base_width': s['base_width'],
           'params': s['params']}
    for k in variants:
      log(f'{s["name"]}: compiling {k}')
      t0 = time.perf_counter()
      if k == 'ce_jax' and 'check' in s:
        stock_step, v = s['check']
        p0, b0, o0 = s['states'][k]
        ours = s['steps'][k](p0, b0, o0, x, y)
        ref = stock_step(p0, b0, o0, x, y)
        errs = [float(jnp.max(jnp.abs(a - b)) / jnp.maximum(1e-30, jnp.max(jnp.abs(b))))
                for a, b in zip(jax.tree_util.tree_leaves(ours[:2]),
                                jax.tree_util.tree_leaves(ref[:2]))]
        res['max_rel_err_vs_stock'] = max(errs)
        res['loss_ce_jax'], res['loss_stock_flax'] = float(ours[3]), float(ref[3])
      _, loss = jax_step(s, k)
      res[f'{k}_compile_s'] = time.perf_counter() - t0
      res[f'{k}_first_loss'] = loss
    for k in torch_variants:
      log(f'{s["name"]}: first step of {k}')
      t0 = time.perf_counter()
      res[f'{k}_first_loss'] = s[k]()
      res[f'{k}_compile_s'] = time.perf_counter() - t0
    results.append(res)

  for rnd in range(reps):
    log(f'round {rnd + 1}/{reps}')
    for s in setups:
      for k in variants:
        s['times'][k].append(jax_step(s, k)[0])
      for k in torch_variants:
        t0 = time.perf_counter()
        s[k]()
        s['times'][k].append(time.perf_counter() - t0)

  for s, res in zip(setups, results):
    for k in variants + ['torch', 'torch_compile']:
      t = s['times'].get(k, [])
      res[f'{k}_step_s'] = statistics.median(t) if t else None
      res[f'{k}_img_s'] = batch / statistics.median(t) if t else None
      res[f'{k}_all_s'] = t
    res['ratio'] = (res['ce_jax_img_s'] / res['torch_img_s']) if res['torch_img_s'] else None
    res['ratio_compile'] = (res['ce_jax_img_s'] / res['torch_compile_img_s']
                            if res['torch_compile_img_s'] else None)
    if compare_bn:
      res['fast_bn_speedup'] = res['ce_jax_img_s'] / res['ce_jax_flax_bn_img_s']
    if compare_xla:
      res['onednn_speedup'] = res['ce_jax_img_s'] / res['xla_only_img_s']
  return results, torch


def _cell(value, width: int) -> str:
  """A table cell: a rate or ratio with 2 decimals, a name or count as it is, '-' for none."""
  if isinstance(value, float):
    return f'{value:{width}.2f}'
  return f'{"-" if value is None else value:>{width}}'


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  # Every flag is checked, also those --quick replaces.
  models = _validate.design_list('models', FLAGS.models, ('cardinality', 'base_width'), suffix='d')
  batch = _validate.positive_int('batch', FLAGS.batch)
  size = _validate.positive_int('size', FLAGS.size, minimum=4)
  reps = _validate.positive_int('reps', FLAGS.reps)
  stage_outputs, stem_channels, check = (256, 512, 1024), 64, FLAGS.check_stock
  if FLAGS.quick:
    models, batch, size, reps = [(2, 16)], 2, 8, 2
    stage_outputs, stem_channels, check = (16, 32, 64), 8, True
  for card, width in models:
    resnext.validate_config((3, 3, 3), stage_outputs, card, width, NUM_CLASSES)
  device = _validate.choice('torch_device', FLAGS.torch_device, ('cpu', 'cuda'))
  use_compile = bool(FLAGS.torch_compile and not FLAGS.no_torch
                     and (not FLAGS.quick or FLAGS['torch_compile'].present))
  results, torch = run_benchmark(models, batch, size, reps, stage_outputs, stem_channels,
                                 not FLAGS.no_torch, FLAGS.compare_bn, check, log=logging.info,
                                 compare_xla=FLAGS.compare_xla,
                                 torch_compile=use_compile, torch_device=device)
  print(f'ResNeXt-29 training step (SGD momentum), batch {batch}, {size}x{size}, float32, '
        f'median of {reps} interleaved rounds (images / s)')
  # (header, width, key of the result): --compare_bn and --compare_xla add their columns
  columns = [('model', 8, 'name'), ('params', 10, 'params'), ('ce_jax', 8, 'ce_jax_img_s'),
             ('torch', 8, 'torch_img_s'), ('ratio', 6, 'ratio'),
             ('compiled', 8, 'torch_compile_img_s'), ('ratio', 6, 'ratio_compile')]
  if FLAGS.compare_bn:
    columns += [('flax_bn', 8, 'ce_jax_flax_bn_img_s'), ('bn_gain', 7, 'fast_bn_speedup')]
  if FLAGS.compare_xla:
    columns += [('xla_only', 8, 'xla_only_img_s'), ('onednn_gain', 11, 'onednn_speedup')]
  print(' '.join(f'{head:>{width}}' for head, width, _ in columns))
  for r in results:
    print(' '.join(_cell(r[key], width) for _, width, key in columns))
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'ResNeXt-29 training step (forward, backward, SGD momentum)',
      'settings': {'batch': batch, 'size': size, 'reps': reps, 'stage_outputs': stage_outputs,
                   'stem_channels': stem_channels, 'dtype': 'float32', 'quick': FLAGS.quick,
                   'torch_layout': 'channels_last', 'optimizer': 'SGD lr 0.1 momentum 0.9',
                   'torch_compile': use_compile, 'torch_device': device},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(torch), 'models': results})


if __name__ == '__main__':
  cli.run_main(main)
