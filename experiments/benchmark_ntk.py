"""Benchmark of the empirical NTK paths of ce_jax.

For a collegial ensemble of ``m`` dense members (default m = 16, 64 -> 5 x 32 -> 1, 64 inputs):

* the ensemble NTK by ``jax.vmap`` over stacked members vs a Python loop over members vs
  neural-tangents on the block-diagonal single model (``vmap_axes=0`` / none,
  JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS) vs the closed-form
  ``'structured'`` kernel;
* the diagonal fast path ``K(x, x)`` vs the diagonal of the full NTK at 256 inputs;
* Monte-Carlo trials per second of one NTK diagonal entry of the NTK bottleneck block;
* ``peak``: the ``jnp.dot`` matmul peak measured in the same run, and the
  fraction of it reached by the structured ensemble NTK and by the Monte-Carlo variance
  estimator (``ce_jax.theory.variance.dense_diag_sampler``) at width >= 256, with analytic FLOP counts
  (:func:`peak_ntk_flops`, :func:`peak_diag_flops`).

Every variant is checked against a reference (relative error in the JSON); timings are medians
over ``--repeats`` interleaved rounds after a warm-up (compile) call, with
``jax.block_until_ready``. ``--quick`` runs tiny sizes (for the test).

  python experiments/benchmark_ntk.py --json_out=/tmp/bench_ntk.json
  python experiments/benchmark_ntk.py --sections=peak --json_out=/tmp/bench_peak.json
"""

from __future__ import annotations

import itertools
import math
import platform
import statistics
import time

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.tools import cli
from ce_jax.theory import ntk
from ce_jax.theory import variance
from ce_jax.models import dense

FLAGS = flags.FLAGS
flags.DEFINE_integer('m', 16, 'ensemble members')
flags.DEFINE_integer('depth', 6, 'weight matrices per member (>= 2)')
flags.DEFINE_integer('width', 32, 'hidden width of every member layer')
flags.DEFINE_integer('input_dim', 64, 'input dimension n_0')
flags.DEFINE_integer('num_inputs', 64, 'inputs for the full ensemble NTK')
flags.DEFINE_integer('diag_inputs', 256, 'inputs for the diagonal comparison')
flags.DEFINE_integer('repeats', 7, 'timed rounds (median reported)')
flags.DEFINE_integer('mc_trials', 64, 'initializations per Monte-Carlo call (bottleneck)')
flags.DEFINE_integer('bottleneck_cardinality', 1, 'bottleneck paths m')
flags.DEFINE_integer('bottleneck_width', 64, 'bottleneck width per path n')
flags.DEFINE_integer('bottleneck_channels', 256, 'bottleneck in = out channels')
flags.DEFINE_integer('bottleneck_spatial', 3, 'bottleneck input H = W')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_list('sections', ['ensemble', 'diagonal', 'monte_carlo', 'peak'],
                  'sections to run (ensemble, diagonal, monte_carlo, peak); the top-level keys '
                  'of the ensemble benchmark need "ensemble"')
flags.DEFINE_integer('peak_matmul_n', 2048, 'square float32 jnp.dot size for the matmul peak')
flags.DEFINE_integer('peak_m', 8, 'peak section: ensemble members')
flags.DEFINE_integer('peak_depth', 5, 'peak section: weight matrices per member')
flags.DEFINE_integer('peak_width', 256, 'peak section: hidden width of every member layer')
flags.DEFINE_integer('peak_input_dim', 256, 'peak section: input dimension n_0')
flags.DEFINE_integer('peak_inputs', 256, 'peak section: inputs N of the full ensemble NTK')
flags.DEFINE_integer('peak_mc_inputs', 256, 'peak section: inputs per Monte-Carlo trial')
flags.DEFINE_integer('peak_mc_trials', 64, 'peak section: Monte-Carlo trials per call')
flags.DEFINE_integer('peak_mc_chunk', 32, 'peak section: Monte-Carlo chunk_size')
flags.DEFINE_boolean('quick', False, 'tiny sizes and 1 repeat (tests)')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')


def _block(x):
  return jax.block_until_ready(x)


