"""Fig. 4 of the paper: capacity versus kernel variance (the MNIST ablation, Section 4.1).

Dense NTK-parameterized members (``ce_jax.models.dense``) with ``depth`` weight matrices, hidden
widths ``n`` and ``k`` outputs (softmax cross-entropy). The baseline is one member of width
``n~`` (paper: depth 6, ``n~ = 200``). With ``beta(n)`` the parameters of one member and
``S(n) = (depth - 1) / n`` (``ce_jax.design.blocks``), the variance law (Assumption 1, Eq. 11) gives an
ensemble of ``m`` members of width ``n`` (:func:`ce_jax.design.solver.relative_variance`)

    Var(K_e)(m, n) ~ (exp(alpha S(n)) - 1) / m,
    variance_ratio = Var(K_e)(m, n) / Var(K)(1, n~).

The designs are the solver's (:class:`ce_jax.design.solver.Design`, evaluated on the network by
:func:`ce_jax.design.solver.evaluate`); this module only chooses which ``(m, n)`` to train.

* **Primal curve** (fixed parameters, varying variance): ``m = round(beta(n~) / beta(n))`` for a
  grid of widths ``n``; total parameters ``m beta(n)`` within half a member of the baseline's.
* **Dual curve** (fixed variance, varying parameters): for a grid of multiplicities ``m`` the
  integer ``n`` whose ``variance_ratio`` is closest to 1 (``m_d(n) = m``).

Training many repetitions at once: :func:`make_train_fn` builds ONE pure function
``key -> TrainOutput`` (initialization and data order from ``key`` via ``fold_in``, Adam inside a
``lax.scan`` over epochs and minibatches); :func:`train_repetitions` ``jit(vmap(...))``s it over
``R`` seeds, so ``R`` models train in one compiled program.

Data: :func:`ce_jax.training.input_pipeline.load_arrays` (``'digits'``, offline, the default;
``'mnist'`` where tensorflow-datasets has it prepared). Figure:
:func:`ce_jax.studies.plotting.plot_ablation`.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.design import blocks
from ce_jax.design import solver
from ce_jax.models.dense import DenseEnsemble
from ce_jax.tools import guards
from ce_jax.training import input_pipeline


__all__ = ['TrainOutput', 'DesignResult', 'AblationResult', 'design_problem', 'primal_designs',
           'dual_designs', 'geometric_ints', 'default_primal_widths',
           'default_dual_multiplicities', 'make_train_fn', 'repetition_keys', 'train_repetitions',
           'run_ablation', 'spearman']


class TrainOutput(NamedTuple):
  """Per-repetition results (leading axis ``R`` when vmapped).

  ``epoch_loss``: mean training cross-entropy of each epoch ``(epochs,)``; ``test_error``:
  fraction misclassified on the test set after training; ``params``: final parameters.
  """
  params: Any
  epoch_loss: jax.Array
  test_error: jax.Array


class DesignResult(NamedTuple):
  """A design with its test error over repetitions (mean, standard error, all values).

  A repetition whose training loss or final parameters are not finite has failed: it is
  listed in ``failed_repetitions``, its ``test_errors`` entry is NaN and it is left out of the
  means (NaN when every repetition failed). ``no_progress``: ``'r: why'`` for each finite
  repetition whose loss did not improve or ended at chance
  (:func:`ce_jax.tools.guards.progress_problem` on the epoch losses). ``final_train_losses``: the
  last epoch's mean training loss of each repetition.
  """
  n: int
  m: int
  params: int
  variance_ratio: float
  test_error_mean: float
  test_error_stderr: float
  test_errors: list
  final_train_loss_mean: float
  seconds: float
  failed_repetitions: tuple = ()
  no_progress: tuple = ()
  final_train_losses: tuple = ()


class AblationResult(NamedTuple):
  primal: list
  dual: list
  spearman_primal: float
  spearman_primal_pvalue: float
  baseline: Design


# ---------------------------------------------------------------------------------------------
# Designs along the primal and dual curves (closed forms of ce_jax.design.blocks).


@functools.lru_cache(maxsize=16)
def design_problem(baseline_width: int = 200, depth: int = 6, input_dim: int = 64,
                   num_outputs: int = 10) -> solver.Problem:
  """The solver's problem for this study: the dense member, widths 1..``baseline_width``."""
  return solver.dense_problem(depth=depth, width=baseline_width, input_dim=input_dim,
                              num_outputs=num_outputs, max_width=baseline_width)


