r"""A family beyond the paper trained end to end: Transformer-MLP collegial ensembles on digits.

The network (:class:`DigitsMLPNet`, scikit-learn's 8x8 digits flattened to 64 features)::

    h = Dense(64 -> d)(x)
    K times:  h = h + Ensemble_m(LayerNorm(h))      Ensemble_m = ensemble(TransformerMLP, m, n,
                                                                 aggregation='block')
    logits = Dense(d -> 10)(LayerNorm(h))

Each block is ``m`` paths d -> n -> d (GELU, biases: :func:`ce_jax.design.presets.transformer_mlp`)
summed inside the last dense layer, times ``1/sqrt(m)`` (``--normalize``, the default: the block
NTK is then the MEAN of the path NTKs, the ensemble of Eq. 4 whose variance the law divides by
m, and the block output has the same scale at initialization for every m).

1. Algorithm 1 on the member ``transformer_mlp(d)`` (``S = 1/d + 1/n``), cached in
   ``<workdir>/alpha.json``.
2. The solver on that member for the baseline ``1 x n~`` (``n~ = 4 d`` by default), integer m
   chosen on the WHOLE network (stem, K blocks, head; Algorithm 2), with the fitted law
   ``v(n) = exp(a + alpha S(n)) - 1`` (the fit's intercept ``a`` and Cov(a, alpha) passed to
   ``solver.solve``). ``--nointercept_law``: the paper's ``exp(alpha S) - 1`` instead. With
   ``--compare_designs`` (default) also the primal and dual of the other law, where they differ:
   rows ``primal_0``, ``dual_0`` (the paper's law), or ``primal_a``, ``dual_a`` (the fitted law)
   with ``--nointercept_law``.
3. Baseline, primal and dual train with Adam (``ce_jax.studies.ablation.make_train_fn``; the seeds of a
   design run as one vmapped program). Test error mean +- standard error over seeds.

    python experiments/family_digits.py --workdir=runs/family_digits \
        --json_out=runs/family_digits/summary.json
    python experiments/family_digits.py --workdir=/tmp/fd --quick       # seconds, for tests

Finished runs are never redone: every (design, seed) result is kept in
``<workdir>/runs/<m>x<n>/seed_<s>.json`` with the training settings, and a rerun trains only the
missing seeds. JSON keys: ``alpha`` (``alpha``, ``alpha_stderr``, ``r2``, ``intercept``,
``covariance``, ``trials``, ``widths``), ``law`` (``fitted`` or ``paper``), ``search`` (the
solver's JSON for that law), ``search_compare`` (the same for the other law, or null),
``models`` (per design: ``name``, ``m``, ``n``, ``params``, ``variance_ratio`` (predicted, the
law used), ``variance_ratio_fitted``, ``variance_ratio_paper`` (predicted by each law),
``test_error_mean``, ``test_error_stderr``, ``test_errors``, ``seeds``,
``final_train_loss_mean``), ``settings`` (with ``intercept_law``), ``wall_s``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as pylogging
import math
import os
import time

import flax.linen as nn
import jax
import numpy as np
from absl import flags

from ce_jax import _validate
from ce_jax.design import solver
from ce_jax.tools import cli
from ce_jax.design import presets
from ce_jax.theory import alpha as alpha_lib
from ce_jax.design import member as member_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/family_digits', 'cached runs and summary.json go here')
flags.DEFINE_string('json_out', None, 'also write the summary JSON here')
flags.DEFINE_integer('d_model', 32, 'model width d (the stem output, each block input/output)')
flags.DEFINE_integer('blocks', 2, 'residual blocks K')
flags.DEFINE_integer('baseline_width', None, 'baseline path width n~ (default 4 d)')
flags.DEFINE_bool('normalize', True, 'multiply each block sum by 1/sqrt(m)')
flags.DEFINE_list('alpha_widths', ['4', '8', '16', '32', '64', '128', '256'],
                  'widths of the alpha fit')
flags.DEFINE_integer('alpha_trials', 500, 'Monte-Carlo initializations per width')
flags.DEFINE_integer('seeds', 10, 'training seeds per design')
flags.DEFINE_integer('epochs', 30, 'training epochs per run')
flags.DEFINE_integer('batch_size', 128, 'minibatch size')
flags.DEFINE_float('learning_rate', 3e-3, 'Adam learning rate')
flags.DEFINE_integer('seed', 0, 'base seed (alpha fit; training seeds seed..seed+seeds-1)')
flags.DEFINE_bool('intercept_law', True, 'solve with the fitted law v(n) = exp(a + alpha S) - 1 '
                  '(a: the fit\'s intercept); --nointercept_law: the paper\'s exp(alpha S) - 1')
flags.DEFINE_bool('compare_designs', True, 'also train the primal / dual of the other law '
                  '(rows primal_0 / dual_0, or primal_a / dual_a with --nointercept_law)')
flags.DEFINE_bool('quick', False, 'tiny settings (tests): 8 alpha trials at 2 widths (n~/4 '
                  'and n~, so the fit interpolates to the baseline), 2 seeds, 1 epoch')

INPUT_DIM, NUM_CLASSES = 64, 10


class DigitsMLPNet(nn.Module):
  """Stem, ``blocks`` pre-LayerNorm residual blocks of ``m`` MLP paths of width n, head.

  ``(B, 64) -> (B, 10)`` logits; see the module docstring.
  """
  m: int
  width: int
  d_model: int = 32
  blocks: int = 2
  num_classes: int = NUM_CLASSES
  normalize: bool = True

  @nn.compact
  def __call__(self, x):
    from ce_jax.models.ensemble import ensemble
    factory = presets.transformer_mlp(self.d_model).factory
    h = nn.Dense(self.d_model, name='stem')(x)
    for i in range(self.blocks):
      paths = ensemble(factory, self.m, self.width, aggregation='block',
                       normalize=self.normalize, name=f'block_{i}')
      h = h + paths(nn.LayerNorm(name=f'ln_{i}')(h))
    return nn.Dense(self.num_classes, name='head')(nn.LayerNorm(name='ln_out')(h))


def _network(m, width, *, d_model, blocks, normalize):
  return DigitsMLPNet(int(m), int(width), d_model, blocks, NUM_CLASSES, normalize)


def digits_member(d_model: int, blocks: int, normalize: bool) -> member_lib.Member:
  """``transformer_mlp(d_model)`` with :class:`DigitsMLPNet` as its network (integer m)."""
  base = presets.transformer_mlp(d_model)
  net = functools.partial(_network, d_model=d_model, blocks=blocks, normalize=normalize)
  return dataclasses.replace(base, network=net, network_input_shape=(INPUT_DIM,),
                             name=f'digits_mlp_d{d_model}')


def fit_alpha(member, widths, trials, seed, d_model, cache_path):
  """Algorithm 1 on the member; reuses ``cache_path`` if it holds the same settings."""
  settings = {'widths': list(widths), 'trials': trials, 'seed': seed, 'd_model': d_model,
              'member': 'transformer_mlp'}
  if os.path.exists(cache_path):
    with open(cache_path) as f:
      cached = json.load(f)
    if cached.get('settings') == settings and 'covariance' in cached:
      print(f'  alpha = {cached["alpha"]:.3f} +- {cached["alpha_stderr"]:.3f}: reused '
            f'{cache_path}', flush=True)
      return cached
  t0 = time.time()

  def progress(i, done, total):
    if done == total:
      print(f'  alpha fit: width {widths[i]:>4} done ({total} initializations)', flush=True)

  est = alpha_lib.estimate_alpha(member, widths, trials, jax.random.PRNGKey(seed),
                                 progress=progress)
  out = {'settings': settings, 'alpha': float(est.fit.alpha),
         'alpha_stderr': float(est.fit.alpha_stderr), 'r2': float(est.fit.r2),
         'intercept': float(est.fit.intercept),
         'covariance': float(est.fit.covariance), 'trials': trials, 'widths': list(widths),
         'points': [{'width': p.width, 'fan_in_sum': p.fan_in_sum, 'ratio': p.ratio,
                     'ratio_stderr': p.ratio_stderr} for p in est.points]}
  print(f'  alpha = {out["alpha"]:.3f} +- {out["alpha_stderr"]:.3f} (R^2 {out["r2"]:.3f}, '
        f'{trials} trials x {len(widths)} widths, {time.time() - t0:.1f}s)', flush=True)
  cli.write_json(cache_path, out)
  return out


def solve_law(problem, fit, with_intercept: bool):
  """The solver's primal and dual for ``v(n) = exp(a + alpha S(n)) - 1`` (``a = 0``: the paper's).

  With the intercept, alpha's interval moves ``a`` along the fit's Cov(a, alpha).
  """
  se = float(fit['alpha_stderr'])
  se = se if math.isfinite(se) else None
  if not with_intercept:
    return solver.solve(problem, float(fit['alpha']), se)
  return solver.solve(problem, float(fit['alpha']), se, intercept=float(fit['intercept']),
                      covariance=float(fit['covariance']))


def train_design(name, m, n, seeds, settings, workdir, data):
  """Test errors of ``m x n`` for each seed; trains the uncached seeds in one vmapped program."""
  from ce_jax.studies import ablation
  run_dir = os.path.join(workdir, 'runs', f'{m}x{n}')
  results, todo = {}, []
  for s in seeds:
    path = os.path.join(run_dir, f'seed_{s}.json')
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get('settings') == settings:
        results[s] = cached
        continue
    todo.append(s)
  if len(todo) < len(seeds):
    print(f'  {name:<8} {m}x{n}: reused {len(seeds) - len(todo)} seed(s) from {run_dir}',
          flush=True)
  model = _network(m, n, d_model=settings['d_model'], blocks=settings['blocks'],
                   normalize=settings['normalize'])
  params = int(sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(
      jax.eval_shape(model.init, jax.random.PRNGKey(0), data.x_train[:1])['params'])))
  if todo:
    t0 = time.time()
    train_one = ablation.make_train_fn(model, data, epochs=settings['epochs'],
                                       batch_size=settings['batch_size'],
                                       learning_rate=settings['learning_rate'])
    # seed s is the key fold_in(PRNGKey(s), 0): the same whichever seeds are trained together
    keys = jax.numpy.stack([ablation.repetition_keys(s, 1)[0] for s in todo])
    out = ablation.train_repetitions(train_one, keys)
    errors = np.asarray(out.test_error, np.float64)
    losses = np.asarray(out.epoch_loss, np.float64)[:, -1]
    for s, e, l in zip(todo, errors, losses):
      results[s] = {'settings': settings, 'm': m, 'n': n, 'seed': s, 'params': params,
                    'test_error': float(e), 'final_train_loss': float(l)}
      cli.write_json(os.path.join(run_dir, f'seed_{s}.json'), results[s])
    print(f'  {name:<8} {m}x{n}: trained seeds {todo} in {time.time() - t0:.1f}s: test errors '
          + ', '.join(f'{100 * e:.2f}%' for e in errors), flush=True)
  return [results[s] for s in seeds], params


def predicted_ratio(problem, alpha: float, intercept: float, m: int, n: int) -> float:
  """Var(K_e)/Var(K_s) of ``m x n`` under ``v(n) = exp(intercept + alpha S(n)) - 1`` (nan if the
  law gives no positive variance)."""
  i = int(np.nonzero(problem.n == n)[0][0])
  v = math.expm1(intercept + alpha * float(problem.fan_in_sum[i]))
  v_s = math.expm1(intercept + alpha * problem.baseline_fan_in_sum) / problem.baseline_m
  return (v / m) / v_s if v > 0 and v_s > 0 else float('nan')


def model_entry(name, m, n, params, ratios, runs, seeds):
  """``ratios``: (the binary's law, fitted law, paper's law) predicted variance ratios."""
  errors = np.array([r['test_error'] for r in runs], dtype=float)
  stderr = float(errors.std(ddof=1) / math.sqrt(len(errors))) if len(errors) > 1 else float('nan')
  return {'name': name, 'm': int(m), 'n': int(n), 'params': int(params),
          'variance_ratio': float(ratios[0]), 'variance_ratio_fitted': float(ratios[1]),
          'variance_ratio_paper': float(ratios[2]), 'test_error_mean': float(errors.mean()),
          'test_error_stderr': stderr, 'test_errors': errors.tolist(), 'seeds': list(seeds),
          'final_train_loss_mean': float(np.mean([r['final_train_loss'] for r in runs]))}


def format_models(models):
  ratios = [('ratio, fitted', 'variance_ratio_fitted'), ('ratio, paper', 'variance_ratio_paper')]
  return ('predicted Var(K_e)/Var(K_s): fitted law exp(a + alpha S) - 1, paper\'s exp(alpha S) '
          '- 1\n' + cli.design_table(models, ratios))


def main(argv):
  pylogging.getLogger('absl').setLevel(pylogging.WARNING)
  pylogging.getLogger('jax._src.xla_bridge').setLevel(pylogging.WARNING)
  del argv  # positional arguments are a usage error (cli.run_main)
  from ce_jax.training import input_pipeline
  d_model = _validate.positive_int('d_model', FLAGS.d_model)
  blocks = _validate.positive_int('blocks', FLAGS.blocks)
  base = FLAGS.baseline_width
  base = 4 * d_model if base is None else _validate.positive_int('baseline_width', base)
  widths = _validate.int_list('alpha_widths', FLAGS.alpha_widths)
  trials = _validate.positive_int('alpha_trials', FLAGS.alpha_trials, minimum=2)
  n_seeds = _validate.positive_int('seeds', FLAGS.seeds)
  epochs = _validate.positive_int('epochs', FLAGS.epochs)
  batch_size = _validate.positive_int('batch_size', FLAGS.batch_size)
  lr = _validate.finite_positive('learning_rate', FLAGS.learning_rate)
  if FLAGS.quick:
    # Two widths around the baseline's: a two-point fit passes through both, so the fitted law
    # gives the baseline its measured log E[K^2]/E[K]^2 > 0 (an 8-trial fit extrapolated to
    # the baseline from far narrower widths can give it a negative variance).
    widths, trials, n_seeds, epochs = (max(1, base // 4), max(2, base)), 8, 2, 1
  workdir = FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  cli.ensure_parent(FLAGS.json_out)
  t_start = time.time()
  member = digits_member(d_model, blocks, FLAGS.normalize)

  print(f'[1/3] Algorithm 1 on transformer_mlp(d_model={d_model})', flush=True)
  fit = fit_alpha(member, widths, trials, FLAGS.seed, d_model, os.path.join(workdir, 'alpha.json'))
  alpha = float(fit['alpha'])
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f'the alpha fit gave {alpha!r}; raise --alpha_trials')

  use_a = bool(FLAGS.intercept_law)
  law = ('fitted law exp(a + alpha S) - 1' if use_a else "the paper's law exp(alpha S) - 1")
  print(f'[2/3] solve: baseline 1x{base}, {blocks} blocks, d = {d_model}; {law}', flush=True)
  problem = solver.member_problem(member, base, max_width=base)
  try:
    result = solve_law(problem, fit, use_a)
  except ValueError as e:
    raise ValueError(f'{e} (--nointercept_law solves with the paper\'s law)' if use_a
                     else str(e)) from None
  print(solver.format_result(result), flush=True)

  designs = [('baseline', 1, base), ('primal', result.primal.m_int, result.primal.n),
             ('dual', result.dual.m_int, result.dual.n)]
  result_cmp = None
  if FLAGS.compare_designs:
    try:
      result_cmp = solve_law(problem, fit, not use_a)
    except ValueError as e:
      print(f'  no comparison designs: {e}', flush=True)
  if result_cmp is not None:
    other = "the paper's law, v(n) = exp(alpha S(n)) - 1" if use_a else \
        'the fitted law, v(n) = exp(a + alpha S(n)) - 1'
    print(f'for comparison, {other}:\n' + solver.format_result(result_cmp), flush=True)
    suffix = '0' if use_a else 'a'
    for name, d in ((f'primal_{suffix}', result_cmp.primal), (f'dual_{suffix}', result_cmp.dual)):
      if all((d.m_int, d.n) != (m, n) for _, m, n in designs):
        designs.append((name, d.m_int, d.n))
  print(f'[3/3] train on digits: {n_seeds} seeds x {epochs} epochs per design', flush=True)
  data = input_pipeline.load_arrays('digits')
  settings = {'d_model': d_model, 'blocks': blocks, 'normalize': bool(FLAGS.normalize),
              'epochs': epochs, 'batch_size': batch_size, 'learning_rate': lr}
  seeds = [FLAGS.seed + i for i in range(n_seeds)]
  models = []
  for name, m, n in designs:
    runs, params = train_design(name, int(m), int(n), seeds, settings, workdir, data)
    fitted = predicted_ratio(problem, alpha, float(fit['intercept']), m, n)
    paper = predicted_ratio(problem, alpha, 0.0, m, n)
    ratios = (fitted if use_a else paper, fitted, paper)
    models.append(model_entry(name, m, n, params, ratios, runs, seeds))
  print(format_models(models), flush=True)
  keys = ('alpha', 'alpha_stderr', 'r2', 'intercept', 'covariance', 'trials', 'widths')
  summary = {'alpha': {k: fit[k] for k in keys},
             'law': 'fitted' if use_a else 'paper',
             'search': solver.result_to_json(result),
             'search_compare': (None if result_cmp is None
                                else solver.result_to_json(result_cmp)),
             'models': models,
             'settings': {**settings, 'baseline_width': base, 'seeds': n_seeds,
                          'intercept_law': use_a},
             'wall_s': time.time() - t_start}
  cli.write_json(os.path.join(workdir, 'summary.json'), summary)
  cli.write_json(FLAGS.json_out, summary)
  print(f'wrote {os.path.join(workdir, "summary.json")} ({time.time() - t_start:.0f}s)',
        flush=True)


if __name__ == '__main__':
  cli.run_main(main)