def time_interleaved(fns: dict, repeats: int, min_sample_s: float = 0.05) -> dict:
  """Median/min wall seconds and median process CPU seconds per call for each variant.

  CPU time (all threads of this process) measures the work done and is robust to the load of
  other processes on a shared machine; wall time is what a user waits.

  One warm-up (compile) call each; then each variant's calls per sample (``number``) are set so
  that a sample lasts about ``min_sample_s`` (short samples on a shared machine are dominated
  by scheduler noise); then ``repeats`` rounds in which every variant takes one sample (order
  rotated per round so no variant always follows another).
  """
  names = list(fns)
  number = {}
  for i, name in enumerate(names):
    logging.info('warm-up %d/%d: %s', i + 1, len(names), name)
    _block(fns[name]())
    t0 = time.perf_counter()
    _block(fns[name]())
    number[name] = max(1, int(math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-6))))
  times = {n: [] for n in names}
  cpu = {n: [] for n in names}
  for r in range(repeats):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(number[name]):
        out = fns[name]()
      _block(out)
      times[name].append((time.perf_counter() - t0) / number[name])
      cpu[name].append((time.process_time() - c0) / number[name])
    print(f'\rround {r + 1}/{repeats}', end='', flush=True)
  print()
  return {n: {'median_s': statistics.median(t), 'min_s': min(t),
              'cpu_median_s': statistics.median(cpu[n]), 'calls_per_sample': number[n]}
          for n, t in times.items()}


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _config():
  if FLAGS.quick:
    return dict(m=2, depth=3, width=4, input_dim=5, num_inputs=4, diag_inputs=8, repeats=1,
                mc_trials=2, bottleneck_cardinality=2, bottleneck_width=2,
                bottleneck_channels=4, bottleneck_spatial=3, peak_matmul_n=64, peak_m=2,
                peak_depth=3, peak_width=8, peak_input_dim=6, peak_inputs=8, peak_mc_inputs=4,
                peak_mc_trials=4, peak_mc_chunk=2)
  return dict(peak_matmul_n=FLAGS.peak_matmul_n, peak_m=FLAGS.peak_m,
              peak_depth=FLAGS.peak_depth, peak_width=FLAGS.peak_width,
              peak_input_dim=FLAGS.peak_input_dim, peak_inputs=FLAGS.peak_inputs,
              peak_mc_inputs=FLAGS.peak_mc_inputs, peak_mc_trials=FLAGS.peak_mc_trials,
              peak_mc_chunk=FLAGS.peak_mc_chunk,
              m=FLAGS.m, depth=FLAGS.depth, width=FLAGS.width, input_dim=FLAGS.input_dim,
              num_inputs=FLAGS.num_inputs, diag_inputs=FLAGS.diag_inputs,
              repeats=FLAGS.repeats, mc_trials=FLAGS.mc_trials,
              bottleneck_cardinality=FLAGS.bottleneck_cardinality,
              bottleneck_width=FLAGS.bottleneck_width,
              bottleneck_channels=FLAGS.bottleneck_channels,
              bottleneck_spatial=FLAGS.bottleneck_spatial)


def flop_counts(m, depth, width, n0, n) -> dict:
  """Multiply-adds x 2 of the dominant operations (k = 1 output)."""
  widths = [n0] + [width] * (depth - 1) + [1]
  p_member = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
  p = m * p_member
  return {
      'params': p,
      # forward 2P per example, backward (input and weight gradients) 4P per example.
      'jacobian': 6 * p * n,
      'jacobian_contraction': 2 * n * n * p,
      # sum over layers of A A^T (N^2 n_in) and G G^T (N^2 n_out), per member.
      'structured': 6 * p * n + 2 * m * n * n * sum(widths[:-1]) + 2 * m * n * n * sum(
          widths[1:-1]),
  }