def _check_common(baseline_width, depth, input_dim, num_outputs, alpha):
  return (_validate.positive_int('baseline_width', baseline_width),
          _validate.positive_int('depth', depth, minimum=2),
          _validate.positive_int('input_dim', input_dim),
          _validate.positive_int('num_outputs', num_outputs),
          _validate.finite_positive('alpha', alpha))


def _variance(n, m, depth: int, alpha: float):
  return solver.relative_variance(blocks.dense_uniform_fan_in_sum(n, depth), m, alpha=alpha)


def primal_designs(widths: Sequence[int], *, baseline_width: int = 200, depth: int = 6,
                   input_dim: int = 64, num_outputs: int = 10,
                   alpha: float = 3.65) -> list[solver.Design]:
  """Designs on the primal curve: ``m = max(1, round(beta(n~) / beta(n)))`` for each width.

  Each is the solver's :class:`~ce_jax.design.solver.Design` of ``m_int`` members of width ``n``
  (:func:`ce_jax.design.solver.evaluate`: whole-network parameters, FLOPs, variance ratio), with
  ``m`` the real ``m_p(n)``. Total parameters ``m_int beta(n)`` are within ``beta(n) / 2`` of the
  baseline's (exactly the baseline for ``n = n~``). Widths above ``n~`` (``m_p < 1``) are
  rejected. Sorted by ``n``.
  """
  baseline_width, depth, input_dim, num_outputs, alpha = _check_common(
      baseline_width, depth, input_dim, num_outputs, alpha)
  widths = sorted(set(_validate.int_list('widths', widths)))
  if widths[-1] > baseline_width:
    raise ValueError(f'primal widths must be <= baseline_width={baseline_width} (m >= 1), '
                     f'got {widths[-1]}')
  problem = design_problem(baseline_width, depth, input_dim, num_outputs)
  beta_s = blocks.dense_uniform_params(baseline_width, input_dim, depth, num_outputs)
  out = []
  for n in widths:
    m = max(1, int(round(beta_s / blocks.dense_uniform_params(n, input_dim, depth, num_outputs))))
    out.append(solver.evaluate(problem, alpha, m, n))
  return out


def dual_designs(multiplicities: Sequence[int], *, baseline_width: int = 200, depth: int = 6,
                 input_dim: int = 64, num_outputs: int = 10,
                 alpha: float = 3.65) -> list[solver.Design]:
  """Designs on the dual curve, one near each target multiplicity in ``multiplicities``.

  The real width solving ``exp(alpha S(n)) - 1 = m (exp(alpha S(n~)) - 1)`` is
  ``n* = alpha (depth-1) / log(1 + m v~)``; with ``n`` in ``{floor(n*), ceil(n*)}`` and the
  design's ``m`` in ``{floor(m_d(n)), ceil(m_d(n))}``, the pair with the smallest
  ``|log variance_ratio|`` is kept (so the ratio is within ``1 +- 1/m`` of 1, not limited by the
  coarse integer widths; the design's ``m`` stays within a factor 2 of the target). Designs that
  collapse onto the same ``n`` are merged (the first kept). Solver designs (``m`` = the real
  ``m_d(n)``, ``m_int`` the members), sorted by ``m_int``.
  """
  baseline_width, depth, input_dim, num_outputs, alpha = _check_common(
      baseline_width, depth, input_dim, num_outputs, alpha)
  ms = sorted(set(_validate.int_list('multiplicities', multiplicities)))
  problem = design_problem(baseline_width, depth, input_dim, num_outputs)
  v_s = float(_variance(baseline_width, 1, depth, alpha))
  out, seen = [], set()
  for target in ms:
    n_star = alpha * (depth - 1) / math.log1p(target * v_s)
    cands = []
    for c in {max(1, min(baseline_width, int(math.floor(n_star)))),
              max(1, min(baseline_width, int(math.ceil(n_star))))}:
      m_d = float(_variance(c, 1, depth, alpha)) / v_s
      for m in {target, max(1, int(math.floor(m_d))), max(1, int(math.ceil(m_d)))}:
        if m == target or target / 2 <= m <= 2 * target:  # stay near the target multiplicity
          cands.append((abs(math.log(float(_variance(c, m, depth, alpha)) / v_s)), c, m, m_d))
    _, n, m, m_d = min(cands)
    if n in seen:
      continue
    seen.add(n)
    out.append(solver.evaluate(problem, alpha, m, n)._replace(m=m_d))
  return out


