r"""Theorem 1 (appendix Fig. 3): change of the ensemble NTK during training against m * n.

  python experiments/ntk_dynamics.py --ds=4,6,8,12,16 --steps=300 --seeds=3 \
      --json_out=/tmp/dynamics.json --plot_out=/tmp/dynamics.png

Depth-4 dense collegial ensembles (NTK parameterization, scalar output) on a grid of (m, n)
holding the appendix figure's panels for each d: (a) m = 1, n = d^2; (b) m = n = d; (c) width
``--fixed_width`` with m matching panel (a)'s parameters. Each trains by full-batch gradient
descent on the L2 loss (digits subset, +-1 parity target); the NTK on a probe set is compared
between initialization and the end of training. Slope of log(change) vs log(m n): theory -1.

JSON keys: ``points`` (list of ``m``, ``n``, ``delta_offdiag``, ``delta_frob_rel``, plus
``params``, ``panel``, ``mn``, standard errors and losses), ``slope`` and ``slope_stderr`` (fit of
the quantity chosen by ``--fit_on``), ``fit_frob``, ``fit_offdiag``, ``panel_fits_frob``
(per-panel fits of ``delta_frob_rel``), ``skipped`` (indices of degenerate points left out of
each fit), ``complete``, ``config``, ``seconds``. See ``docs/ABLATION.md``.

The JSON is rewritten after every design (``complete: false`` until the end), so a run that
stops keeps what it measured. A degenerate point (a change of exactly zero, or not finite:
log-log needs ``y > 0``) is reported with a warning and left out of the fit; a fit with fewer
than 3 usable points is null. Exit codes: 0 done (also with skipped points), 1 no slope could
be fitted for ``--fit_on``, 2 bad flags or output paths.
"""

from __future__ import annotations

import time

from absl import flags
from absl import logging

from ce_jax.tools import cli
from ce_jax.tools import guards

