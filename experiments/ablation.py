r"""Fig. 4 (Section 4.1): test error along the primal and dual curves of a dense baseline.

  python experiments/ablation.py --dataset=digits --repetitions=10 --epochs=20 \
      --json_out=/tmp/ablation.json --plot_out=/tmp/ablation.png

Baseline: one NTK-parameterized dense member of depth 6 and width 200 (ten outputs, softmax
cross-entropy). Primal designs keep the total parameters (m = round(beta(n~)/beta(n))) and vary
Var(K) ~ (exp(alpha S(n)) - 1)/m; dual designs keep Var(K) (ratio ~ 1) and vary parameters.
Every design trains ``--repetitions`` times with Adam in ONE compiled program (``jax.vmap`` over
seeds inside a jitted ``lax.scan``); repetition r uses seed ``fold_in(PRNGKey(seed), r)``.

JSON keys: ``primal`` and ``dual`` (lists of ``n``, ``m``, ``params``, ``variance_ratio``,
``test_error_mean``, ``test_error_stderr``), ``spearman_primal`` (rank correlation of the error
with Var(K) along the primal curve; null with fewer than 3 designs), plus
``spearman_primal_pvalue``, ``spearman_dual_params``, ``baseline``, ``config`` and ``seconds``.
See ``docs/ABLATION.md``.

Each design row also has ``failed_repetitions`` (repetitions whose training loss or parameters
became NaN/Inf: left out of the means, which are null when all failed), ``no_progress``
(repetitions whose loss ended at chance or stopped improving) and ``final_train_losses``; the
top level has ``failed`` and ``no_progress`` (counts). Failed repetitions make the binary exit 1
after writing the JSON, with one line; so do repetitions without progress under
``--fail_on_no_progress`` (the default; ``--nofail_on_no_progress`` only warns).
``<json_out>.lock`` is held while it runs. Exit codes: 0 done, 1 failed repetitions, 2 bad flags.
The JSON is rewritten after every design (``complete: false``, the rows so far) and at the end
(``complete: true``).
"""

from __future__ import annotations

import os
import time

from absl import flags
from absl import logging

from ce_jax.tools import cli
from ce_jax.tools import guards

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', 'digits', 'digits (offline, default) | mnist (tfds, if prepared)')
flags.DEFINE_integer('repetitions', 10, 'trainings per design (vmapped over seeds; paper: 100)')
flags.DEFINE_integer('epochs', 20, 'training epochs (paper: 70)')
flags.DEFINE_float('alpha', 3.65, 'variance-law exponent of the dense member (docs/ALPHA.md)')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write the four-panel figure (PNG) here')
flags.DEFINE_integer('baseline_width', 200, 'width n~ of the baseline member')
flags.DEFINE_integer('depth', 6, 'number of weight matrices of every member')
flags.DEFINE_integer('num_primal', 6, 'number of primal designs (geometric widths)')
flags.DEFINE_integer('num_dual', 6, 'number of dual designs (geometric multiplicities)')
flags.DEFINE_integer('min_width', 4, 'smallest member width on either curve')
flags.DEFINE_string('primal_widths', None, 'explicit comma list of primal widths (overrides)')
flags.DEFINE_string('dual_multiplicities', None, 'explicit comma list of dual m (overrides)')
flags.DEFINE_integer('batch_size', 128, 'minibatch size')
flags.DEFINE_float('learning_rate', 1e-2, 'Adam learning rate')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_integer('chunk', 0, 'seeds per compiled program (0: all repetitions at once)')
flags.DEFINE_integer('max_train', 0, 'use only the first N training examples (0: all)')
flags.DEFINE_bool('fail_on_no_progress', True,
                  'exit 1 when a repetition does not learn (loss at chance or not improving)')


