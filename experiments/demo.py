r"""The main job (`make demo`): Algorithm 2 end to end on real data, in minutes on 2 CPU cores.

1. Fit alpha for the dense member by Monte Carlo (Algorithm 1, short run).
2. Search the primal and dual collegial ensembles for a dense baseline on digits (Sec. 3).
3. Train the baseline, the primal and the dual ensembles on scikit-learn's handwritten digits
   (real data, offline) over several seeds with the pmap trainer (checkpoints, resume).
4. Print a table (params, Var(K_e)/Var(K_s), test error +- standard error) and write figures and
   ``<workdir>/summary.json`` with keys ``alpha``, ``search``, ``models``.

    python experiments/demo.py --workdir=runs/demo
    python experiments/demo.py --workdir=/tmp/demo --quick     # seconds, for tests

Finished trainings are never redone: rerunning the command reuses every run whose
``summary.json`` exists with exactly the same settings, resumes interrupted ones from their
checkpoints, extends a run asked for more epochs, and retrains (from scratch) a run whose
settings changed otherwise. ``--quick`` sets only the flags not given on the command line.
``<workdir>/.lock`` is held while the demo runs (a second demo on the same workdir refuses);
``--fail_on_no_progress`` (the default) makes a training that did not learn (loss at chance or
not improving) fail the demo with exit code 1.

Exit codes: 0 done, 1 a run failed (NaN/Inf, no progress, a full disk), 2 bad flags or workdir.
"""

from __future__ import annotations

import importlib.util
import json
import logging as pylogging
import os
import time

import jax
import numpy as np
from absl import flags

from ce_jax import _validate
from ce_jax.design import solver
from ce_jax.tools import cli, guards
from ce_jax.studies import plotting
from ce_jax.theory import alpha as alpha_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/demo', 'where runs, figures and summary.json go')
flags.DEFINE_integer('depth', 4, 'baseline member depth (weight matrices)')
flags.DEFINE_integer('width', 64, 'baseline member hidden width')
flags.DEFINE_list('alpha_widths', ['8', '16', '32', '64', '128'],
                  'widths of the alpha fit (n >= 8: smaller widths bias it low, docs/ALPHA.md)')
flags.DEFINE_integer('alpha_trials', 1000, 'Monte-Carlo initializations per width')
flags.DEFINE_integer('seeds', 5, 'training seeds per design')
flags.DEFINE_integer('epochs', 20, 'training epochs per run')
flags.DEFINE_integer('seed', 0, 'base seed (alpha fit and first training seed)')
flags.DEFINE_bool('quick', False, 'tiny settings (tests): few trials, 2 seeds, 1 epoch '
                  '(for the flags not given explicitly)')
flags.DEFINE_bool('fail_on_no_progress', True,
                  'exit 1 when a training does not learn (train loss at chance or stalled)')

QUICK = {'alpha_widths': (8, 32, 128), 'alpha_trials': 24, 'seeds': 2, 'epochs': 1}

INPUT_DIM, NUM_CLASSES = 64, 10  # digits: 8x8 images, 10 classes


def fit_alpha(widths, trials, depth, seed, cache_path):
  """Algorithm 1 for the dense member; reuses ``cache_path`` if it holds the same settings."""
  settings = {'widths': list(widths), 'trials': trials, 'depth': depth, 'seed': seed,
              'input_dim': INPUT_DIM}
  if os.path.exists(cache_path):
    with open(cache_path) as f:
      cached = json.load(f)
    if cached.get('settings') == settings:
      est = alpha_lib.AlphaEstimate(
          cached['block'], alpha_lib.AlphaFit(**cached['fit']),
          tuple(alpha_lib.AlphaPoint(**p) for p in cached['points']), cached['trials'])
      print(f'  alpha = {est.fit.alpha:.3f} +- {est.fit.alpha_stderr:.3f}: reused {cache_path}',
            flush=True)
      return est
  t0 = time.time()

  def progress(i, done, total):
    if done == total:
      print(f'  alpha fit: width {widths[i]:>4} done ({total} initializations)', flush=True)

  # Through the origin, as measured in docs/RESULTS.md: for the dense member on n >= 8 the
  # two fits agree within their errors (docs/ALPHA.md).
  est = alpha_lib.estimate_alpha('dense', widths, trials, jax.random.PRNGKey(seed), depth=depth,
                                 input_dim=INPUT_DIM, intercept=False, progress=progress)
  print(f'  alpha = {est.fit.alpha:.3f} +- {est.fit.alpha_stderr:.3f} (R^2 {est.fit.r2:.3f}, '
        f'{trials} trials x {len(widths)} widths, {time.time() - t0:.1f}s)', flush=True)
  cli.write_json(cache_path, {'settings': settings, **est._asdict()})
  return est