def bench_ensemble(cfg, key, have_nt: bool) -> tuple[dict, dict]:
  m, depth, width = cfg['m'], cfg['depth'], cfg['width']
  widths = (width,) * (depth - 1)
  x = jax.random.normal(key, (cfg['num_inputs'], cfg['input_dim']))
  member = dense.DenseMember(widths)
  ens = dense.DenseEnsemble(m, widths)
  params = ens.init(jax.random.fold_in(key, 1), x[:1])
  members = dense.unstack_member_params(params)
  generic = lambda p, xx: ens.apply(p, xx)  # hides the model: no structured shortcut

  def loop_fn(backend):
    single = ntk.empirical_ntk_fn(member.apply, backend=backend,
                                  vmap_axes=None if backend == 'structured' else 0)
    def run():
      total = single(x, None, members[0])
      for p in members[1:]:
        total = total + single(x, None, p)
      return total / m
    return run

  def bind(fn, p):
    return lambda: fn(x, None, p)

  fns = {}
  member_generic = lambda p, xx: member.apply(p, xx)
  if have_nt:
    # (nt's STRUCTURED_DERIVATIVES fails on jax 0.5.3: jax.interpreters.ad.source_info_util.)
    for impl, tag in (('jacobian_contraction', 'jc'), ('ntk_vector_products', 'nvp')):
      fns[f'nt_blockdiag_{tag}_vmap0'] = bind(ntk.empirical_ntk_fn(
          generic, backend='nt', implementation=impl, vmap_axes=0), params)
    fns['nt_blockdiag_jc_novmap'] = bind(ntk.empirical_ntk_fn(
        generic, backend='nt', implementation='jacobian_contraction'), params)
    fns['nt_vmap_members'] = bind(ntk.ensemble_ntk_fn(member_generic, backend='nt', vmap_axes=0),
                                  params)
    fns['nt_loop_members'] = loop_fn('nt')
  fns['jax_blockdiag_jc_vmap0'] = bind(ntk.empirical_ntk_fn(generic, backend='jax',
                                                            vmap_axes=0), params)
  fns['jax_vmap_members'] = bind(ntk.ensemble_ntk_fn(member_generic, backend='jax', vmap_axes=0),
                                 params)
  fns['jax_loop_members'] = loop_fn('jax')
  fns['structured'] = bind(ntk.empirical_ntk_fn(ens.apply, backend='structured'), params)
  fns['structured_vmap_members'] = bind(ntk.ensemble_ntk_fn(member.apply, backend='structured'),
                                        params)
  fns['structured_loop_members'] = loop_fn('structured')

  ref = np.asarray(fns['jax_blockdiag_jc_vmap0'](), np.float64)
  errors = {name: _rel(fn(), ref) for name, fn in fns.items()}
  timings = time_interleaved(fns, cfg['repeats'], min_sample_s=0.0 if FLAGS.quick else 0.05)
  for name in timings:
    timings[name]['rel_err'] = errors[name]
  return timings, {'kernel_shape': list(ref.shape)}


def bench_diagonal(cfg, key) -> dict:
  m, depth, width = cfg['m'], cfg['depth'], cfg['width']
  widths = (width,) * (depth - 1)
  x = jax.random.normal(key, (cfg['diag_inputs'], cfg['input_dim']))
  ens = dense.DenseEnsemble(m, widths)
  params = ens.init(jax.random.fold_in(key, 1), x[:1])
  generic = lambda p, xx: ens.apply(p, xx)
  full = ntk.empirical_ntk_fn(generic, backend='jax', vmap_axes=0)
  full_diag = jax.jit(lambda xx, p: jnp.diag(full(xx, None, p)))
  fns = {'full_then_diag': lambda: full_diag(x, params)}
  diag_jax = ntk.ntk_diagonal_fn(generic, backend='jax')
  diag_structured = ntk.ntk_diagonal_fn(ens.apply, backend='structured')
  fns['diag_jax'] = lambda: diag_jax(x, params)
  fns['diag_structured'] = lambda: diag_structured(x, params)
  ref = np.asarray(fns['full_then_diag']())
  errors = {n: _rel(f(), ref) for n, f in fns.items()}
  timings = time_interleaved(fns, cfg['repeats'], min_sample_s=0.0 if FLAGS.quick else 0.05)
  for n in timings:
    timings[n]['rel_err'] = errors[n]
  full_s = timings['full_then_diag']['median_s']
  return {
      'num_inputs': cfg['diag_inputs'],
      'variants': timings,
      'speedup_jax': full_s / timings['diag_jax']['median_s'],
      'speedup_structured': full_s / timings['diag_structured']['median_s'],
  }


