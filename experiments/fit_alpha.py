r"""Algorithm 1 (appendix Fig. 2): Monte-Carlo E[K^2]/E[K]^2 of one diagonal NTK entry, fit alpha.

  python experiments/fit_alpha.py --block=bottleneck --trials=2000 \
      --json_out=/tmp/alpha.json --plot_out=/tmp/alpha.png

JSON keys: ``block``, ``alpha``, ``alpha_stderr``, ``r2``, ``trials``, ``points`` (list of
``width``, ``fan_in_sum``, ``ratio``, ``ratio_stderr``), plus ``fan_in_convention``,
``intercept``, ``intercept_fit`` (alpha, stderr, intercept of the fit with intercept),
``chi2_per_dof``, ``input_distribution``, ``seed``. See ``docs/ALPHA.md``.
"""

from __future__ import annotations

import time

from absl import flags
from absl import logging

from ce_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('block', 'bottleneck', 'dense | bottleneck')
flags.DEFINE_string('widths', '1,2,4,8,16,32,64,128,256', 'comma list of widths n')
flags.DEFINE_integer('trials', 2000, 'random initializations per width (>= 2)')
flags.DEFINE_string('fan_in_convention', 'channels', 'channels | kernel (bottleneck S)')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write a PNG like appendix Fig. 2 here')
flags.DEFINE_integer('depth', 6, 'dense block: number of weight matrices')
flags.DEFINE_string('input_distribution', 'gaussian',
                    'bottleneck input: gaussian | relu | center_pixel | constant')
flags.DEFINE_boolean('intercept', False, 'fit log ratio = a + alpha S (default: through 0)')
flags.DEFINE_integer('chunk_size', 50, 'initializations per vmapped chunk')


def _finite_or_none(v):
  import math  # pylint: disable=g-import-not-at-top
  return v if not isinstance(v, float) or math.isfinite(v) else None


def plot(path, block, points, fit, convention, depth):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ce_jax import alpha as alpha_lib  # pylint: disable=g-import-not-at-top

  w = np.array([p.width for p in points])
  s = np.array([p.fan_in_sum for p in points])
  r = np.array([p.ratio for p in points])
  se = np.array([p.ratio_stderr for p in points])
  grid = np.unique(np.geomspace(w.min(), w.max(), 200).round().astype(int))
  s_grid = np.array([alpha_lib.fan_in_sum(block, int(n), depth=depth,
                                          fan_in_convention=convention) for n in grid])
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  ax = axes[0]
  ax.errorbar(w, r, yerr=se, fmt='o', capsize=3, label='Monte Carlo')
  ax.plot(grid, np.exp(fit.intercept + fit.alpha * s_grid), '-',
          label=f'exp({fit.alpha:.2f} S(n))')
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('width n')
  ax.set_ylabel(r'$E[K^2] / E[K]^2$')
  ax.set_title(f'{block}: second moment of a diagonal NTK entry')
  ax.legend()
  ax = axes[1]
  ax.errorbar(s, np.log(r), yerr=se / r, fmt='o', capsize=3, label='Monte Carlo')
  ss = np.linspace(0, s.max(), 100)
  ax.plot(ss, fit.intercept + fit.alpha * ss, '-',
          label=rf'$\alpha$ = {fit.alpha:.3f} $\pm$ {fit.alpha_stderr:.3f}, $R^2$ = {fit.r2:.3f}')
  ax.set_xlabel(f'S (fan-in sum, {convention})' if block == 'bottleneck' else 'S = sum 1/n_l')
  ax.set_ylabel(r'log($E[K^2] / E[K]^2$)')
  ax.legend()
  fig.tight_layout()
  cli.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected positional arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  from ce_jax import _validate, alpha, blocks  # pylint: disable=g-import-not-at-top

  block = _validate.choice('--block', FLAGS.block, alpha.BLOCKS)
  widths = _validate.int_list('--widths', FLAGS.widths)
  trials = _validate.positive_int('--trials', FLAGS.trials, minimum=2)
  convention = _validate.choice('--fan_in_convention', FLAGS.fan_in_convention,
                                blocks.FAN_IN_CONVENTIONS)
  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  dist = _validate.choice('--input_distribution', FLAGS.input_distribution,
                          alpha.INPUT_DISTRIBUTIONS)
  chunk = _validate.positive_int('--chunk_size', FLAGS.chunk_size)

  start = time.time()
  last = [0.0]

  def progress(i, done, total):
    now = time.time()
    if done == total or now - last[0] > 10:
      last[0] = now
      logging.info('width %d (%d/%d): %d/%d trials, %.0f s', widths[i], i + 1, len(widths),
                   done, total, now - start)

  key = jax.random.PRNGKey(FLAGS.seed)
  est = alpha.estimate_alpha(block, widths, trials, key, fan_in_convention=convention,
                             depth=depth, input_distribution=dist, intercept=FLAGS.intercept,
                             chunk_size=chunk, progress=progress)
  fit = est.fit
  if FLAGS.intercept:
    with_int = fit
  elif len(est.points) >= 2:
    with_int = alpha.fit_alpha([p.fan_in_sum for p in est.points], [p.ratio for p in est.points],
                               [p.ratio_stderr for p in est.points], intercept=True)
  else:
    with_int = None
  elapsed = time.time() - start

  print(f'{"width":>6} {"S":>9} {"ratio":>10} {"stderr":>9} {"fit":>10}')
  import math  # pylint: disable=g-import-not-at-top
  for p in est.points:
    print(f'{p.width:>6} {p.fan_in_sum:>9.5f} {p.ratio:>10.5f} {p.ratio_stderr:>9.5f} '
          f'{math.exp(fit.intercept + fit.alpha * p.fan_in_sum):>10.5f}')
  print(f'block={block} convention={convention} trials={trials} input={dist}: '
        f'alpha = {fit.alpha:.4f} +- {fit.alpha_stderr:.4f}, R^2 = {fit.r2:.4f}, '
        f'chi2/dof = {fit.chi2_per_dof:.3g} ({"with" if FLAGS.intercept else "no"} intercept); '
        + ('' if with_int is None else
           f'with intercept: alpha = {with_int.alpha:.4f} +- {with_int.alpha_stderr:.4f}, '
           f'a = {with_int.intercept:.4f} +- {with_int.intercept_stderr:.4f}; ')
        + f'{elapsed:.1f} s')

  cli.write_json(FLAGS.json_out, {
      'block': block, 'alpha': fit.alpha, 'alpha_stderr': fit.alpha_stderr,
      'r2': _finite_or_none(fit.r2),
      'trials': trials,
      'points': [{'width': p.width, 'fan_in_sum': p.fan_in_sum, 'ratio': p.ratio,
                  'ratio_stderr': p.ratio_stderr} for p in est.points],
      'fan_in_convention': convention, 'intercept': fit.intercept,
      'chi2_per_dof': _finite_or_none(fit.chi2_per_dof),
      'intercept_fit': None if with_int is None else {
          k: _finite_or_none(v) for k, v in with_int._asdict().items()},
      'input_distribution': dist, 'seed': FLAGS.seed, 'depth': depth,
      'seconds': elapsed,
  })
  if FLAGS.plot_out:
    plot(FLAGS.plot_out, block, est.points, fit, convention, depth)
    logging.info('wrote %s', FLAGS.plot_out)


if __name__ == '__main__':
  cli.run_main(main)