def _finite_or_none(x):
  """JSON has no NaN: an undefined correlation (fewer than 3 designs) is written as null."""
  return None if x != x else x


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  from ce_jax import _validate  # pylint: disable=g-import-not-at-top
  from ce_jax.studies import ablation  # pylint: disable=g-import-not-at-top
  from ce_jax.training import input_pipeline  # pylint: disable=g-import-not-at-top

  dataset = _validate.choice('--dataset', FLAGS.dataset, input_pipeline.ARRAY_DATASETS)
  repetitions = _validate.positive_int('--repetitions', FLAGS.repetitions)
  epochs = _validate.positive_int('--epochs', FLAGS.epochs)
  alpha = _validate.finite_positive('--alpha', FLAGS.alpha)
  baseline_width = _validate.positive_int('--baseline_width', FLAGS.baseline_width)
  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  min_width = _validate.positive_int('--min_width', FLAGS.min_width)
  if min_width > baseline_width:
    raise ValueError(f'--min_width must be <= --baseline_width={baseline_width}, got {min_width}')
  batch_size = _validate.positive_int('--batch_size', FLAGS.batch_size)
  lr = _validate.finite_positive('--learning_rate', FLAGS.learning_rate)
  chunk = _validate.positive_int('--chunk', FLAGS.chunk, minimum=0) or None
  max_train = _validate.positive_int('--max_train', FLAGS.max_train, minimum=0) or None
  if FLAGS.primal_widths:
    widths = _validate.int_list('--primal_widths', FLAGS.primal_widths)
  else:
    widths = ablation.default_primal_widths(
        baseline_width, min_width, _validate.positive_int('--num_primal', FLAGS.num_primal))
  if FLAGS.dual_multiplicities:
    ms = _validate.int_list('--dual_multiplicities', FLAGS.dual_multiplicities)
  else:
    ms = ablation.default_dual_multiplicities(
        baseline_width, min_width, depth, alpha,
        _validate.positive_int('--num_dual', FLAGS.num_dual))

  json_out = guards.check_output_file(FLAGS.json_out, '--json_out')
  guards.check_output_file(FLAGS.plot_out, '--plot_out')
  lock_dir = os.path.dirname(json_out) if json_out else None
  lock_name = os.path.basename(json_out) + '.lock' if json_out else guards.LOCK_NAME
  with guards.maybe_lock(lock_dir, name=lock_name, what='--json_out', target=json_out):
    run(dataset, repetitions, epochs, alpha, baseline_width, depth, batch_size, lr, chunk,
        max_train, widths, ms)


def run_designs(data, primal, dual, baseline, start, **kw):
  """``ablation.run_ablation`` one design at a time, the JSON rewritten after each design
  (``complete: false``, the rows so far) so that a run that stops keeps what it trained."""
  from ce_jax.studies import ablation  # pylint: disable=g-import-not-at-top
  todo = [('primal', d) for d in primal] + [('dual', d) for d in dual]
  rows, done = {'primal': [], 'dual': []}, {}
  for i, (curve, d) in enumerate(todo):
    if (d.m_int, d.n) not in done:  # a design on both curves trains once
      part = ablation.run_ablation(data, [d], [], baseline=baseline, progress=None, **kw)
      done[(d.m_int, d.n)] = part.primal[0]
    r = done[(d.m_int, d.n)]
    rows[curve].append(r)
    logging.info('[%d/%d] %-6s m=%5d n=%4d params=%9d var_ratio=%7.3f test_error=%.4f+-%.4f '
                 '(%.1fs)%s', i + 1, len(todo), curve, r.m, r.n, r.params, r.variance_ratio,
                 r.test_error_mean, r.test_error_stderr, r.seconds,
                 f' FAILED {len(r.failed_repetitions)}' if r.failed_repetitions else '')
    cli.write_json(FLAGS.json_out, {
        'complete': False, 'primal': [x._asdict() for x in rows['primal']],
        'dual': [x._asdict() for x in rows['dual']], 'baseline': baseline._asdict(),
        'config': {'dataset': FLAGS.dataset, 'alpha': FLAGS.alpha, 'seed': FLAGS.seed,
                   **{k: v for k, v in kw.items() if k != 'seed'}},
        'seconds': time.time() - start})
  rho, p = ablation.spearman([r.variance_ratio for r in rows['primal']],
                             [r.test_error_mean for r in rows['primal']])
  return ablation.AblationResult(rows['primal'], rows['dual'], rho, p, baseline)