def bench_monte_carlo(cfg, key) -> dict:
  try:
    from ce_jax.models.bottleneck import NTKBottleneck  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # another module of the project; may not exist yet
    return {'skipped': f'ce_jax.models.bottleneck not importable: {e}'}
  c, n = cfg['bottleneck_cardinality'], cfg['bottleneck_width']
  ch, s, trials = cfg['bottleneck_channels'], cfg['bottleneck_spatial'], cfg['mc_trials']
  model = NTKBottleneck(c, n, in_channels=ch, out_channels=ch)
  x = jax.random.normal(key, (1, s, s, ch))
  diag = ntk.ntk_diagonal_fn(model.apply, backend='jax', stacked=True)

  @jax.jit
  def sample_params(k):
    return jax.vmap(lambda kk: model.init(kk, x))(jax.random.split(k, trials))

  params = sample_params(jax.random.fold_in(key, 1))
  # Reference: the same entries one initialization at a time through the full-NTK path.
  full = ntk.empirical_ntk_fn(model.apply, backend='jax', vmap_axes=0)
  ref = np.array([full(x, None, jax.tree_util.tree_map(lambda a, i=i: a[i], params))[0, 0]
                  for i in range(min(trials, 4))])
  got = np.asarray(diag(x, params))[:len(ref), 0]
  counter = itertools.count()
  fresh = lambda: jax.random.fold_in(key, 1000 + next(counter))  # new weights every call
  fns = {'sample_and_ntk': lambda: diag(x, sample_params(fresh())),
         'ntk_only': lambda: diag(x, params),
         'sample_only': lambda: sample_params(fresh())}
  t = time_interleaved(fns, cfg['repeats'], min_sample_s=0.0 if FLAGS.quick else 0.05)
  med = t['sample_and_ntk']['median_s']
  return {'cardinality': c, 'width': n, 'channels': ch, 'spatial': s, 'trials_per_call': trials,
          'params_per_trial': int(sum(np.prod(np.shape(l)[1:])
                                      for l in jax.tree_util.tree_leaves(params))),
          'median_s': med, 'trials_per_s': trials / med,
          'ntk_only_trials_per_s': trials / t['ntk_only']['median_s'],
          'sample_only_trials_per_s': trials / t['sample_only']['median_s'],
          'variants': t, 'rel_err': _rel(got, ref)}

# --------------------------------------------------------------------------------------------
# Fraction of the matmul peak.


def _member_dims(depth, width, n0, k=1):
  """Input and output widths of the ``depth`` weight matrices of a member."""
  ins = [n0] + [width] * (depth - 1)
  outs = [width] * (depth - 1) + [k]
  return ins, outs


def peak_ntk_flops(m, depth, width, n0, n) -> dict:
  """FLOPs (2 x multiply-adds) of the structured ensemble NTK, full N x N kernel, k = 1.

  Per member: forward ``2 N sum_l n_in n_out``; backward (pre-activation gradients only, no
  weight gradients) ``2 N sum_{hidden-to-hidden l} n_in n_out``; Gram products
  ``A_l A_l^T`` ``2 N^2 n_in`` for every layer but the first (``A_0 = x`` is shared by the
  members and computed once under ``vmap``) and ``D_l D_l^T`` ``2 N^2 n_out`` for every hidden
  layer. Elementwise work (ReLU, masks, the Hadamard products and the sum) is O(N^2 depth) and
  not counted.
  """
  ins, outs = _member_dims(depth, width, n0)
  fwd = 2 * n * sum(a * b for a, b in zip(ins, outs))
  bwd = 2 * n * sum(a * b for a, b in zip(ins[1:-1], outs[1:-1]))
  gram_a = 2 * n * n * sum(ins[1:])
  gram_d = 2 * n * n * sum(outs[:-1])
  shared = 2 * n * n * n0
  return {'forward': m * fwd, 'backward': m * bwd, 'gram_activations': m * gram_a + shared,
          'gram_gradients': m * gram_d,
          'total': m * (fwd + bwd + gram_a + gram_d) + shared}


