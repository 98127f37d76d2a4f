"""One SGD training step: the generic ``ensemble()`` module vs the hand-written ensembles.

A step is the loss, its gradient (``jax.value_and_grad``) and a plain SGD update
``theta <- theta - lr * grad`` (BatchNorm in train mode, its statistics updated), jitted, on
random inputs and targets. Cases:

* ``dense``: ``m`` members of hidden widths ``--dense_widths`` on ``--dense_input``-d inputs,
  batch ``--dense_batch``, squared loss on a scalar output; generic
  ``ensemble(DenseMember, m, widths)`` (network aggregation) vs
  :class:`ce_jax.models.dense.DenseEnsemble` (the same parameters: both stack the members'
  kernels as ``(m, n_in, n_out)``);
* ``block MxN`` (``--blocks``): a ResNeXt bottleneck ``in = out = --block_channels`` with ``M``
  paths of width ``N`` on ``(--block_batch, --block_size, --block_size, in)`` inputs, loss
  ``sum(y * r)`` with a fixed random ``r``; generic: the block ensemble
  (``aggregation='block'``) of one path (1x1 conv, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv:
  ``GroupedConv`` and ``FastBatchNorm``) followed by the block's final BN, the identity shortcut
  and ReLU; hand-written: :class:`ce_jax.models.resnext.Bottleneck` with cardinality ``M``,
  weights mapped from the generic ones.

Before timing, one step of each variant from the same state is compared (``max_rel_err``: loss
and updated parameters). Rounds are interleaved (every variant of every case once per round, in
alternating order), medians of ``--reps`` rounds after a warm-up call;
``ratio = generic_s / hand_s`` (target <= 1.1).

  python experiments/benchmark_ensemble.py --json_out=/tmp/bench_ensemble.json
  python experiments/benchmark_ensemble.py --quick      # tiny sizes (tests)
"""

from __future__ import annotations

import functools
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
from ce_jax.models import dense
from ce_jax.models import ensemble as ens_lib
from ce_jax.models import layers
from ce_jax.models import resnext

FLAGS = flags.FLAGS
timed, rel_err = benchmarking.timed, benchmarking.max_relative_error
flags.DEFINE_integer('dense_m', 8, 'members of the dense case (0: skip it)')
flags.DEFINE_list('dense_widths', ['64', '64', '64'], 'hidden widths of a dense member')
flags.DEFINE_integer('dense_input', 784, 'input dimension of the dense case')
flags.DEFINE_integer('dense_batch', 128, 'batch size of the dense case')
flags.DEFINE_string('blocks', '8x4,32x4', 'comma list of PATHSxWIDTH bottleneck designs ("" skips)')
flags.DEFINE_integer('block_channels', 256, 'input = output channels of the bottleneck')
flags.DEFINE_integer('block_batch', 16, 'batch size of the bottleneck case')
flags.DEFINE_integer('block_size', 16, 'image height = width of the bottleneck case')
flags.DEFINE_float('lr', 0.01, 'SGD learning rate')
cli.define_benchmark_flags('dense m 2, widths 4,4, input 8, batch 4; block 16 channels, 2x2 '
                           'and 4x2, batch 2, 4x4 images; 2 rounds', rounds=('reps', 20))


# ---------------------------------------------------------------------------------------------
# Models.


class BottleneckPath(nn.Module):
  """One bottleneck path with the layers of ``resnext.Bottleneck`` (no final BN)."""
  width: int
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(layers.GroupedConv, use_bias=False, kernel_init=resnext.conv_init)
    norm = functools.partial(layers.FastBatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5)
    y = nn.relu(norm(name='bn1')(conv(self.width, (1, 1), name='conv1')(x)))
    y = conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    return conv(self.out_channels, (1, 1), name='conv3')(y)


class GenericBottleneck(nn.Module):
  """Block ensemble of ``m`` paths + the bottleneck's final BN, identity shortcut and ReLU."""
  m: int
  width: int
  out_channels: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    path = functools.partial(BottleneckPath, out_channels=self.out_channels)
    y = ens_lib.ensemble(path, self.m, self.width, aggregation='block', name='paths')(
        x, train=train)
    y = layers.FastBatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             name='bn3')(y)
    return nn.relu(y + x)