def digits_config():
  """experiments/configs/digits.py's config (default.py's keys, the digits recipe), loaded from
  its path as ``--config=`` does: the binary needs no ``sys.path`` entry for the repository."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'digits.py')
  found = importlib.util.spec_from_file_location('ce_jax_config_digits', path)
  module = importlib.util.module_from_spec(found)
  found.loader.exec_module(module)
  return module.get_config()


def train_design(name, m, n, depth, seeds, epochs, workdir, fail_on_no_progress=True):
  """Trains one design over ``seeds`` (reusing finished runs with the same settings); returns
  the summaries."""
  from ce_jax.training import train
  summaries = []
  for s in seeds:
    run_dir = os.path.join(workdir, 'runs', name, f'seed_{s}')
    config = digits_config()
    config.m, config.n, config.depth = int(m), int(n), int(depth)
    config.num_epochs = int(epochs)
    config.seed = int(s)
    config.fail_on_no_progress = bool(fail_on_no_progress)
    summary, changed = guards.reusable_run(run_dir, config)
    if summary is not None:
      if summary.get('no_progress') and fail_on_no_progress:
        raise guards.NoProgressError(f'{name} seed {s}: {summary["no_progress"]}')
      summaries.append(summary)
      print(f'  {name:<8} seed {s}: reused {os.path.join(run_dir, "summary.json")}', flush=True)
      continue
    if changed:
      print(f'  {name:<8} seed {s}: settings changed ({changed}): retraining', flush=True)
      config.overwrite = True
    t0 = time.time()
    try:
      summary = train.train_and_evaluate(config, run_dir)
    except guards.NoProgressError as e:
      raise guards.NoProgressError(f'{name} seed {s}: {e}') from None
    summaries.append(summary)
    print(f'  {name:<8} seed {s}: test error {100 * summary["test_error_top1"]:.2f}% '
          f'({summary["steps"]} steps, {time.time() - t0:.1f}s)', flush=True)
  return summaries


def model_entry(name, m, n, variance_ratio, summaries, seeds):
  errors = np.array([s['test_error_top1'] for s in summaries], dtype=float)
  stderr = float(errors.std(ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else float('nan')
  return {'name': name, 'm': int(m), 'n': int(n), 'params': int(summaries[0]['params']),
          'variance_ratio': float(variance_ratio), 'test_error_mean': float(errors.mean()),
          'test_error_stderr': stderr, 'test_errors': errors.tolist(), 'seeds': list(seeds)}


def format_models(models):
  return cli.design_table(models, [('Var(K_e)/Var(K_s)', 'variance_ratio')])


def main(argv):
  pylogging.getLogger('absl').setLevel(pylogging.WARNING)
  pylogging.getLogger('jax._src.xla_bridge').setLevel(pylogging.WARNING)
  del argv  # positional arguments are a usage error (cli.run_main)
  if FLAGS.quick:  # only where the user did not give the flag
    for name, value in QUICK.items():
      if not FLAGS[name].present:
        FLAGS[name].value = list(map(str, value)) if isinstance(value, tuple) else value
  depth = _validate.positive_int('depth', FLAGS.depth, minimum=2)
  width = _validate.positive_int('width', FLAGS.width)
  widths = _validate.int_list('alpha_widths', FLAGS.alpha_widths)
  trials = _validate.positive_int('alpha_trials', FLAGS.alpha_trials, minimum=2)
  n_seeds = _validate.positive_int('seeds', FLAGS.seeds)
  epochs = _validate.positive_int('epochs', FLAGS.epochs)
  workdir = FLAGS.workdir
  guards.check_output_dir(workdir, '--workdir', required=True)
  with guards.WorkdirLock(workdir):
    run_demo(workdir, depth, width, widths, trials, n_seeds, epochs)


def run_demo(workdir, depth, width, widths, trials, n_seeds, epochs):
  """Steps 1-3 and the summary (the workdir is locked)."""
  t_start = time.time()

  print(f'[1/3] Algorithm 1: fit alpha for the depth-{depth} dense member', flush=True)
  est = fit_alpha(widths, trials, depth, FLAGS.seed, os.path.join(workdir, 'alpha.json'))
  alpha = float(est.fit.alpha)
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f'the alpha fit gave {alpha!r}; raise --alpha_trials')
  plotting.plot_alpha_fit(est, os.path.join(workdir, 'alpha_fit.png'), depth=depth)

  print(f'[2/3] search: baseline 1x{width} (depth {depth}, {INPUT_DIM} inputs, '
        f'{NUM_CLASSES} outputs)', flush=True)
  result = solver.search('dense', alpha, depth=depth, width=width, input_dim=INPUT_DIM,
                         num_outputs=NUM_CLASSES, max_width=width)
  print(solver.format_result(result), flush=True)
  plotting.plot_search(result, os.path.join(workdir, 'search.png'))

  print(f'[3/3] train on digits: {n_seeds} seeds x {epochs} epochs per design', flush=True)
  seeds = [FLAGS.seed + i for i in range(n_seeds)]
  designs = [('baseline', 1, width, 1.0),
             ('primal', result.primal.m_int, result.primal.n, result.primal.variance_ratio),
             ('dual', result.dual.m_int, result.dual.n, result.dual.variance_ratio)]
  models = []
  for name, m, n, vr in designs:
    summaries = train_design(name, m, n, depth, seeds, epochs, workdir,
                             fail_on_no_progress=FLAGS.fail_on_no_progress)
    models.append(model_entry(name, m, n, vr, summaries, seeds))

  print(format_models(models), flush=True)
  plotting.plot_design_errors(models, os.path.join(workdir, 'test_error.png'),
                              title=f'digits, depth {depth}, alpha {alpha:.2f}')
  summary = {'alpha': {'alpha': alpha, 'alpha_stderr': float(est.fit.alpha_stderr),
                       'r2': float(est.fit.r2), 'trials': trials, 'widths': list(widths),
                       'depth': depth},
             'search': solver.result_to_json(result),
             'models': models,
             'wall_s': time.time() - t_start}
  cli.write_json(os.path.join(workdir, 'summary.json'), summary)
  print(f'wrote {os.path.join(workdir, "summary.json")} and figures in {workdir} '
        f'({time.time() - t_start:.0f}s)', flush=True)


if __name__ == '__main__':
  guards.run_main(main)
