r"""Algorithm 1 (appendix Fig. 2): Monte-Carlo E[K^2]/E[K]^2 of one diagonal NTK entry, fit alpha.

  python experiments/fit_alpha.py --block=bottleneck --trials=2000 \
      --json_out=/tmp/alpha.json --plot_out=/tmp/alpha.png

JSON keys: ``block``, ``alpha``, ``alpha_stderr``, ``r2``, ``trials``, ``points`` (list of
``width``, ``fan_in_sum``, ``ratio``, ``ratio_stderr``), plus ``fan_in_convention``,
``intercept``, ``intercept_fit`` (alpha, stderr, intercept of the fit with intercept),
``chi2_per_dof``, ``input_distribution``, ``seed``, ``fit_intercept`` (the recipe), ``origin_fit``,
``fits`` (the fit under both conventions). The default recipe (widths 4..256, intercept,
channels convention) gives the paper's 1.60 on the bottleneck; see ``docs/ALPHA.md``.

The JSON is written after every width (``complete: false``, the points so far, no ``alpha``, so
``search --alpha_from`` refuses a partial file) and at the end (``complete: true``). A
degenerate fit (alpha <= 0, e.g. ratios below 1, or an undefined R^2) is printed as a warning
and listed under ``warnings`` (empty for a sound fit). Exit codes: 0 done, 1 the run failed,
2 bad flags or output paths (checked before any work).
"""

from __future__ import annotations

import time

from absl import flags
from absl import logging

from ce_jax.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('block', 'bottleneck', 'dense | bottleneck')
flags.DEFINE_string('widths', '4,8,16,32,64,128,256', 'comma list of widths n (the default '
                    'recipe leaves out the heavy-tailed n = 1, 2)')
flags.DEFINE_integer('trials', 2000, 'random initializations per width (>= 2)')
flags.DEFINE_string('fan_in_convention', 'channels', 'channels | kernel (bottleneck S)')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write a PNG like appendix Fig. 2 here')
flags.DEFINE_integer('depth', 6, 'dense block: number of weight matrices')
flags.DEFINE_string('input_distribution', 'gaussian',
                    'bottleneck input: gaussian | relu | center_pixel | constant')
flags.DEFINE_boolean('intercept', True, 'fit log ratio = a + alpha S (the default recipe); '
                     '--nointercept fits through 0')
flags.DEFINE_integer('chunk_size', 50, 'initializations per vmapped chunk')
flags.DEFINE_string('sampler', 'auto', 'auto | conditional | full_weights: auto samples the '
                    'entry exactly in law without forming the weight matrices (ce_jax.theory.conditional)'
                    ' where it applies; full_weights samples every weight')