def geometric_ints(lo: int, hi: int, num: int) -> list[int]:
  """Up to ``num`` distinct integers spaced geometrically from ``lo`` to ``hi`` (both kept)."""
  lo = _validate.positive_int('lo', lo)
  hi = _validate.positive_int('hi', hi, minimum=lo)
  num = _validate.positive_int('num', num)
  if num == 1:
    return [hi]
  vals = np.unique(np.round(np.geomspace(lo, hi, num)).astype(int))
  return [int(v) for v in vals]


def default_primal_widths(baseline_width: int = 200, min_width: int = 4,
                          num: int = 6) -> list[int]:
  """Widths from ``min_width`` up to the baseline's, spaced geometrically."""
  return geometric_ints(min_width, baseline_width, num)


def default_dual_multiplicities(baseline_width: int = 200, min_width: int = 4, depth: int = 6,
                                alpha: float = 3.65, num: int = 6) -> list[int]:
  """Multiplicities from 1 to ``m_d(min_width)``, spaced geometrically."""
  ratio = float(_variance(min_width, 1, depth, alpha) / _variance(baseline_width, 1, depth, alpha))
  return geometric_ints(1, max(1, int(round(ratio))), num)


# ---------------------------------------------------------------------------------------------
# Training R repetitions in one compiled program.


def make_train_fn(model, data: input_pipeline.ArrayDataset, *, epochs: int, batch_size: int = 128,
                  learning_rate: float = 1e-2) -> Callable[[jax.Array], TrainOutput]:
  """Returns a pure ``train_one(key) -> TrainOutput`` (Adam, softmax cross-entropy).

  ``key`` seeds everything of one repetition: ``fold_in(key, 0)`` initializes ``model``,
  ``fold_in(fold_in(key, 1), epoch)`` permutes the training set each epoch (minibatches of
  ``batch_size``, the last incomplete one dropped). ``model.apply`` maps ``(B, d)`` to
  ``(B, num_classes)`` logits. The function is jit- and vmap-friendly.
  """
  import optax

  epochs = _validate.positive_int('epochs', epochs)
  batch_size = _validate.positive_int('batch_size', batch_size)
  learning_rate = _validate.finite_positive('learning_rate', learning_rate)
  x_train = jnp.asarray(data.x_train)
  y_train = jnp.asarray(data.y_train)
  x_test = jnp.asarray(data.x_test)
  y_test = jnp.asarray(data.y_test)
  n_train = int(x_train.shape[0])
  batch_size = min(batch_size, n_train)
  steps = n_train // batch_size
  tx = optax.adam(learning_rate)

  def loss_fn(params, xb, yb):
    logits = model.apply({'params': params}, xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  grad_fn = jax.value_and_grad(loss_fn)

  def train_one(key):
    init_key = jax.random.fold_in(key, 0)
    order_key = jax.random.fold_in(key, 1)
    params = model.init(init_key, x_train[:1])['params']
    opt_state = tx.init(params)

    def step(carry, idx):
      p, s = carry
      loss, g = grad_fn(p, x_train[idx], y_train[idx])
      updates, s = tx.update(g, s, p)
      return (optax.apply_updates(p, updates), s), loss

    def epoch(carry, e):
      perm = jax.random.permutation(jax.random.fold_in(order_key, e), n_train)
      batches = perm[:steps * batch_size].reshape(steps, batch_size)
      carry, losses = jax.lax.scan(step, carry, batches)
      return carry, jnp.mean(losses)

    (params, _), epoch_loss = jax.lax.scan(epoch, (params, opt_state), jnp.arange(epochs))
    logits = model.apply({'params': params}, x_test)
    test_error = jnp.mean(jnp.argmax(logits, -1) != y_test)
    return TrainOutput(params, epoch_loss, test_error)

  return train_one


def repetition_keys(seed: int, repetitions: int) -> jax.Array:
  """``R`` independent keys ``fold_in(PRNGKey(seed), r)``, shape ``(R, 2)``."""
  repetitions = _validate.positive_int('repetitions', repetitions)
  base = jax.random.PRNGKey(int(seed))
  return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(repetitions))