def hand_bottleneck(m: int, n: int, channels: int, train: bool = True) -> resnext.Bottleneck:
  norm = functools.partial(layers.FastBatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5)
  return resnext.Bottleneck(width=m * n, out_channels=channels, cardinality=m,
                            conv=layers.GroupedConv, norm=norm)


def _out_concat(k):
  """Stacked conv kernels (m, *k, C, O) -> the grouped layout (*k, C, m*O)."""
  return jnp.moveaxis(k, 0, -2).reshape(k.shape[1:-1] + (-1,))


def _in_concat(k):
  """Stacked conv kernels (m, *k, C, O) -> one convolution over all channels (*k, m*C, O)."""
  return jnp.moveaxis(k, 0, -3).reshape(k.shape[1:-2] + (-1, k.shape[-1]))


def to_hand_variables(v):
  """The generic bottleneck's variables in ``resnext.Bottleneck``'s tree."""
  p, s = v['params'], v['batch_stats']
  paths = p['paths']
  return {'params': {'conv1': {'kernel': _out_concat(paths['conv1']['kernel'])},
                     'conv2': {'kernel': _out_concat(paths['conv2']['kernel'])},
                     'conv3': {'kernel': _in_concat(paths['conv3']['kernel'])},
                     'bn1': paths['bn1'], 'bn2': paths['bn2'], 'bn3': p['bn3']},
          'batch_stats': {'bn1': s['paths']['bn1'], 'bn2': s['paths']['bn2'],
                          'bn3': s['bn3']}}


# ---------------------------------------------------------------------------------------------
# Steps and timing.


def sgd_step(module, loss_fn, lr: float):
  """Jitted ``(variables, x, t) -> (new variables, loss)``: value_and_grad + SGD update."""
  def step(variables, x, t):
    params = variables['params']
    rest = {k: v for k, v in variables.items() if k != 'params'}
    mutable = list(rest)

    def loss(p):
      out = module.apply({'params': p, **rest}, x, mutable=mutable or False)
      y, new = out if mutable else (out, {})
      return loss_fn(y, t), new

    (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    params = jax.tree_util.tree_map(lambda a, g: a - lr * g, params, grads)
    return {'params': params, **new}, value
  return jax.jit(step)


def _num_params(variables) -> int:
  return int(sum(np.size(l) for l in jax.tree_util.tree_leaves(variables['params'])))


def dense_case(m, widths, n_in, batch, lr):
  kx, kt, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (batch, n_in), jnp.float32)
  t = jax.random.normal(kt, (batch, 1), jnp.float32)
  hand = dense.DenseEnsemble(m, widths, num_outputs=1)
  generic = ens_lib.ensemble(lambda w: dense.DenseMember(w, num_outputs=1), m, widths)
  variables = hand.init(kp, x)
  mse = lambda y, t: jnp.mean((y - t) ** 2)
  return {'name': f'dense m={m} widths={",".join(map(str, widths))} in={n_in} batch={batch}',
          'kind': 'dense', 'm': m, 'x': x, 't': t,
          'generic': (sgd_step(generic, mse, lr), variables),
          'hand': (sgd_step(hand, mse, lr), variables),
          'to_hand': lambda v: v, 'params': _num_params(variables)}


def block_case(m, n, channels, batch, size, lr):
  kx, kt, kp = jax.random.split(jax.random.PRNGKey(m * 100 + n), 3)
  x = jax.random.normal(kx, (batch, size, size, channels), jnp.float32)
  r = jax.random.normal(kt, (batch, size, size, channels), jnp.float32)
  generic = GenericBottleneck(m, n, channels)
  variables = generic.init(kp, x)
  hand_vars = to_hand_variables(variables)
  inner = lambda y, r: jnp.sum(y * r)
  return {'name': f'bottleneck {m}x{n} in=out={channels} batch={batch} {size}x{size}',
          'kind': 'block', 'm': m, 'width': n, 'x': x, 't': r,
          'generic': (sgd_step(generic, inner, lr), variables),
          'hand': (sgd_step(hand_bottleneck(m, n, channels), inner, lr), hand_vars),
          'to_hand': to_hand_variables, 'params': _num_params(variables)}