def _finite_or_none(v):
  import math  # pylint: disable=g-import-not-at-top
  return v if not isinstance(v, float) or math.isfinite(v) else None


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  import jax  # pylint: disable=g-import-not-at-top
  from ce_jax import _validate  # pylint: disable=g-import-not-at-top
  from ce_jax.studies import plotting
  from ce_jax.theory import alpha
  from ce_jax.design import blocks

  block = _validate.choice('--block', FLAGS.block, alpha.BLOCKS)
  widths = _validate.distinct('--widths', _validate.int_list('--widths', FLAGS.widths))
  trials = _validate.positive_int('--trials', FLAGS.trials, minimum=2)
  convention = _validate.choice('--fan_in_convention', FLAGS.fan_in_convention,
                                blocks.FAN_IN_CONVENTIONS)
  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  dist = _validate.choice('--input_distribution', FLAGS.input_distribution,
                          alpha.INPUT_DISTRIBUTIONS)
  chunk = _validate.positive_int('--chunk_size', FLAGS.chunk_size)
  sampler = _validate.choice('--sampler', FLAGS.sampler, alpha.SAMPLERS)

  start = time.time()
  last = [0.0]

  # Work per trial grows with the width: the ETA weights each width by its square.
  work = [float(w) ** 2 + 64.0 for w in widths]

  def progress(i, done, total):
    now = time.time()
    if done == total or now - last[0] > 10:
      last[0] = now
      frac = (sum(work[:i]) + work[i] * done / total) / sum(work)
      eta = (now - start) * (1 - frac) / max(frac, 1e-9)
      logging.info('width %d (%d/%d): %d/%d trials, %.0f s, about %.0f s left', widths[i], i + 1,
                   len(widths), done, total, now - start, eta)

  settings = {'block': block, 'trials': trials, 'widths': list(widths),
              'fan_in_convention': convention, 'fit_intercept': FLAGS.intercept,
              'input_distribution': dist, 'seed': FLAGS.seed, 'depth': depth,
              'sampler': sampler}
  done = []

  def on_point(p):  # the points so far, written as they come
    done.append(p)
    cli.write_json(FLAGS.json_out, {
        **settings, 'complete': False,
        'points': [{'width': q.width, 'fan_in_sum': q.fan_in_sum, 'ratio': q.ratio,
                    'ratio_stderr': q.ratio_stderr} for q in done],
        'seconds': time.time() - start})

  key = jax.random.PRNGKey(FLAGS.seed)
  est = alpha.estimate_alpha(block, widths, trials, key, fan_in_convention=convention,
                             depth=depth, input_distribution=dist, intercept=FLAGS.intercept,
                             chunk_size=chunk, sampler=sampler, progress=progress,
                             on_point=on_point)
  fit = est.fit
  # The other recipe on the same Monte Carlo, for comparison.
  other = alpha.fit_alpha([p.fan_in_sum for p in est.points], [p.ratio for p in est.points],
                          [p.ratio_stderr for p in est.points], intercept=not FLAGS.intercept)
  with_int = fit if FLAGS.intercept else other
  elapsed = time.time() - start

  print(f'{"width":>6} {"S":>9} {"ratio":>10} {"stderr":>9} {"fit":>10}')
  import math  # pylint: disable=g-import-not-at-top
  for p in est.points:
    print(f'{p.width:>6} {p.fan_in_sum:>9.5f} {p.ratio:>10.5f} {p.ratio_stderr:>9.5f} '
          f'{math.exp(fit.intercept + fit.alpha * p.fan_in_sum):>10.5f}')
  print(f'block={block} convention={convention} trials={trials} input={dist}: '
        f'alpha = {fit.alpha:.4f} +- {fit.alpha_stderr:.4f}, R^2 = {fit.r2:.4f}, '
        f'chi2/dof = {fit.chi2_per_dof:.3g} ({"with" if FLAGS.intercept else "no"} intercept); '
        + f'{"through 0" if FLAGS.intercept else "with intercept"}: alpha = {other.alpha:.4f} '
        f'+- {other.alpha_stderr:.4f}; kernel convention: alpha = {est.fits["kernel"].alpha:.4f}'
        f' +- {est.fits["kernel"].alpha_stderr:.4f}, channels: {est.fits["channels"].alpha:.4f}'
        f' +- {est.fits["channels"].alpha_stderr:.4f}; {elapsed:.1f} s')
  cli.print_warnings(fit.warnings)

  cli.write_json(FLAGS.json_out, {
      'complete': True, 'warnings': list(fit.warnings),
      'block': block, 'alpha': fit.alpha, 'alpha_stderr': fit.alpha_stderr,
      'r2': _finite_or_none(fit.r2),
      'trials': trials,
      'points': [{'width': p.width, 'fan_in_sum': p.fan_in_sum, 'ratio': p.ratio,
                  'ratio_stderr': p.ratio_stderr} for p in est.points],
      'fan_in_convention': convention, 'intercept': fit.intercept,
      'covariance': fit.covariance,
      'chi2_per_dof': _finite_or_none(fit.chi2_per_dof),
      'fit_intercept': FLAGS.intercept,
      'intercept_fit': {k: _finite_or_none(v) for k, v in with_int._asdict().items()},
      'origin_fit': {k: _finite_or_none(v) for k, v in
                     (other if FLAGS.intercept else fit)._asdict().items()},
      'fits': {c: {k: _finite_or_none(v) for k, v in f._asdict().items()}
               for c, f in est.fits.items()},
      'input_distribution': dist, 'seed': FLAGS.seed, 'depth': depth, 'sampler': sampler,
      'seconds': elapsed,
  })
  if FLAGS.plot_out:
    plotting.plot_alpha_fit(est, FLAGS.plot_out, fan_in_convention=convention, depth=depth)
    logging.info('wrote %s', FLAGS.plot_out)


if __name__ == '__main__':
  cli.run_main(main)
