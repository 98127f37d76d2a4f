"""Primal and dual architecture search of Collegial Ensembles (paper Sec. 3-4.2, Algorithm 2).

For a member (dense network) or block path (bottleneck) of width ``n`` with cost ``beta(n)``
(parameters, or FLOPs for ``efficiency='flops'``, appendix Sec. 3) and fan-in sum ``S(n)``, and a
baseline of ``m_s`` members of width ``n~`` (``m_s = 1`` except for a ResNeXt baseline with
cardinality > 1), with ``v(n) = exp(alpha S(n)) - 1`` (Assumption 1, up to the constant C)::

    beta_s   = m_s beta(n~)                      v_s = v(n~) / m_s   (baseline cost, variance)
    primal:  m_p(n) = beta_s / beta(n)           n_p = argmin_n v(n) / m_p(n)
    dual:    m_d(n) = v(n) / v_s                 n_d = argmax_n rho(m_d(n), n)
             rho(m, n) = beta_s / (m beta(n))

Since ``rho(m_d(n), n) = v_s / (v(n) / m_p(n))``, the dual objective is a decreasing function of
the primal one and strong duality ``n_d == n_p`` holds on any grid (the flag is still computed
and reported).

The integer m is chosen on the FULL network (Algorithm 2): primal, the m whose whole-model
parameter (or FLOP) count is closest to the baseline's; dual, the m whose ensemble variance
``v(n_d) / m`` is closest to the baseline's ``v_s`` (nearest in log-ratio, so ``m_d = 12.2``
gives 12). Each design reports the real efficiency ``rho`` of the integer design on the full
network (baseline cost / design cost, in the efficiency unit) and ``Var(K_e) / Var(K_s) =
(v(n) / m) / v_s``.

The curves are computed by ONE ``jax.jit``-compiled function vectorized over the grid; alpha and
the baseline are traced arguments, so sweeping them does not recompile (grids are padded to a
power of two, so ``max_width`` in the same bucket does not recompile either).

Problems: :func:`dense_problem` (uniform or heterogeneous per-layer widths) and
:func:`resnext_problem` (bottleneck block of ``ce_jax.design.blocks``; per-path cost of one canonical
block, ``cost_model='block'``, or of the whole network, ``cost_model='network'``).
Entry points: :func:`search` / :func:`solve` and the what-if :func:`evaluate`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.design import member as member_lib
from ce_jax.design import presets
from ce_jax.design.member import Member
from ce_jax.models import resnext as resnext_lib


EFFICIENCIES = ('params', 'flops')
COST_MODELS = ('block', 'network')
RESNEXT_BASELINES = ('resnext29', 'resnext38', 'resnext50', 'resnext101')
BASELINES = ('dense',) + RESNEXT_BASELINES


class Problem(NamedTuple):
  """A search problem: per-member cost and fan-in sum on a width grid, and the full network.

  name: baseline name ('dense', 'resnext29', ...).
  efficiency: 'params' or 'flops' (unit of ``cost`` and of rho).
  n: (G,) width labels of the grid (for heterogeneous dense members: the widest layer).
  widths: (G, L) per-layer widths of each grid member (L = 1 for a bottleneck path).
  cost: (G,) beta(n) of one member / path in the efficiency unit.
  fan_in_sum: (G,) S(n).
  baseline_cost: beta_s = m_s beta(n~) (same unit and level as ``cost``).
  baseline_fan_in_sum: S(n~).
  baseline_m: m_s (cardinality of the baseline, 1 for dense).
  baseline_widths: per-layer widths of the baseline member / path.
  network: ``network(m, widths) -> {'params', 'flops'}`` whole-network counts (numpy, vectorized
    over an array ``m``) of the ensemble of m members of per-layer ``widths``.
  baseline_network: ``{'params', 'flops'}`` of the baseline network.
  label: ``label(m, widths) -> str`` (e.g. '37x10d').
  fan_in_convention: 'channels' / 'kernel' for bottlenecks, None for dense.
  """
  name: str
  efficiency: str
  n: np.ndarray
  widths: np.ndarray
  cost: np.ndarray
  fan_in_sum: np.ndarray
  baseline_cost: float
  baseline_fan_in_sum: float
  baseline_m: int
  baseline_widths: tuple
  network: Callable[..., dict]
  baseline_network: dict
  label: Callable[..., str]
  fan_in_convention: str | None = None


class Design(NamedTuple):
  """An integer design (m members of per-layer ``widths``), evaluated on the full network.

  n: width (widest layer for heterogeneous members).  widths: per-layer widths.
  m: the real m on the curve (m_p(n) or m_d(n)).  m_int: integer m on the full network.
  params / flops: whole-network parameters / per-example FLOPs of the integer design.
  rho: baseline cost / design cost (efficiency unit) of the integer design.
  variance_ratio: Var(K_e) / Var(K_s) = (v(n) / m_int) / v_s.
  label: e.g. '37x10d'.
  """
  n: int
  widths: tuple
  m: float
  m_int: int
  params: int
  flops: int
  rho: float
  variance_ratio: float
  label: str
  n_interval: tuple | None = None    # (min, max) optimal n across alpha's interval
  m_interval: tuple | None = None    # (min, max) integer m across alpha's interval


class Curves(NamedTuple):
  """The Fig. 3 curves on the grid (numpy arrays of shape (G,))."""
  n: np.ndarray
  primal_m: np.ndarray
  primal_objective: np.ndarray
  dual_m: np.ndarray
  dual_rho: np.ndarray


class Baseline(NamedTuple):
  name: str
  params: int
  flops: int
  n: int
  m: int
  widths: tuple
  label: str


class SearchResult(NamedTuple):
  baseline: Baseline
  alpha: float
  efficiency: str
  fan_in_convention: str | None
  primal: Design
  dual: Design
  strong_duality: bool
  curves: Curves
  alpha_stderr: float | None = None
  alpha_interval: tuple | None = None   # (low, high) of alpha's confidence interval
  intercept: float = 0.0                # of the variance law exp(intercept + alpha S) - 1


# --------------------------------------------------------------------------------------------
# The compiled sweep.

_TRACES = [0]


def sweep_trace_count() -> int:
  """How many times the compiled sweep has been traced (for no-recompilation tests)."""
  return _TRACES[0]


def relative_variance(fan_in_sum, m=1, *, alpha: float, intercept: float = 0.0, xp=np):
  """The variance law of Assumption 1 (Eq. 11): ``(exp(intercept + alpha S) - 1) / m``.

  The relative variance ``Var(K_e) / E[K_e]^2`` of an ensemble of ``m`` members of fan-in sum
  ``S`` (up to the constant C; ``intercept`` is a fit's, 0 for the paper's model). Vectorized over
  ``fan_in_sum`` and ``m``; ``xp`` is the array namespace (``numpy``, or ``jax.numpy`` inside a
  compiled function). Every design of the library (solver, ablation, studies) uses this one law.
  """
  return xp.expm1(intercept + alpha * xp.asarray(fan_in_sum)) / m


@jax.jit
def _sweep(cost, fan_in_sum, valid, baseline_cost, baseline_fan_in_sum, baseline_m, alpha,
           intercept):
  """Curves and optima over a (padded) grid; every argument is traced."""
  _TRACES[0] += 1
  v = relative_variance(fan_in_sum, alpha=alpha, intercept=intercept, xp=jnp)
  v_s = relative_variance(baseline_fan_in_sum, baseline_m, alpha=alpha, intercept=intercept,
                          xp=jnp)
  m_p = baseline_cost / cost
  primal = v / m_p
  m_d = v / v_s
  rho_d = baseline_cost / (m_d * cost)
  # Feasible: at least one member in the budget (primal), a finite variance (no overflow).
  finite = valid & (intercept + alpha * fan_in_sum < _MAX_EXPONENT) & (v > 0)
  primal_masked = jnp.where(finite & (m_p >= 1), primal, jnp.inf)
  rho_masked = jnp.where(finite, baseline_cost / (jnp.maximum(m_d, 1.0) * cost), -jnp.inf)
  return m_p, primal, m_d, rho_d, jnp.argmin(primal_masked), jnp.argmax(rho_masked)


_MAX_EXPONENT = 80.0     # exp(80) ~ 5e34: beyond it float32 variances overflow
MAX_MEMBERS = 10 ** 6    # a design with more members is refused as meaningless


def _bucket(g: int) -> int:
  return max(16, 1 << (g - 1).bit_length())


def curves(problem: Problem, alpha: float, intercept: float = 0.0):
  """Runs the compiled sweep; returns (Curves, primal index, dual index).

  The variance law is the fitted one, ``v(n) = exp(intercept + alpha S(n)) - 1`` (Assumption 1
  up to the constant C; ``intercept`` is the fit's, 0 for the paper's model).
  """
  g = len(problem.n)
  size = _bucket(g)
  pad = size - g
  dt = np.dtype(jax.dtypes.canonicalize_dtype(np.float64)).type  # float32 unless x64
  cost = np.concatenate([np.asarray(problem.cost, np.float64), np.ones(pad)]).astype(dt)
  s = np.concatenate([np.asarray(problem.fan_in_sum, np.float64), np.ones(pad)]).astype(dt)
  valid = np.arange(size) < g
  x_s = intercept + alpha * problem.baseline_fan_in_sum
  if not x_s > 0:
    raise ValueError(f'the fitted variance law gives the baseline no variance (intercept + alpha '
                     f'S = {x_s:.3g} <= 0): the fit does not describe this baseline')
  if not x_s < _MAX_EXPONENT:
    raise ValueError(f'alpha * S(baseline) = {x_s:.3g} overflows the variance law '
                     f'(Var ~ exp({x_s:.3g})): alpha = {alpha:.4g} is far outside the range of a '
                     f'fitted alpha for this member')
  out = _sweep(cost, s, valid, dt(problem.baseline_cost), dt(problem.baseline_fan_in_sum),
               dt(problem.baseline_m), dt(alpha), dt(intercept))
  m_p, primal, m_d, rho_d, i_p, i_d = jax.device_get(out)
  if not np.any((m_p[:g] >= 1)
                & (intercept + alpha * np.asarray(problem.fan_in_sum) < _MAX_EXPONENT)):
    raise ValueError(f'no candidate width fits the baseline\'s budget with at least one member '
                     f'(largest m_p = {float(np.max(m_p[:g])):.3g} < 1): the candidates are '
                     f'wider than the baseline {problem.label(problem.baseline_m, problem.baseline_widths)}'
                     f'; search smaller widths')
  c = Curves(problem.n, np.asarray(m_p[:g], np.float64), np.asarray(primal[:g], np.float64),
             np.asarray(m_d[:g], np.float64), np.asarray(rho_d[:g], np.float64))
  return c, int(i_p), int(i_d)


# --------------------------------------------------------------------------------------------
# Problems.


def _positive_widths(widths) -> tuple:
  return _validate.int_list('widths', widths)


def _profile_grid(base: tuple, max_width: int) -> np.ndarray:
  """Candidates ``(max_width, L)``: the baseline profile scaled so its widest layer is 1..max."""
  grid_n = np.arange(1, max_width + 1)
  prof = np.asarray(base, np.float64) / max(base)
  return np.maximum(1, np.rint(grid_n[:, None] * prof[None, :])).astype(np.int64)


def _candidates(candidates, num_layers: int) -> np.ndarray:
  cand = np.asarray(candidates)
  if cand.ndim == 1:
    cand = cand[:, None] * np.ones((1, num_layers), np.int64)
  if cand.ndim != 2 or cand.shape[1] != num_layers or cand.shape[0] < 1:
    raise ValueError(f'candidates must have shape (G, {num_layers}), got {cand.shape}')
  if not np.all(np.isfinite(cand)) or np.any(cand < 1) or np.any(cand != np.rint(cand)):
    raise ValueError('candidates must be integer widths >= 1')
  return cand.astype(np.int64)


def member_problem(member: Member, baseline_width, baseline_m: int = 1, *,
                   efficiency: str = 'params', fan_in_convention: str = 'channels',
                   max_width: int = 256, candidates: Any = None, cost_model: str = 'block',
                   name: str | None = None, progress=None) -> Problem:
  """The search problem of ANY member (:class:`ce_jax.design.member.Member`), read from its module.

  Args:
    member: the member (or block path) and, optionally, its network builder.
    baseline_width: the baseline member's width ``n~`` (int, or per-layer tuple).
    baseline_m: members (paths, cardinality) of the baseline, ``m_s``.
    efficiency: ``'params'`` or ``'flops'`` (per example, on the member's example input).
    fan_in_convention: S convention, ``'channels'`` or ``'kernel'``.
    max_width: candidates are widths 1..max_width (a per-layer baseline: its profile scaled so
      that the widest layer is 1..max_width).
    candidates: instead, a ``(G,)`` list of widths or ``(G, L)`` array of per-layer widths.
    cost_model: ``'block'`` (beta of one member) or ``'network'`` (needs ``member.network``:
      the per-member cost of the whole network, ``cost(m=2, n) - cost(m=1, n)``).
    name: the baseline's name in reports (default ``member.name``).
    progress: optional ``progress(done, total)`` while tracing (only if widths must be traced
      one by one, see :mod:`ce_jax.design.member`).

  beta(n), FLOPs and S(n) come from :func:`ce_jax.design.member.profile`; whole-network counts for the
  integer m from :func:`ce_jax.design.member.network_counts`.
  """
  if not isinstance(member, Member):
    raise ValueError(f'member must be a ce_jax.design.member.Member, got {type(member).__name__}')
  _validate.choice('efficiency', efficiency, EFFICIENCIES)
  _validate.choice('fan_in_convention', fan_in_convention, member_lib.FAN_IN_CONVENTIONS)
  _validate.choice('cost_model', cost_model, COST_MODELS)
  baseline_m = _validate.positive_int('baseline_m', baseline_m)
  base = member_lib.canonical_width(baseline_width)
  scalar = not isinstance(base, tuple)
  base_vec = member_lib.width_vector(base)
  if candidates is None:
    max_width = _validate.positive_int('max_width', max_width)
    # Every candidate holds its widths, counts, fan-in sums and curve values (about 64 float64).
    _validate.fits_in_memory(f'max_width={max_width} ({max_width:,} candidate widths)',
                             64.0 * 8 * max_width * (len(base_vec) + 1))
    grid = (np.arange(1, max_width + 1)[:, None] if scalar
            else _profile_grid(base_vec, max_width))
  else:
    grid = _candidates(candidates, len(base_vec))
  widths_arg = grid[:, 0] if scalar else grid
  prof = member_lib.profile(member, list(widths_arg) if scalar else widths_arg,
                            extra_checks=[base_vec], progress=progress)
  base_prof = member_lib.profile(member, [base] if scalar else np.asarray([base_vec]))
  key = efficiency
  if cost_model == 'block':
    cost = np.asarray(getattr(prof, key), np.float64)
    beta_s = baseline_m * float(getattr(base_prof, key)[0])
  else:
    if member.network is None:
      raise ValueError(f"cost_model='network' needs a member with a network builder; "
                       f"{member.name!r} has none")
    if not scalar:
      raise ValueError("cost_model='network' needs an int width (not per-layer widths)")
    per = member_lib.network_width_counts(member, (1, 2), grid[:, 0])
    cost = np.asarray(per[2][key] - per[1][key], np.float64)
    pb = member_lib.network_width_counts(member, (1, 2), [base])
    beta_s = baseline_m * float(pb[2][key][0] - pb[1][key][0])
  s = np.asarray(prof.fan_in_sum[fan_in_convention], np.float64)
  s_s = float(base_prof.fan_in_sum[fan_in_convention][0])

  def to_width(w):
    w = tuple(int(x) for x in np.atleast_1d(w))
    return w[0] if scalar else w

  def network(m, w):
    return member_lib.network_counts(member, m, to_width(w))

  def label(m, w):
    return member.make_label(int(m), to_width(w))

  base_net = network(baseline_m, base_vec)
  n_label = grid.max(axis=1)
  return Problem(name or member.name, efficiency, n_label, grid, cost, s, float(beta_s), s_s,
                 baseline_m, base_vec, network,
                 {'params': int(base_net['params']), 'flops': int(base_net['flops'])}, label,
                 fan_in_convention)


def dense_problem(depth: int | None = None, width: int | None = None, input_dim: int = 748,
                  num_outputs: int = 1, efficiency: str = 'params', max_width: int = 1024,
                  widths: Sequence[int] | None = None,
                  candidates: Any = None) -> Problem:
  """Search problem for the paper's dense member (preset :func:`ce_jax.design.presets.dense`).

  Baseline: hidden widths ``widths`` (heterogeneous allowed) or ``depth - 1`` layers of
  ``width``. Candidates: ``candidates`` (G, L) per-layer widths, or by default widths
  1..max_width (heterogeneous baseline: its profile scaled so that its widest layer is n).
  Everything is read from the module (for this member beta = n_0 n_1 + sum n_l n_{l+1} + n_L k,
  FLOPs 2 beta and S = sum_l 1 / n_l over the hidden layers, which the tests check).
  """
  _validate.choice('efficiency', efficiency, EFFICIENCIES)
  input_dim = _validate.positive_int('input_dim', input_dim)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  if widths is not None:
    if depth is not None and depth != len(tuple(_positive_widths(widths))) + 1:
      raise ValueError(f'conflicting depth {depth} and widths {tuple(widths)} '
                       f'(depth must be len(widths) + 1)')
    base = _positive_widths(widths)
    depth = len(base) + 1
  else:
    if depth is None or width is None:
      raise ValueError('dense_problem needs widths, or depth and width')
    depth = _validate.positive_int('depth', depth, minimum=2)
    width = _validate.positive_int('width', width)
    base = (width,) * (depth - 1)   # per-layer widths: designs report them layer by layer
  member = presets.dense(depth, input_dim, num_outputs)
  return member_problem(member, base, 1, efficiency=efficiency, max_width=max_width,
                        candidates=candidates, name='dense')


def resnext_problem(name: str = 'resnext29', cardinality: int = 1, base_width: int = 128,
                    num_classes: int | None = None, efficiency: str = 'params',
                    fan_in_convention: str = 'channels', max_width: int = 256,
                    image_size: int | None = None, cost_model: str = 'block') -> Problem:
  """Search problem for a ResNeXt/ResNet baseline ``cardinality`` x ``base_width``d (Algorithm 2).

  The ensemble lives at block level: a path of width n of the canonical bottleneck (preset
  :func:`ce_jax.design.presets.bottleneck`, 256 -> n -> n -> 256), whose parameters, FLOPs and S(n) are
  read from the module; the network is the registry ResNeXt of cardinality m and base width n,
  counted from its module for the integer m. ``cost_model='network'`` uses the per-path cost of
  the whole network (``cost(C=2, d=n) - cost(C=1, d=n)``) instead of one block's.
  """
  _validate.choice('baseline', name, RESNEXT_BASELINES)
  _validate.choice('efficiency', efficiency, EFFICIENCIES)
  _validate.choice('fan_in_convention', fan_in_convention, member_lib.FAN_IN_CONVENTIONS)
  _validate.choice('cost_model', cost_model, COST_MODELS)
  cardinality = _validate.positive_int('cardinality', cardinality)
  base_width = _validate.positive_int('base_width', base_width)
  max_width = _validate.positive_int('max_width', max_width)
  num_classes = presets.default_num_classes(name) if num_classes is None else num_classes
  num_classes = _validate.positive_int('num_classes', num_classes)
  sizes, outs, _ = resnext_lib.ARCHITECTURES[name]
  resnext_lib.validate_config(sizes, outs, cardinality, base_width, num_classes)
  member = presets.bottleneck(name, num_classes=num_classes, image_size=image_size)
  return member_problem(member, base_width, cardinality, efficiency=efficiency,
                        fan_in_convention=fan_in_convention, max_width=max_width,
                        cost_model=cost_model, name=name)


# --------------------------------------------------------------------------------------------
# Solving.


def _baseline_variance(problem: Problem, alpha: float, intercept: float = 0.0) -> float:
  return float(relative_variance(problem.baseline_fan_in_sum, problem.baseline_m, alpha=alpha,
                                 intercept=intercept))


def _design(problem: Problem, alpha: float, i: int, m_real: float, m_int: int,
            intercept: float = 0.0) -> Design:
  w = tuple(int(x) for x in problem.widths[i])
  key = problem.efficiency
  net = problem.network(m_int, w)
  cost = float(net[key])
  v = float(relative_variance(float(problem.fan_in_sum[i]), alpha=alpha, intercept=intercept))
  return Design(int(problem.n[i]), w, float(m_real), int(m_int), int(net['params']),
                int(net['flops']), float(problem.baseline_network[key]) / cost,
                (v / m_int) / _baseline_variance(problem, alpha, intercept),
                problem.label(m_int, w))


def _check_m(problem: Problem, kind: str, i: int, m_real: float) -> None:
  if not (math.isfinite(m_real) and m_real <= MAX_MEMBERS):
    raise ValueError(f'the {kind} design needs m = {m_real:.3g} members of width '
                     f'{int(problem.n[i])} (more than {MAX_MEMBERS:,}): the candidate widths '
                     f'(1..{int(problem.n.max())}) are far too narrow for this baseline; '
                     f'raise max_width')


def _primal_m_int(problem: Problem, i: int, m_real: float) -> int:
  """The m whose whole-network cost is closest to the baseline's (ties: the smaller m)."""
  w = problem.widths[i]
  hi = max(2, int(math.ceil(2 * m_real)) + 2)
  ms = np.arange(1, hi + 1)
  costs = np.asarray(problem.network(ms, w)[problem.efficiency], np.float64)
  target = float(problem.baseline_network[problem.efficiency])
  return int(ms[int(np.argmin(np.abs(costs - target)))])


def _dual_m_int(m_real: float) -> int:
  """The integer m >= 1 whose variance v/m is closest to the baseline's (nearest in log ratio)."""
  lo = max(1, int(math.floor(m_real)))
  cands = [lo, lo + 1]
  return min(cands, key=lambda m: (abs(math.log(m_real / m)), m))


def _optima(problem: Problem, alpha: float, intercept: float = 0.0):
  c, i_p, i_d = curves(problem, alpha, intercept)
  _check_m(problem, 'primal', i_p, float(c.primal_m[i_p]))
  _check_m(problem, 'dual', i_d, float(c.dual_m[i_d]))
  m_p = _primal_m_int(problem, i_p, c.primal_m[i_p])
  m_d = _dual_m_int(c.dual_m[i_d])
  return c, i_p, i_d, m_p, m_d


def alpha_interval(alpha: float, alpha_stderr: float, confidence: float = 0.95) -> tuple:
  """The two-sided normal ``confidence`` interval of alpha, clipped to stay > 0."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  alpha = _validate.finite_positive('alpha', alpha)
  se = float(alpha_stderr)
  if not (math.isfinite(se) and se >= 0):
    raise ValueError(f'alpha_stderr must be a finite number >= 0, got {alpha_stderr!r}')
  if not 0 < float(confidence) < 1:
    raise ValueError(f'confidence must be in (0, 1), got {confidence!r}')
  z = float(stats.norm.ppf(0.5 + confidence / 2))
  lo = alpha - z * alpha_stderr
  return (max(lo, alpha * 1e-3), alpha + z * alpha_stderr)


def solve(problem: Problem, alpha: float, alpha_stderr: float | None = None, *,
          intercept: float = 0.0, covariance: float = 0.0, confidence: float = 0.95,
          num_alphas: int = 41) -> SearchResult:
  """Primal and dual optima of ``problem`` for the fitted variance law.

  The law is ``v(n) = exp(intercept + alpha S(n)) - 1`` (the fit of Algorithm 1; ``intercept=0``
  is the paper's ``exp(alpha S) - 1``). Pass the fit's intercept: where ``S`` has a part that
  does not depend on the width (an input layer's ``1/C``, a depthwise layer's ``1``), the
  intercept cancels it, and dropping it overstates what narrow members gain.

  With ``alpha_stderr`` the designs also carry ``n_interval`` and ``m_interval``: the range of
  the optimal n and of the integer m over ``num_alphas`` values spanning alpha's two-sided
  ``confidence`` interval (normal), the intercept following alpha along the fit's correlation
  (``covariance`` = Cov(intercept, alpha): ``a(alpha) = a + cov / se^2 (alpha - alpha_hat)``),
  i.e. how sure the recommendation is. Every value reuses the one compiled sweep.
  """
  alpha = _validate.finite_positive('alpha', alpha)
  intercept = float(intercept)
  if not math.isfinite(intercept):
    raise ValueError(f'intercept must be a finite number, got {intercept!r}')
  c, i_p, i_d, m_p, m_d = _optima(problem, alpha, intercept)
  primal = _design(problem, alpha, i_p, c.primal_m[i_p], m_p, intercept)
  dual = _design(problem, alpha, i_d, c.dual_m[i_d], m_d, intercept)
  interval = None
  if alpha_stderr is not None:
    alpha_stderr = float(alpha_stderr)
    if not math.isfinite(alpha_stderr) or alpha_stderr < 0:
      raise ValueError(f'alpha_stderr must be a finite number >= 0, got {alpha_stderr!r}')
    if not 0 < confidence < 1:
      raise ValueError(f'confidence must be in (0, 1), got {confidence!r}')
    num_alphas = _validate.positive_int('num_alphas', num_alphas, minimum=2)
    interval = alpha_interval(alpha, alpha_stderr, confidence)
    ns_p, ms_p, ns_d, ms_d = [], [], [], []
    slope = float(covariance) / alpha_stderr ** 2 if alpha_stderr > 0 else 0.0
    for a in np.linspace(interval[0], interval[1], num_alphas):
      b = intercept + slope * (float(a) - alpha)
      try:
        _, j_p, j_d, mp, md = _optima(problem, float(a), b)
      except ValueError:   # the law gives no feasible design at this end of the interval
        continue
      ns_p.append(int(problem.n[j_p]))
      ns_d.append(int(problem.n[j_d]))
      ms_p.append(mp)
      ms_d.append(md)
    ns_p.append(primal.n)
    ns_d.append(dual.n)
    ms_p.append(primal.m_int)
    ms_d.append(dual.m_int)
    primal = primal._replace(n_interval=(min(ns_p), max(ns_p)), m_interval=(min(ms_p), max(ms_p)))
    dual = dual._replace(n_interval=(min(ns_d), max(ns_d)), m_interval=(min(ms_d), max(ms_d)))
  bw = tuple(problem.baseline_widths)
  baseline = Baseline(problem.name, int(problem.baseline_network['params']),
                      int(problem.baseline_network['flops']), int(max(bw)), problem.baseline_m,
                      bw, problem.label(problem.baseline_m, bw))
  return SearchResult(baseline, alpha, problem.efficiency, problem.fan_in_convention, primal,
                      dual, bool(primal.n == dual.n and primal.widths == dual.widths), c,
                      alpha_stderr, interval, intercept)


def search(baseline: str, alpha: float, **kwargs) -> SearchResult:
  """Primal/dual search from a named baseline.

  ``baseline='dense'``: kwargs of :func:`dense_problem` (depth, width, input_dim, num_outputs,
  efficiency, max_width, widths, candidates). ``baseline`` in ``RESNEXT_BASELINES``: kwargs of
  :func:`resnext_problem` (cardinality, base_width, num_classes, efficiency, fan_in_convention,
  max_width, image_size, cost_model).
  """
  _validate.choice('baseline', baseline, BASELINES)
  alpha = _validate.finite_positive('alpha', alpha)
  if baseline == 'dense':
    problem = dense_problem(**kwargs)
  else:
    problem = resnext_problem(baseline, **kwargs)
  return solve(problem, alpha)


def evaluate(problem: Problem, alpha: float, m: int, n: int | Sequence[int],
             intercept: float = 0.0) -> Design:
  """What-if: the design of ``m`` members / paths of width ``n`` (int, or per-layer widths).

  Returns a :class:`Design` with ``m`` the primal m_p(n) of the curve, ``m_int = m`` and the
  full-network params, FLOPs, rho and variance ratio. ``n`` must be on the problem's grid.
  """
  alpha = _validate.finite_positive('alpha', alpha)
  m = _validate.positive_int('m', m)
  if np.ndim(n) == 0:
    n = _validate.positive_int('n', n)
    rows = np.nonzero(problem.n == n)[0]
    if problem.widths.shape[1] > 1:  # uniform member of width n, if on the grid
      rows = [r for r in rows if np.all(problem.widths[r] == n)] or list(rows)
  else:
    w = np.asarray(_validate.int_list('n', n))
    rows = [r for r in range(len(problem.n)) if problem.widths.shape[1] == len(w)
            and np.all(problem.widths[r] == w)]
  if len(rows) == 0:
    raise ValueError(f'width {n!r} is not on the search grid (widths 1..{int(problem.n.max())}); '
                     f'raise max_width or pass candidates')
  i = int(rows[0])
  m_p = problem.baseline_cost / float(problem.cost[i])
  return _design(problem, alpha, i, m_p, m, intercept)


# --------------------------------------------------------------------------------------------
# Reporting.

def _design_json(d: Design) -> dict:
  return {'n': d.n, 'm': d.m, 'm_int': d.m_int, 'params': d.params, 'flops': d.flops,
          'rho': d.rho, 'variance_ratio': d.variance_ratio, 'label': d.label,
          'widths': list(d.widths),
          'n_interval': None if d.n_interval is None else list(d.n_interval),
          'm_interval': None if d.m_interval is None else list(d.m_interval)}


def result_to_json(r: SearchResult) -> dict:
  """The JSON payload of experiments/search.py (keys documented in docs/SEARCH.md)."""
  return {
      'baseline': {'name': r.baseline.name, 'params': r.baseline.params,
                   'flops': r.baseline.flops, 'label': r.baseline.label,
                   'widths': list(r.baseline.widths)},
      'alpha': r.alpha,
      'alpha_stderr': r.alpha_stderr,
      'intercept': r.intercept,
      'alpha_interval': None if r.alpha_interval is None else list(r.alpha_interval),
      'efficiency': r.efficiency,
      'fan_in_convention': r.fan_in_convention,
      'primal': _design_json(r.primal),
      'dual': _design_json(r.dual),
      'strong_duality': r.strong_duality,
      'curves': {'n': r.curves.n, 'primal_objective': r.curves.primal_objective,
                 'primal_m': r.curves.primal_m, 'dual_m': r.curves.dual_m,
                 'dual_rho': r.curves.dual_rho},
  }


def _span(iv) -> str:
  return str(iv[0]) if iv[0] == iv[1] else f'{iv[0]}..{iv[1]}'


def format_result(r: SearchResult) -> str:
  """A readable table of the baseline, the primal and the dual designs."""
  b = r.baseline
  conv = f', fan-in convention {r.fan_in_convention}' if r.fan_in_convention else ''
  law = f'; intercept {r.intercept:.4g}' if r.intercept else ''
  lines = [f'baseline {b.name} {b.label}: {b.params / 1e6:.2f}M params, '
           f'{b.flops / 1e9:.3f} GFLOPs; alpha {r.alpha:.4g}{law}; efficiency {r.efficiency}{conv}',
           f'{"design":<7} {"n":>5} {"m (real)":>9} {"m_int":>6} {"label":>14} {"params":>9} '
           f'{"GFLOPs":>8} {"rho":>6} {"rho@curve":>9} {"Var(K_e)/Var(K_s)":>18}']
  for name, d in (('primal', r.primal), ('dual', r.dual)):
    i = int(list(r.curves.n).index(d.n)) if d.n in list(r.curves.n) else None
    rc = (r.curves.primal_m[i] / r.curves.dual_m[i] if name == 'dual' else 1.0) if i is not None \
        else float('nan')
    lines.append(f'{name:<7} {d.n:>5} {d.m:>9.2f} {d.m_int:>6} {d.label:>14} '
                 f'{d.params / 1e6:>8.2f}M {d.flops / 1e9:>8.3f} {d.rho:>6.2f} {rc:>9.2f} '
                 f'{d.variance_ratio:>18.3f}')
  if r.alpha_interval is not None:
    lo, hi = r.alpha_interval
    lines.append(f'alpha {r.alpha:.4g} +- {r.alpha_stderr:.2g}: over its interval '
                 f'[{lo:.4g}, {hi:.4g}] the optimal n is {_span(r.primal.n_interval)}, '
                 f'primal m {_span(r.primal.m_interval)}, dual m {_span(r.dual.m_interval)}')
  lines.append(f'strong duality (n_d == n_p): {"yes" if r.strong_duality else "no"}')
  return '\n'.join(lines)