def run(cases, reps, log=print):
  """Checks and times every case; returns the list of result dicts."""
  results = []
  for c in cases:   # warm-up (compile) + correctness
    log(f'{c["name"]}: compiling / warm-up')
    (g_step, g_vars), (h_step, h_vars) = c['generic'], c['hand']
    g_new, g_loss = g_step(g_vars, c['x'], c['t'])
    h_new, h_loss = h_step(h_vars, c['x'], c['t'])
    mapped = c['to_hand'](g_new)
    errs = [rel_err(g_loss, h_loss)] + [
        rel_err(a, b) for a, b in zip(jax.tree_util.tree_leaves(mapped),
                                      jax.tree_util.tree_leaves(h_new))]
    c['times'] = {'generic': [], 'hand': []}
    results.append({'name': c['name'], 'kind': c['kind'], 'm': c['m'],
                    'width': c.get('width'), 'params': c['params'],
                    'loss_generic': float(g_loss), 'loss_hand': float(h_loss),
                    'max_rel_err': max(errs)})
  for rnd in range(reps):
    log(f'round {rnd + 1}/{reps}')
    order = ('generic', 'hand') if rnd % 2 == 0 else ('hand', 'generic')
    for c in cases:
      for variant in order:
        step, variables = c[variant]
        c['times'][variant].append(timed(lambda: step(variables, c['x'], c['t'])))
  for c, res in zip(cases, results):
    res['generic_s'] = statistics.median(c['times']['generic'])
    res['hand_s'] = statistics.median(c['times']['hand'])
    res['ratio'] = res['generic_s'] / res['hand_s']
    res['generic_all_s'] = c['times']['generic']
    res['hand_all_s'] = c['times']['hand']
  return results


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  # Every flag is checked, also those --quick replaces.
  dense_m = _validate.positive_int('dense_m', FLAGS.dense_m, minimum=0)
  widths = _validate.int_list('dense_widths', FLAGS.dense_widths)
  n_in = _validate.positive_int('dense_input', FLAGS.dense_input)
  d_batch = _validate.positive_int('dense_batch', FLAGS.dense_batch)
  blocks = _validate.design_list('blocks', FLAGS.blocks, ('paths', 'width'), allow_empty=True)
  channels = _validate.positive_int('block_channels', FLAGS.block_channels)
  b_batch = _validate.positive_int('block_batch', FLAGS.block_batch)
  size = _validate.positive_int('block_size', FLAGS.block_size, minimum=3)
  reps = _validate.positive_int('reps', FLAGS.reps)
  lr = _validate.finite_positive('lr', FLAGS.lr)
  if not dense_m and not blocks:
    raise ValueError('nothing to run: dense_m is 0 and blocks is empty')
  if FLAGS.quick:
    dense_m, widths, n_in, d_batch = 2, (4, 4), 8, 4
    blocks, channels, b_batch, size, reps = [(2, 2), (4, 2)], 16, 2, 4, 2
  cases = []
  if dense_m:
    cases.append(dense_case(dense_m, widths, n_in, d_batch, lr))
  cases += [block_case(m, n, channels, b_batch, size, lr) for m, n in blocks]
  results = run(cases, reps, log=logging.info)
  print(f'one jitted SGD step (loss, grad, update), float32, median of {reps} interleaved '
        f'rounds (seconds)')
  print(f'{"case":<52} {"generic":>9} {"hand":>9} {"ratio":>6} {"err":>8}')
  for r in results:
    print(f'{r["name"]:<52} {r["generic_s"]:9.5f} {r["hand_s"]:9.5f} {r["ratio"]:6.3f} '
          f'{r["max_rel_err"]:8.1e}')
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'generic ensemble() module vs hand-written ensemble, one SGD step',
      'settings': {'dense_m': dense_m, 'dense_widths': widths, 'dense_input': n_in,
                   'dense_batch': d_batch, 'blocks': blocks, 'block_channels': channels,
                   'block_batch': b_batch, 'block_size': size, 'lr': lr, 'reps': reps,
                   'dtype': 'float32', 'quick': FLAGS.quick},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(),
      'cases': results})


if __name__ == '__main__':
  cli.run_main(main)
