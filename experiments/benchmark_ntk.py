"""Benchmark of the empirical NTK paths of ce_jax (issue 2 section 7, issue 6 section 3).

For a collegial ensemble of ``m`` dense members (default m = 16, 64 -> 5 x 32 -> 1, 64 inputs):

* the ensemble NTK by ``jax.vmap`` over stacked members vs a Python loop over members vs
  neural-tangents on the block-diagonal single model (``vmap_axes=0`` / none,
  JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS) vs the closed-form
  ``'structured'`` kernel;
* the diagonal fast path ``K(x, x)`` vs the diagonal of the full NTK at 256 inputs;
* Monte-Carlo trials per second of one NTK diagonal entry of the NTK bottleneck block.

Every variant is checked against a reference (relative error in the JSON); timings are medians
over ``--repeats`` interleaved rounds after a warm-up (compile) call, with
``jax.block_until_ready``. ``--quick`` runs tiny sizes (for the test).

  python experiments/benchmark_ntk.py --json_out=/tmp/bench_ntk.json
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
from ce_jax import cli
from ce_jax import ntk
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
                bottleneck_channels=4, bottleneck_spatial=3)
  return dict(m=FLAGS.m, depth=FLAGS.depth, width=FLAGS.width, input_dim=FLAGS.input_dim,
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


def main(argv):
  del argv
  cfg = _config()
  for name in ('m', 'width', 'input_dim', 'num_inputs', 'diag_inputs', 'repeats', 'mc_trials'):
    _validate.positive_int(name, cfg[name])
  _validate.positive_int('depth', cfg['depth'], minimum=2)
  key = jax.random.PRNGKey(FLAGS.seed)
  have_nt = 'nt' in ntk.available_backends()
  flops = flop_counts(cfg['m'], cfg['depth'], cfg['width'], cfg['input_dim'], cfg['num_inputs'])

  logging.info('ensemble NTK, config %s', cfg)
  ens_t, info = bench_ensemble(cfg, jax.random.fold_in(key, 10), have_nt)
  diag = bench_diagonal(cfg, jax.random.fold_in(key, 20))
  mc = bench_monte_carlo(cfg, jax.random.fold_in(key, 30))

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
  tol = 1e-4
  checks = {
      'ensemble_variants_agree': all(v['rel_err'] < tol for v in ens_t.values()),
      'diagonal_variants_agree': all(v['rel_err'] < tol for v in diag['variants'].values()),
      'monte_carlo_agrees': mc.get('rel_err', 0.0) < tol,
  }
  result = {
      'config': cfg,
      'versions': {'jax': jax.__version__, 'python': platform.python_version(),
                   'device': str(jax.devices()[0]), 'neural_tangents': have_nt},
      'flops': flops,
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
      'diagonal': diag,
      'monte_carlo': mc,
      'checks': checks,
  }

  print(f"\nensemble NTK: m={cfg['m']} depth={cfg['depth']} width={cfg['width']} "
        f"n0={cfg['input_dim']} N={cfg['num_inputs']} params={flops['params']}")
  header = f"{'variant':28s} {'median ms':>10s} {'min ms':>9s} {'cpu ms':>9s} {'rel err':>9s}"
  print(header)
  for name, v in sorted(ens_t.items(), key=lambda kv: kv[1]['median_s']):
    print(f"{name:28s} {1e3 * v['median_s']:10.3f} {1e3 * v['min_s']:9.3f} "
          f"{1e3 * v['cpu_median_s']:9.3f} {v['rel_err']:9.1e}")
  print(f"\ndiagonal at N={diag['num_inputs']}:")
  print(header)
  for name, v in diag['variants'].items():
    print(f"{name:28s} {1e3 * v['median_s']:10.3f} {1e3 * v['min_s']:9.3f} "
          f"{1e3 * v['cpu_median_s']:9.3f} {v['rel_err']:9.1e}")
  print(f"speedup over diag(full): jax {diag['speedup_jax']:.1f}x, "
        f"structured {diag['speedup_structured']:.1f}x")
  if 'skipped' in mc:
    print(f"\nMonte Carlo (bottleneck): skipped: {mc['skipped']}")
  else:
    print(f"\nMonte Carlo (bottleneck {mc['cardinality']}x{mc['width']}d, {mc['channels']} ch, "
          f"{mc['spatial']}x{mc['spatial']}): {mc['trials_per_s']:.1f} trials/s "
          f"(NTK entry alone {mc['ntk_only_trials_per_s']:.1f}/s, sampling the weights alone "
          f"{mc['sample_only_trials_per_s']:.1f}/s; rel err {mc['rel_err']:.1e})")
  if best_nt:
    print(f"best neural-tangents: {best_nt} {1e3 * result['best_nt_s']:.3f} ms; structured "
          f"{result['structured_speedup_vs_best_nt']:.1f}x faster")
  for b, v in vmap_vs_loop.items():
    print(f"{b:10s} vmap over members {1e3 * v['vmap_s']:8.3f} ms vs loop "
          f"{1e3 * v['loop_s']:8.3f} ms (CPU {1e3 * v['vmap_cpu_s']:8.3f} vs "
          f"{1e3 * v['loop_cpu_s']:8.3f} ms)")
  print(f'checks {checks}')
  cli.write_json(FLAGS.json_out, result)


if __name__ == '__main__':
  cli.run_main(main)