def peak_diag_flops(depth, width, n0, n) -> dict:
  """FLOPs of one Monte-Carlo trial of ``dense_diag_sampler``: ``K(x_i, x_i)`` for N inputs.

  Forward ``2 N sum_l n_in n_out``, backward ``2 N sum_{hidden-to-hidden} n_in n_out``, squared
  norms ``2 N (sum n_in + sum n_hidden)``. Drawing the weights (``P`` normal variates per trial)
  is not a FLOP count; it is timed separately (``sample_only``).
  """
  ins, outs = _member_dims(depth, width, n0)
  fwd = 2 * n * sum(a * b for a, b in zip(ins, outs))
  bwd = 2 * n * sum(a * b for a, b in zip(ins[1:-1], outs[1:-1]))
  norms = 2 * n * (sum(ins) + sum(outs[:-1]))
  return {'forward': fwd, 'backward': bwd, 'norms': norms, 'total': fwd + bwd + norms,
          'params': sum(a * b for a, b in zip(ins, outs))}


def _gflops(flops, seconds):
  return flops / seconds / 1e9


def _mc_fns(cfg, key, n_inputs: int, prefix: str) -> tuple[dict, dict]:
  """Timed callables and metadata of the Monte-Carlo variance estimator with ``n_inputs``."""
  depth, width, n0 = cfg['peak_depth'], cfg['peak_width'], cfg['peak_input_dim']
  trials, chunk = cfg['peak_mc_trials'], min(cfg['peak_mc_chunk'], cfg['peak_mc_trials'])
  widths = (width,) * (depth - 1)
  x = jax.random.normal(key, (n_inputs, n0))
  sampler = variance.dense_diag_sampler(widths, x)
  module = dense.DenseMember(widths)
  diag_fn = ntk.ntk_diagonal_fn(module.apply)
  # Check: one trial's entries vs the diagonal of the pure-JAX full NTK.
  k0 = jax.random.fold_in(key, 7)
  sub = x[:min(n_inputs, 8)]
  ref = jnp.diag(ntk.empirical_ntk_fn(module.apply, backend='jax', vmap_axes=0)(
      sub, None, module.init(k0, x[:1])))
  rel_err = _rel(np.asarray(sampler(k0))[:sub.shape[0]], ref)

  num_chunks = -(-trials // chunk)

  def keys_for(k):  # trial i = split(k, T)[i], as in ce_jax.theory.variance (padded to whole chunks)
    ks = jax.random.split(k, num_chunks * chunk)
    return ks.reshape((num_chunks, chunk) + ks.shape[1:])

  # The estimator's kernel, compiled once: the lax.map over vmapped chunks of
  # variance.sample_over_inits (which wraps a fresh lambda in jax.jit on every call).
  steady = jax.jit(lambda k: jax.lax.map(jax.vmap(sampler), keys_for(k)))
  sample_only = jax.jit(lambda k: jax.lax.map(jax.vmap(lambda kk: module.init(kk, x[:1])),
                                              keys_for(k)))
  ntk_only = jax.jit(lambda p: jax.lax.map(jax.vmap(lambda pp: diag_fn(x, pp)), p))
  params = sample_only(jax.random.fold_in(key, 1))
  counter = itertools.count()
  fresh = lambda: jax.random.fold_in(key, 1000 + next(counter))  # new weights every call
  fns = {f'{prefix}ntk_moments': lambda: variance.ntk_moments(
             sampler, fresh(), trials, chunk_size=chunk).mean,
         f'{prefix}steady': lambda: steady(fresh()),
         f'{prefix}ntk_only': lambda: ntk_only(params),
         f'{prefix}sample_only': lambda: sample_only(fresh())}
  meta = {'depth': depth, 'width': width, 'input_dim': n0, 'inputs_per_trial': n_inputs,
          'trials_per_call': trials, 'chunk_size': chunk,
          'computed_trials_per_call': num_chunks * chunk, 'rel_err': rel_err}
  return fns, meta


def bench_peak(cfg, key) -> dict:
  """Matmul peak, and the fraction of it reached by the ensemble NTK and the MC estimator."""
  n = cfg['peak_matmul_n']
  a = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  fns = {'matmul': lambda: dot(a, b)}

  m, depth, width = cfg['peak_m'], cfg['peak_depth'], cfg['peak_width']
  n0, n_in = cfg['peak_input_dim'], cfg['peak_inputs']
  widths = (width,) * (depth - 1)
  x = jax.random.normal(jax.random.fold_in(key, 3), (n_in, n0))
  ens = dense.DenseEnsemble(m, widths)
  params = ens.init(jax.random.fold_in(key, 4), x[:1])
  auto = ntk.empirical_ntk_fn(ens.apply)  # backend 'auto' -> 'structured' for dense models
  fns['ensemble_ntk'] = lambda: auto(x, None, params)
  sub = x[:min(n_in, 8)]
  ref = ntk.empirical_ntk_fn(lambda p, xx: ens.apply(p, xx), backend='jax', vmap_axes=0)(
      sub, None, params)
  ens_err = _rel(np.asarray(auto(x, None, params))[:sub.shape[0], :sub.shape[0]], ref)

  mc_n = cfg['peak_mc_inputs']
  mc_fns, mc_meta = _mc_fns(cfg, jax.random.fold_in(key, 5), mc_n, 'mc_')
  fns.update(mc_fns)
  one_fns, one_meta = ({}, None)
  if mc_n != 1:  # alpha.estimate_alpha's use: one input per trial
    one_fns, one_meta = _mc_fns(cfg, jax.random.fold_in(key, 6), 1, 'mc1_')
    fns.update(one_fns)

  t = time_interleaved(fns, cfg['repeats'], min_sample_s=0.0 if FLAGS.quick else 0.05)
  mm_flops = 2 * n ** 3
  peak = _gflops(mm_flops, t['matmul']['median_s'])
  peak_best = _gflops(mm_flops, t['matmul']['min_s'])

  def entry(flops, timing):
    g = _gflops(flops, timing['median_s'])
    return {'seconds': timing['median_s'], 'min_s': timing['min_s'],
            'cpu_seconds': timing['cpu_median_s'], 'gflops': g, 'fraction': g / peak,
            'fraction_best': _gflops(flops, timing['min_s']) / peak_best}

  ens_flops = peak_ntk_flops(m, depth, width, n0, n_in)
  ens_entry = entry(ens_flops['total'], t['ensemble_ntk'])
  ens_entry.update({'flops': ens_flops['total'], 'flop_breakdown': ens_flops,
                    'config': {'m': m, 'depth': depth, 'width': width, 'input_dim': n0,
                               'inputs': n_in, 'backend': ntk.resolve_backend(ens.apply)},
                    'rel_err': ens_err})

  def mc_entry(prefix, meta):
    f = peak_diag_flops(meta['depth'], meta['width'], meta['input_dim'],
                        meta['inputs_per_trial'])
    flops = f['total'] * meta['computed_trials_per_call']
    out = entry(flops, t[f'{prefix}steady'])
    out.update({'flops': flops, 'flops_per_trial': f['total'], 'flop_breakdown': f,
                'config': meta, 'rel_err': meta['rel_err'],
                'trials_per_s': meta['trials_per_call'] / t[f'{prefix}steady']['median_s']})
    for name in ('ntk_moments', 'ntk_only', 'sample_only'):
      v = t[f'{prefix}{name}']
      out[name] = {'seconds': v['median_s'], 'min_s': v['min_s'],
                   'trials_per_s': meta['trials_per_call'] / v['median_s']}
      if name != 'sample_only':
        out[name].update({'gflops': _gflops(flops, v['median_s']),
                          'fraction': _gflops(flops, v['median_s']) / peak})
    return out

  result = {'matmul_gflops': peak, 'matmul_gflops_best': peak_best,
            'matmul': {'n': n, 'dtype': 'float32', 'flops': mm_flops,
                       'seconds': t['matmul']['median_s'], 'min_s': t['matmul']['min_s']},
            'ensemble_ntk': ens_entry, 'mc_variance': mc_entry('mc_', mc_meta),
            'target_fraction': 0.3, 'timings': t}
  if one_meta is not None:
    result['mc_variance_one_input'] = mc_entry('mc1_', one_meta)
  result['target_met'] = {'ensemble_ntk': ens_entry['fraction'] >= 0.3,
                          'mc_variance': result['mc_variance']['fraction'] >= 0.3}
  return result


def _print_peak(pk):
  print(f"\nmatmul peak: jnp.dot {pk['matmul']['n']}^2 float32 {pk['matmul_gflops']:.1f} GFLOP/s "
        f"(best round {pk['matmul_gflops_best']:.1f})")
  e = pk['ensemble_ntk']
  c = e['config']
  print(f"ensemble NTK ({c['backend']}, m={c['m']} depth={c['depth']} width={c['width']} "
        f"n0={c['input_dim']} N={c['inputs']}): {1e3 * e['seconds']:.2f} ms, "
        f"{e['flops'] / 1e9:.2f} GFLOP, {e['gflops']:.1f} GFLOP/s = {100 * e['fraction']:.0f}% "
        f"of peak (rel err {e['rel_err']:.1e})")
  for key in ('mc_variance', 'mc_variance_one_input'):
    if key not in pk:
      continue
    v = pk[key]
    c = v['config']
    print(f"MC variance ({c['inputs_per_trial']} inputs/trial, width {c['width']}, depth "
          f"{c['depth']}, {c['trials_per_call']} trials, chunk {c['chunk_size']}): steady "
          f"{v['trials_per_s']:.0f} trials/s, {v['gflops']:.1f} GFLOP/s = "
          f"{100 * v['fraction']:.1f}% of peak; ntk_moments {v['ntk_moments']['trials_per_s']:.0f}"
          f" trials/s ({100 * v['ntk_moments']['fraction']:.1f}%); NTK alone "
          f"{100 * v['ntk_only']['fraction']:.1f}%; sampling alone "
          f"{v['sample_only']['trials_per_s']:.0f} trials/s (rel err {v['rel_err']:.1e})")


SECTIONS = ('ensemble', 'diagonal', 'monte_carlo', 'peak')


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  # Every flag is checked, also those --quick replaces.
  for name in ('m', 'width', 'input_dim', 'num_inputs', 'diag_inputs', 'repeats', 'mc_trials',
               'peak_matmul_n', 'peak_m', 'peak_width', 'peak_input_dim', 'peak_inputs',
               'peak_mc_inputs', 'peak_mc_trials', 'peak_mc_chunk', 'bottleneck_cardinality',
               'bottleneck_width', 'bottleneck_channels', 'bottleneck_spatial'):
    _validate.positive_int(name, FLAGS[name].value)
  _validate.positive_int('depth', FLAGS.depth, minimum=2)
  _validate.positive_int('peak_depth', FLAGS.peak_depth, minimum=2)
  cfg = _config()
  sections = [_validate.choice('sections', s_.strip(), SECTIONS) for s_ in FLAGS.sections]
  if not sections:
    raise ValueError(f'sections must name at least one of {", ".join(SECTIONS)}')
  key = jax.random.PRNGKey(FLAGS.seed)
  have_nt = 'nt' in ntk.available_backends()
  flops = flop_counts(cfg['m'], cfg['depth'], cfg['width'], cfg['input_dim'], cfg['num_inputs'])
  tol = 1e-4
  checks = {}
  result = {
      'config': cfg,
      'sections': sections,
      'versions': {'jax': jax.__version__, 'python': platform.python_version(),
                   'device': str(jax.devices()[0]), 'neural_tangents': have_nt},
      'flops': flops,
  }
  header = f"{'variant':28s} {'median ms':>10s} {'min ms':>9s} {'cpu ms':>9s} {'rel err':>9s}"

  if 'ensemble' in sections:
    logging.info('ensemble NTK, config %s', cfg)
    ens_t, info = bench_ensemble(cfg, jax.random.fold_in(key, 10), have_nt)
    nt_names = [n for n in ens_t if n.startswith('nt_')]
    best_nt = min(nt_names, key=lambda n: ens_t[n]['median_s']) if nt_names else None
    vmap_vs_loop = {}
    for b in (('nt', 'jax', 'structured') if have_nt else ('jax', 'structured')):
      v, l = ens_t[f'{b}_vmap_members']['median_s'], ens_t[f'{b}_loop_members']['median_s']
      vc = ens_t[f'{b}_vmap_members']['cpu_median_s']
      lc = ens_t[f'{b}_loop_members']['cpu_median_s']
      vmap_vs_loop[b] = {'vmap_s': v, 'loop_s': l, 'vmap_beats_loop': v < l, 'vmap_cpu_s': vc,
                         'loop_cpu_s': lc, 'vmap_beats_loop_cpu': vc < lc}
    default = ntk.resolve_backend(dense.DenseMember((1,)).apply)  # 'structured'
    checks['ensemble_variants_agree'] = all(v['rel_err'] < tol for v in ens_t.values())
    result.update({
        'ensemble_ntk': ens_t,
        'kernel_shape': info['kernel_shape'],
        'best_nt': best_nt,
        'best_nt_s': ens_t[best_nt]['median_s'] if best_nt else None,
        'default_backend': default,
        'vmap_s': vmap_vs_loop[default]['vmap_s'],
        'loop_s': vmap_vs_loop[default]['loop_s'],
        'vmap_beats_loop': vmap_vs_loop[default]['vmap_beats_loop'],
        'vmap_vs_loop': vmap_vs_loop,
        'structured_s': ens_t['structured']['median_s'],
        'structured_speedup_vs_best_nt': (ens_t[best_nt]['median_s'] /
                                          ens_t['structured']['median_s']) if best_nt else None,
    })
    print(f"\nensemble NTK: m={cfg['m']} depth={cfg['depth']} width={cfg['width']} "
          f"n0={cfg['input_dim']} N={cfg['num_inputs']} params={flops['params']}")
    print(header)
    for name, v in sorted(ens_t.items(), key=lambda kv: kv[1]['median_s']):
      print(f"{name:28s} {1e3 * v['median_s']:10.3f} {1e3 * v['min_s']:9.3f} "
            f"{1e3 * v['cpu_median_s']:9.3f} {v['rel_err']:9.1e}")
    if best_nt:
      print(f"best neural-tangents: {best_nt} {1e3 * result['best_nt_s']:.3f} ms; structured "
            f"{result['structured_speedup_vs_best_nt']:.1f}x faster")
    for b, v in vmap_vs_loop.items():
      print(f"{b:10s} vmap over members {1e3 * v['vmap_s']:8.3f} ms vs loop "
            f"{1e3 * v['loop_s']:8.3f} ms (CPU {1e3 * v['vmap_cpu_s']:8.3f} vs "
            f"{1e3 * v['loop_cpu_s']:8.3f} ms)")

  if 'diagonal' in sections:
    diag = bench_diagonal(cfg, jax.random.fold_in(key, 20))
    checks['diagonal_variants_agree'] = all(v['rel_err'] < tol
                                            for v in diag['variants'].values())
    result['diagonal'] = diag
    print(f"\ndiagonal at N={diag['num_inputs']}:")
    print(header)
    for name, v in diag['variants'].items():
      print(f"{name:28s} {1e3 * v['median_s']:10.3f} {1e3 * v['min_s']:9.3f} "
            f"{1e3 * v['cpu_median_s']:9.3f} {v['rel_err']:9.1e}")
    print(f"speedup over diag(full): jax {diag['speedup_jax']:.1f}x, "
          f"structured {diag['speedup_structured']:.1f}x")

  if 'monte_carlo' in sections:
    mc = bench_monte_carlo(cfg, jax.random.fold_in(key, 30))
    checks['monte_carlo_agrees'] = mc.get('rel_err', 0.0) < tol
    result['monte_carlo'] = mc
    if 'skipped' in mc:
      print(f"\nMonte Carlo (bottleneck): skipped: {mc['skipped']}")
    else:
      print(f"\nMonte Carlo (bottleneck {mc['cardinality']}x{mc['width']}d, {mc['channels']} "
            f"ch, {mc['spatial']}x{mc['spatial']}): {mc['trials_per_s']:.1f} trials/s "
            f"(NTK entry alone {mc['ntk_only_trials_per_s']:.1f}/s, sampling the weights alone "
            f"{mc['sample_only_trials_per_s']:.1f}/s; rel err {mc['rel_err']:.1e})")

  if 'peak' in sections:
    pk = bench_peak(cfg, jax.random.fold_in(key, 40))
    checks['peak_kernels_agree'] = all(
        pk[k]['rel_err'] < tol for k in ('ensemble_ntk', 'mc_variance', 'mc_variance_one_input')
        if k in pk)
    result['peak'] = pk
    _print_peak(pk)

  result['checks'] = checks
  print(f'checks {checks}')
  cli.write_json(FLAGS.json_out, result)


if __name__ == '__main__':
  cli.run_main(main)