FLAGS = flags.FLAGS
flags.DEFINE_string('ds', '4,6,8,12,16', 'comma list of d: designs (1, d^2), (d, d), (m_c, n_c)')
flags.DEFINE_integer('fixed_width', 16, 'panel (c): member width n with m matching (1, d^2)')
flags.DEFINE_integer('depth', 4, 'number of weight matrices of every member')
flags.DEFINE_integer('steps', 300, 'full-batch gradient-descent steps')
flags.DEFINE_float('learning_rate', 1.0, 'gradient-descent step size (time t = lr * steps)')
flags.DEFINE_integer('num_train', 128, 'training examples (digits subset)')
flags.DEFINE_integer('num_probe', 8, 'probe inputs for the kernel (entry [0, 1] is tracked)')
flags.DEFINE_integer('seeds', 3, 'initializations per design (vmapped), averaged')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_string('fit_on', 'frob', 'frob | offdiag: the change reported as slope')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write the figure (PNG) here')


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  from ce_jax import _validate  # pylint: disable=g-import-not-at-top
  from ce_jax.studies import plotting
  from ce_jax.studies import dynamics

  ds = _validate.int_list('--ds', FLAGS.ds)
  fixed_width = _validate.positive_int('--fixed_width', FLAGS.fixed_width)
  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  steps = _validate.positive_int('--steps', FLAGS.steps)
  lr = _validate.finite_positive('--learning_rate', FLAGS.learning_rate)
  num_train = _validate.positive_int('--num_train', FLAGS.num_train)
  num_probe = _validate.positive_int('--num_probe', FLAGS.num_probe, minimum=2)
  seeds = _validate.positive_int('--seeds', FLAGS.seeds)
  fit_on = _validate.choice('--fit_on', FLAGS.fit_on, ('frob', 'offdiag'))

  guards.check_output_file(FLAGS.json_out, '--json_out')
  guards.check_output_file(FLAGS.plot_out, '--plot_out')
  config = {'ds': list(ds), 'fixed_width': fixed_width, 'depth': depth, 'steps': steps,
            'learning_rate': lr, 'num_train': num_train, 'num_probe': num_probe,
            'seeds': seeds, 'seed': FLAGS.seed, 'loss': 'l2', 'optimizer': 'full-batch gd',
            'dataset': 'digits', 'target': 'parity (+1 even, -1 odd)'}
  start = time.time()
  x, y, xp = dynamics.regression_data(num_train, num_probe)
  grid = dynamics.design_grid(ds, fixed_width=fixed_width, input_dim=x.shape[1], depth=depth)
  if len({g.m * g.n for g in grid}) < 2 or len(grid) < 3:
    raise ValueError(f'--ds={FLAGS.ds} gives {len(grid)} designs; need >= 3 with two distinct '
                     'm*n for a slope')
  logging.info('%d designs, %d seeds, %d GD steps (lr %g) on %d digits, %d probes', len(grid),
               seeds, steps, lr, num_train, num_probe)

  def partial(points):
    cli.write_json(FLAGS.json_out, {'points': [p._asdict() for p in points], 'complete': False,
                                    'fit_on': fit_on, 'config': config,
                                    'seconds': time.time() - start})

  result = dynamics.run_dynamics(grid, x, y, xp, depth=depth, steps=steps, learning_rate=lr,
                                 seeds=seeds, seed=FLAGS.seed,
                                 progress=lambda s: logging.info('%s', s), on_point=partial)
  elapsed = time.time() - start
  fit = result.fit_frob if fit_on == 'frob' else result.fit_offdiag
  for quantity, skipped in result.skipped.items():
    key = 'delta_frob_rel' if quantity == 'frob' else 'delta_offdiag'
    for i in skipped:
      p = result.points[i]
      guards.warn(f'design m={p.m} n={p.n} (panel {p.panel}): {key} = {getattr(p, key):.3g} is '
                  f'degenerate (a log-log fit needs > 0); left out of the {quantity} fit')

  print(f'{"panel":>5} {"m":>4} {"n":>4} {"m*n":>6} {"params":>8} {"|dK01|":>10} '
        f'{"dK_F/K_F":>10} {"loss T":>8}')
  for p in result.points:
    print(f'{p.panel:>5} {p.m:>4} {p.n:>4} {p.mn:>6} {p.params:>8} {p.delta_offdiag:>10.3e} '
          f'{p.delta_frob_rel:>10.3e} {p.loss_final:>8.4f}')
  print(f'log-log slope vs m*n (theory -1): frob {result.fit_frob.slope:.3f} +- '
        f'{result.fit_frob.slope_stderr:.3f} (R^2 {result.fit_frob.r2:.2f}); offdiag '
        f'{result.fit_offdiag.slope:.3f} +- {result.fit_offdiag.slope_stderr:.3f} '
        f'(R^2 {result.fit_offdiag.r2:.2f}); {elapsed:.0f} s')
  for panel, f in result.panel_fits.items():
    print(f'  panel ({panel}) frob slope {f.slope:.3f} +- {f.slope_stderr:.3f} '
          f'({f.num_points} points)')

  cli.write_json(FLAGS.json_out, {
      'points': [p._asdict() for p in result.points],
      'slope': fit.slope, 'slope_stderr': fit.slope_stderr, 'fit_on': fit_on,
      'fit_frob': result.fit_frob._asdict(), 'fit_offdiag': result.fit_offdiag._asdict(),
      'panel_fits_frob': {k: v._asdict() for k, v in result.panel_fits.items()},
      'skipped': result.skipped, 'complete': True,
      'config': config,
      'seconds': elapsed,
  })
  if FLAGS.plot_out:
    plotting.plot_dynamics(result, FLAGS.plot_out, fit_on)
    logging.info('wrote %s', FLAGS.plot_out)
  for quantity, f in (('frob', result.fit_frob), ('offdiag', result.fit_offdiag)):
    if f.slope != f.slope and quantity != fit_on:
      guards.warn(f'no {quantity} slope: only {f.num_points} usable points')
  if fit.slope != fit.slope:
    raise guards.RunFailedError(
        f'no {fit_on} slope: only {fit.num_points} of {len(result.points)} points have a '
        f'change > 0 (need >= 3 with two distinct m*n); raise --steps or --learning_rate'
        f'{f"; points in {FLAGS.json_out}" if FLAGS.json_out else ""}')


if __name__ == '__main__':
  guards.run_main(main)