def run(dataset, repetitions, epochs, alpha, baseline_width, depth, batch_size, lr, chunk,
        max_train, widths, ms):
  """Trains the designs, prints the table, writes the JSON and the figure; then fails (exit 1)
  on failed repetitions or, with ``--fail_on_no_progress``, on repetitions without progress."""
  from ce_jax.studies import ablation, plotting  # pylint: disable=g-import-not-at-top
  from ce_jax.training import input_pipeline  # pylint: disable=g-import-not-at-top

  start = time.time()
  data = input_pipeline.load_arrays(dataset, max_train=max_train)
  d_in = int(data.x_train.shape[1])
  kw = dict(baseline_width=baseline_width, depth=depth, input_dim=d_in,
            num_outputs=data.num_classes, alpha=alpha)
  primal = ablation.primal_designs(widths, **kw)
  dual = ablation.dual_designs(ms, **kw)
  baseline = ablation.primal_designs([baseline_width], **kw)[0]
  logging.info('%s: %d train / %d test, d=%d; baseline %dx%d (%d params); %d primal + %d dual '
               'designs x %d repetitions x %d epochs', dataset, len(data.y_train),
               len(data.y_test), d_in, depth, baseline_width, baseline.params, len(primal),
               len(dual), repetitions, epochs)
  result = run_designs(data, primal, dual, baseline, start, depth=depth,
                       repetitions=repetitions, epochs=epochs, batch_size=batch_size,
                       learning_rate=lr, seed=FLAGS.seed, chunk=chunk)
  elapsed = time.time() - start
  rho_dual, _ = ablation.spearman([r.params for r in result.dual],
                                  [r.test_error_mean for r in result.dual])

  print(f'{"curve":>6} {"m":>5} {"n":>4} {"params":>9} {"Var ratio":>9} {"error %":>8} '
        f'{"+-":>6}')
  for curve in ('primal', 'dual'):
    for r in getattr(result, curve):
      print(f'{curve:>6} {r.m:>5} {r.n:>4} {r.params:>9} {r.variance_ratio:>9.3f} '
            f'{100 * r.test_error_mean:>8.2f} {100 * r.test_error_stderr:>6.2f}')
  print(f'{dataset}: spearman(error, Var(K)) along primal = {result.spearman_primal:.3f} '
        f'(p = {result.spearman_primal_pvalue:.3g}); spearman(error, params) along dual = '
        f'{rho_dual:.3f}; {repetitions} repetitions x {epochs} epochs, {elapsed:.0f} s')

  keys = ('n', 'm', 'params', 'variance_ratio', 'test_error_mean', 'test_error_stderr',
          'final_train_loss_mean', 'failed_repetitions', 'no_progress', 'final_train_losses')
  rows = result.primal + result.dual
  designs = {(r.m, r.n): r for r in rows}.values()  # a design on both curves counts once
  n_failed = sum(len(r.failed_repetitions) for r in designs)
  n_stalled = sum(len(r.no_progress) for r in designs)
  cli.write_json(FLAGS.json_out, {
      'complete': True,
      'primal': [{k: getattr(r, k) for k in keys} for r in result.primal],
      'dual': [{k: getattr(r, k) for k in keys} for r in result.dual],
      'failed': n_failed, 'no_progress': n_stalled,
      'spearman_primal': _finite_or_none(result.spearman_primal),
      'spearman_primal_pvalue': _finite_or_none(result.spearman_primal_pvalue),
      'spearman_dual_params': _finite_or_none(rho_dual),
      'baseline': baseline._asdict(),
      'config': {'dataset': dataset, 'repetitions': repetitions, 'epochs': epochs,
                 'alpha': alpha, 'depth': depth, 'baseline_width': baseline_width,
                 'batch_size': batch_size, 'learning_rate': lr, 'seed': FLAGS.seed,
                 'num_train': int(len(data.y_train)), 'num_test': int(len(data.y_test)),
                 'optimizer': 'adam', 'loss': 'softmax_cross_entropy'},
      'seconds': elapsed,
  })
  if FLAGS.plot_out:
    cli.ensure_parent(FLAGS.plot_out)
    plotting.plot_ablation(result, FLAGS.plot_out,
                           f'{dataset}: depth {depth}, baseline width {baseline_width}, '
                           f'{repetitions} repetitions x {epochs} epochs')
    logging.info('wrote %s', FLAGS.plot_out)

  total = repetitions * len(designs)
  where = f'; results in {FLAGS.json_out}' if FLAGS.json_out else ''
  if n_failed:
    bad = ', '.join(f'm={r.m} n={r.n} ({len(r.failed_repetitions)})' for r in designs
                    if r.failed_repetitions)
    raise guards.RunFailedError(
        f'{n_failed} of {total} repetitions failed (NaN/Inf training loss or parameters) in '
        f'{bad}: their test errors are left out of the means; lower --learning_rate '
        f'(now {lr}){where}')
  if n_stalled:
    first = next(r for r in designs if r.no_progress)
    msg = (f'{n_stalled} of {total} repetitions made no progress (first: m={first.m} '
           f'n={first.n} repetition {first.no_progress[0]}){where}')
    if FLAGS.fail_on_no_progress:
      raise guards.NoProgressError(msg)
    guards.warn(msg)


if __name__ == '__main__':
  guards.run_main(main)