def train_repetitions(train_one: Callable, keys: jax.Array, chunk: int | None = None):
  """``jit(vmap(train_one))`` over ``keys`` ``(R, 2)``: ``R`` trainings in one program.

  ``chunk`` bounds memory: runs ``ceil(R / chunk)`` compiled programs of ``chunk`` seeds each
  (one compilation; a smaller last chunk compiles once more). Returns a ``TrainOutput`` with a
  leading ``R`` axis on every leaf.
  """
  fn = jax.jit(jax.vmap(train_one))
  r = int(keys.shape[0])
  if chunk is None or chunk >= r:
    return jax.block_until_ready(fn(keys))
  chunk = _validate.positive_int('chunk', chunk)
  parts = [jax.block_until_ready(fn(keys[i:i + chunk])) for i in range(0, r, chunk)]
  return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
  """Spearman rank correlation of ``x`` and ``y`` and its two-sided p-value (nan if < 3)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float('nan'), float('nan')
  from scipy import stats
  res = stats.spearmanr(x, y)
  return float(res.statistic), float(res.pvalue)


def run_ablation(data: input_pipeline.ArrayDataset, primal: Sequence[solver.Design],
                 dual: Sequence[solver.Design], *,
                 depth: int = 6, repetitions: int = 10, epochs: int = 20,
                 batch_size: int = 128, learning_rate: float = 1e-2, seed: int = 0,
                 chunk: int | None = None, baseline: solver.Design | None = None,
                 progress: Callable[[str], None] | None = print) -> AblationResult:
  """Trains every design ``repetitions`` times (one vmapped program per design).

  Repetition ``r`` of every design uses the key ``fold_in(PRNGKey(seed), r)``. Returns the
  designs with test-error mean and standard error (``std / sqrt(R)``) over the repetitions that
  did not fail (non-finite loss or parameters: see :class:`DesignResult`) and the Spearman
  correlation of the primal errors with ``variance_ratio``.
  """
  depth = _validate.positive_int('depth', depth, minimum=2)
  keys = repetition_keys(seed, repetitions)
  cache: dict[tuple[int, int], DesignResult] = {}
  todo = [('primal', d) for d in primal] + [('dual', d) for d in dual]

  def run(i, curve, d):
    if (d.m_int, d.n) in cache:
      return cache[(d.m_int, d.n)]
    t0 = time.time()
    model = DenseEnsemble(d.m_int, (d.n,) * (depth - 1), data.num_classes)
    out = train_repetitions(make_train_fn(model, data, epochs=epochs, batch_size=batch_size,
                                          learning_rate=learning_rate), keys, chunk)
    losses = np.asarray(out.epoch_loss, np.float64).reshape(keys.shape[0], -1)
    params_ok = np.asarray(jax.vmap(lambda p: jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(p)])))(out.params))
    ok = np.all(np.isfinite(losses), axis=1) & params_ok
    errs = np.where(ok, np.asarray(out.test_error, np.float64), np.nan)
    good = errs[ok]
    se = float(good.std(ddof=1) / math.sqrt(good.size)) if good.size > 1 else float('nan')
    stalled = []
    for r in np.flatnonzero(ok):
      why = guards.progress_problem(list(enumerate(losses[r], 1)), losses.shape[1],
                                    data.num_classes, unit='epochs')
      if why:
        stalled.append(f'{int(r)}: {why}')
    res = DesignResult(d.n, d.m_int, d.params, d.variance_ratio,
                       float(good.mean()) if good.size else float('nan'), se, errs.tolist(),
                       float(losses[ok, -1].mean()) if good.size else float('nan'),
                       time.time() - t0, tuple(int(r) for r in np.flatnonzero(~ok)),
                       tuple(stalled), tuple(float(v) for v in losses[:, -1]))
    cache[(d.m_int, d.n)] = res
    if progress:
      failed = (f' FAILED {len(res.failed_repetitions)}/{errs.size} (non-finite loss)'
                if res.failed_repetitions else '')
      progress(f'[{i + 1}/{len(todo)}] {curve:6s} m={d.m_int:5d} n={d.n:4d} params={d.params:9d} '
               f'var_ratio={d.variance_ratio:7.3f} test_error={res.test_error_mean:.4f}'
               f'+-{se:.4f} train_loss={res.final_train_loss_mean:.4f} ({res.seconds:.1f}s)'
               f'{failed}')
    return res

  results = {'primal': [], 'dual': []}
  for i, (curve, d) in enumerate(todo):
    results[curve].append(run(i, curve, d))
  rho, p = spearman([r.variance_ratio for r in results['primal']],
                    [r.test_error_mean for r in results['primal']])
  return AblationResult(results['primal'], results['dual'], rho, p, baseline)
