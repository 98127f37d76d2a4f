"""The whole Algorithm 1 fit, full-weight sampler vs the exact-in-law conditional sampler.

:func:`ce_jax.theory.alpha.estimate_alpha` samples one diagonal NTK entry per trial at every width.
``sampler='full_weights'`` draws every weight of the member and differentiates it (one
program per width); ``sampler='conditional'`` (the default ``'auto'`` for the library's dense
member and bottleneck) draws only the two vectors of each weight matrix the entry touches
(:mod:`ce_jax.theory.conditional`) and samples every width in one program. Same law, other draws, so
the check is statistical: over ``--seeds`` seeds, the two variants' alphas must agree within
their standard errors.

Each timed call is a complete ``estimate_alpha`` (fresh samplers: tracing and compilation
included, as in one ``fit_alpha.py`` run, but not the process start-up), seeds interleaved and
the variants alternating in order. Reported per block: median seconds per variant, the
speed-up ``full_weights_s / conditional_s``, and alpha's mean over seeds, the spread of the
seeds (standard deviation) and the mean of the fits' own standard errors.

  python experiments/benchmark_alpha_fit.py --trials=1000 --seeds=5 \
      --json_out=/tmp/alpha_fit.json
  python experiments/benchmark_alpha_fit.py --quick      # tiny sizes (tests)
"""

from __future__ import annotations

import statistics
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from ce_jax import _validate
from ce_jax.theory import alpha
from ce_jax.tools import benchmarking
from ce_jax.tools import cli

FLAGS = flags.FLAGS
VARIANTS = ('full_weights', 'conditional')

flags.DEFINE_list('blocks', list(alpha.BLOCKS), 'blocks to fit (dense, bottleneck)')
flags.DEFINE_integer('trials', 1000, 'initializations per width')
flags.DEFINE_list('widths', [str(w) for w in alpha.DEFAULT_WIDTHS], 'widths of the fit')
flags.DEFINE_integer('seeds', 5, 'seeds (one timed fit per seed and variant)')
flags.DEFINE_integer('chunk_size', 50, 'initializations per chunk (as fit_alpha.py)')
cli.define_benchmark_flags('16 trials, widths 4,8,16, 2 seeds, dense depth 3 on 16 inputs, '
                           'bottleneck on 16 channels')


def run(blocks, widths, trials, seeds, chunk_size, shapes, log=print):
  """Times and fits every block; returns one result dict per block."""
  results = []
  for block in blocks:
    fits = {v: [] for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    for seed in range(seeds):
      order = VARIANTS if seed % 2 == 0 else VARIANTS[::-1]
      for variant in order:
        t0 = time.perf_counter()
        est = alpha.estimate_alpha(block, widths, trials, jax.random.PRNGKey(seed),
                                   chunk_size=chunk_size, sampler=variant, **shapes[block])
        times[variant].append(time.perf_counter() - t0)
        fits[variant].append((est.fit.alpha, est.fit.alpha_stderr))
        log(f'{block} seed {seed} {variant}: alpha {est.fit.alpha:.4f} +- '
            f'{est.fit.alpha_stderr:.4f}, {times[variant][-1]:.2f} s')
    res = {'block': block, 'widths': list(widths), 'trials': trials, 'seeds': seeds}
    for v in VARIANTS:
      a = np.asarray([f[0] for f in fits[v]])
      res[v] = {'seconds': statistics.median(times[v]), 'seconds_all': times[v],
                'alphas': a.tolist(), 'alpha_stderrs': [f[1] for f in fits[v]],
                'alpha_mean': float(a.mean()),
                'alpha_seed_std': float(a.std(ddof=1)) if len(a) > 1 else float('nan'),
                'alpha_stderr_mean': float(np.mean([f[1] for f in fits[v]]))}
    res['speedup'] = res['full_weights']['seconds'] / res['conditional']['seconds']
    # Difference of the seed means in units of its standard error (from the fits' errors).
    se = np.hypot(res['full_weights']['alpha_stderr_mean'],
                  res['conditional']['alpha_stderr_mean']) / np.sqrt(seeds)
    res['alpha_difference_z'] = float(
        (res['conditional']['alpha_mean'] - res['full_weights']['alpha_mean']) / se)
    results.append(res)
  return results


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  blocks = [b.strip() for b in FLAGS.blocks if b.strip()]
  if not blocks:
    raise ValueError(f'blocks must name at least one of {", ".join(alpha.BLOCKS)}, got []')
  for b in blocks:
    _validate.choice('blocks', b, alpha.BLOCKS)
  trials = _validate.positive_int('trials', FLAGS.trials, minimum=2)
  widths = _validate.distinct('widths', _validate.int_list('widths', FLAGS.widths))
  seeds = _validate.positive_int('seeds', FLAGS.seeds)
  chunk_size = _validate.positive_int('chunk_size', FLAGS.chunk_size)
  shapes = {'dense': {}, 'bottleneck': {}}
  if FLAGS.quick:
    trials, widths, seeds, chunk_size = 16, [4, 8, 16], 2, 8
    shapes = {'dense': {'depth': 3, 'input_dim': 16},
              'bottleneck': {'in_channels': 16, 'out_channels': 16}}
  results = run(blocks, widths, trials, seeds, chunk_size, shapes, log=logging.info)
  print(f'Algorithm 1 fit (estimate_alpha, widths {",".join(map(str, widths))}, {trials} trials '
        f'per width, chunks of {chunk_size}), median of {seeds} seeds (seconds, compilation '
        f'included)')
  print(f'{"block":<11} {"full_weights":>12} {"conditional":>12} {"speed-up":>9} '
        f'{"alpha full":>17} {"alpha cond.":>17} {"z":>6}')
  for r in results:
    f, c = r['full_weights'], r['conditional']
    print(f'{r["block"]:<11} {f["seconds"]:12.2f} {c["seconds"]:12.2f} {r["speedup"]:9.2f} '
          f'{f["alpha_mean"]:9.4f} +- {f["alpha_stderr_mean"]:.3f} '
          f'{c["alpha_mean"]:9.4f} +- {c["alpha_stderr_mean"]:.3f} '
          f'{r["alpha_difference_z"]:6.2f}')
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'Algorithm 1 fit: full-weight vs conditional sampler',
      'settings': {'blocks': blocks, 'trials': trials, 'widths': widths, 'seeds': seeds,
                   'chunk_size': chunk_size, 'quick': FLAGS.quick, 'dtype': 'float32'},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(),
      'blocks': results})


if __name__ == '__main__':
  cli.run_main(main)
