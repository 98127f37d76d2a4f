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
:func:`resnext_problem` (bottleneck block of ``ce_jax.blocks``; per-path cost of one canonical
block, ``cost_model='block'``, or of the whole network, ``cost_model='network'``).
Entry points: :func:`search` / :func:`solve` and the what-if :func:`evaluate`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate, accounting, blocks

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


# --------------------------------------------------------------------------------------------
# The compiled sweep.

_TRACES = [0]


def sweep_trace_count() -> int:
  """How many times the compiled sweep has been traced (for no-recompilation tests)."""
  return _TRACES[0]


@jax.jit
def _sweep(cost, fan_in_sum, valid, baseline_cost, baseline_fan_in_sum, baseline_m, alpha):
  """Curves and optima over a (padded) grid; every argument is traced."""
  _TRACES[0] += 1
  v = jnp.expm1(alpha * fan_in_sum)
  v_s = jnp.expm1(alpha * baseline_fan_in_sum) / baseline_m
  m_p = baseline_cost / cost
  primal = v / m_p
  m_d = v / v_s
  rho_d = baseline_cost / (m_d * cost)
  primal_masked = jnp.where(valid, primal, jnp.inf)
  rho_masked = jnp.where(valid, rho_d, -jnp.inf)
  return m_p, primal, m_d, rho_d, jnp.argmin(primal_masked), jnp.argmax(rho_masked)


def _bucket(g: int) -> int:
  return max(16, 1 << (g - 1).bit_length())


def curves(problem: Problem, alpha: float):
  """Runs the compiled sweep; returns (Curves, primal index, dual index)."""
  g = len(problem.n)
  size = _bucket(g)
  pad = size - g
  dt = np.dtype(jax.dtypes.canonicalize_dtype(np.float64)).type  # float32 unless x64
  cost = np.concatenate([np.asarray(problem.cost, np.float64), np.ones(pad)]).astype(dt)
  s = np.concatenate([np.asarray(problem.fan_in_sum, np.float64), np.ones(pad)]).astype(dt)
  valid = np.arange(size) < g
  out = _sweep(cost, s, valid, dt(problem.baseline_cost), dt(problem.baseline_fan_in_sum),
               dt(problem.baseline_m), dt(alpha))
  m_p, primal, m_d, rho_d, i_p, i_d = jax.device_get(out)
  c = Curves(problem.n, np.asarray(m_p[:g], np.float64), np.asarray(primal[:g], np.float64),
             np.asarray(m_d[:g], np.float64), np.asarray(rho_d[:g], np.float64))
  return c, int(i_p), int(i_d)


# --------------------------------------------------------------------------------------------
# Problems.


def _positive_widths(widths) -> tuple:
  return _validate.int_list('widths', widths)


def dense_problem(depth: int | None = None, width: int | None = None, input_dim: int = 748,
                  num_outputs: int = 1, efficiency: str = 'params', max_width: int = 1024,
                  widths: Sequence[int] | None = None,
                  candidates: Any = None) -> Problem:
  """Search problem for a dense member (NTK MLP of SPEC section 1, no biases).

  Baseline: hidden widths ``widths`` (heterogeneous allowed) or ``(width,) * (depth - 1)``.
  Candidates: ``candidates`` (G, L) array of per-layer width vectors, or by default the baseline
  profile scaled so that its widest layer is n = 1..max_width (uniform baseline: all layers n).
  beta = n_0 n_1 + sum n_l n_{l+1} + n_L k (FLOPs: 2 beta); S = sum_l 1 / n_l.
  """
  _validate.choice('efficiency', efficiency, EFFICIENCIES)
  input_dim = _validate.positive_int('input_dim', input_dim)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  if widths is not None:
    if depth is not None and depth != len(tuple(widths)) + 1:
      raise ValueError(f'conflicting depth {depth} and widths {tuple(widths)} '
                       f'(depth must be len(widths) + 1)')
    base = _positive_widths(widths)
  else:
    if depth is None or width is None:
      raise ValueError('dense_problem needs widths, or depth and width')
    depth = _validate.positive_int('depth', depth, minimum=2)
    width = _validate.positive_int('width', width)
    base = (width,) * (depth - 1)
  if candidates is None:
    max_width = _validate.positive_int('max_width', max_width)
    grid_n = np.arange(1, max_width + 1)
    profile = np.asarray(base, np.float64) / max(base)
    cand = np.maximum(1, np.rint(grid_n[:, None] * profile[None, :])).astype(np.int64)
  else:
    cand = np.asarray(candidates)
    if cand.ndim == 1:
      cand = cand[:, None] * np.ones((1, len(base)), np.int64)
    if cand.ndim != 2 or cand.shape[1] != len(base) or cand.shape[0] < 1:
      raise ValueError(f'candidates must have shape (G, {len(base)}), got {cand.shape}')
    if not np.all(np.isfinite(cand)) or np.any(cand < 1) or np.any(cand != np.rint(cand)):
      raise ValueError('candidates must be integer widths >= 1')
    cand = cand.astype(np.int64)
    grid_n = cand.max(axis=1)
  dims_in = np.concatenate([np.full((len(cand), 1), input_dim), cand], axis=1)
  dims_out = np.concatenate([cand, np.full((len(cand), 1), num_outputs)], axis=1)
  beta = (dims_in * dims_out).sum(axis=1).astype(np.float64)
  s = (1.0 / cand).sum(axis=1)
  unit = 2.0 if efficiency == 'flops' else 1.0
  beta_s = accounting.dense_params(input_dim, base, num_outputs)

  def network(m, w):
    p = np.asarray(m) * accounting.dense_params(input_dim, tuple(int(x) for x in w), num_outputs)
    return {'params': p, 'flops': 2 * p}

  def label(m, w):
    w = tuple(int(x) for x in w)
    if len(set(w)) == 1:  # uniform member: 'm x n', like the paper's '30x48'
      return f'{int(m)}x{w[0]}'
    return f'{int(m)}x[{"-".join(map(str, w))}]'  # heterogeneous widths per layer

  return Problem('dense', efficiency, grid_n, cand, beta * unit, s, unit * beta_s,
                 float(sum(1.0 / w for w in base)), 1, base, network,
                 {'params': beta_s, 'flops': 2 * beta_s}, label, None)


def resnext_problem(name: str = 'resnext29', cardinality: int = 1, base_width: int = 128,
                    num_classes: int | None = None, efficiency: str = 'params',
                    fan_in_convention: str = 'channels', max_width: int = 256,
                    image_size: int | None = None, cost_model: str = 'block') -> Problem:
  """Search problem for a ResNeXt/ResNet baseline ``cardinality`` x ``base_width``d (Algorithm 2).

  The ensemble lives at block level: a path of width n of the canonical bottleneck
  (256 -> n -> n -> 256, ``ce_jax.blocks``) with ``beta(n) = 256 n + 9 n^2 + 256 n`` parameters
  (FLOPs: ``2 H W beta(n)``, the resolution cancels in every ratio), S(n) per
  ``fan_in_convention``. ``cost_model='network'`` uses instead the per-path cost of the whole
  network (cost(C=2, d=n) - cost(C=1, d=n); every stage, stem excluded), S still per block.
  Integer m, params and FLOPs are always whole-network (closed forms of ``ce_jax.accounting``).
  """
  _validate.choice('baseline', name, RESNEXT_BASELINES)
  _validate.choice('efficiency', efficiency, EFFICIENCIES)
  _validate.choice('fan_in_convention', fan_in_convention, blocks.FAN_IN_CONVENTIONS)
  _validate.choice('cost_model', cost_model, COST_MODELS)
  cardinality = _validate.positive_int('cardinality', cardinality)
  base_width = _validate.positive_int('base_width', base_width)
  max_width = _validate.positive_int('max_width', max_width)
  if num_classes is None:
    num_classes = 10 if name == 'resnext29' else 1000
  num_classes = _validate.positive_int('num_classes', num_classes)
  image_size = accounting.default_image_size(name) if image_size is None else image_size
  image_size = _validate.positive_int('image_size', image_size)
  from ce_jax.models import resnext as resnext_lib
  sizes, outs, _ = resnext_lib.ARCHITECTURES[name]
  resnext_lib.validate_config(sizes, outs, cardinality, base_width, num_classes)
  config = accounting.resnext_config(name)
  grid_n = np.arange(1, max_width + 1)
  key = 'flops' if efficiency == 'flops' else 'params'
  if cost_model == 'block':
    if efficiency == 'flops':
      beta = accounting.bottleneck_path_flops(grid_n.astype(np.float64), 256, 256, spatial=1)
      beta_s = cardinality * accounting.bottleneck_path_flops(float(base_width), 256, 256, 1)
    else:
      beta = blocks.bottleneck_path_params(grid_n.astype(np.float64), 256, 256)
      beta_s = cardinality * blocks.bottleneck_path_params(float(base_width), 256, 256)
  else:
    def per_path(d):
      c2 = accounting.resnext_cost(config, 2, d, num_classes, image_size)[key]
      c1 = accounting.resnext_cost(config, 1, d, num_classes, image_size)[key]
      return np.asarray(c2 - c1, np.float64)
    beta = per_path(grid_n)
    beta_s = cardinality * float(per_path(base_width))
  s = blocks.bottleneck_fan_in_sum(grid_n.astype(np.float64), 256, fan_in_convention)
  s_s = float(blocks.bottleneck_fan_in_sum(float(base_width), 256, fan_in_convention))

  def network(m, w):
    c = accounting.resnext_cost(config, np.asarray(m), int(w[0]), num_classes, image_size)
    return {'params': c['params'], 'flops': c['flops']}

  def label(m, w):
    return f'{int(m)}x{int(w[0])}d'

  base_net = accounting.resnext_cost(config, cardinality, base_width, num_classes, image_size)
  return Problem(name, efficiency, grid_n, grid_n[:, None], np.asarray(beta, np.float64), s,
                 float(beta_s), s_s, cardinality, (base_width,), network,
                 {'params': int(base_net['params']), 'flops': int(base_net['flops'])}, label,
                 fan_in_convention)


# --------------------------------------------------------------------------------------------
# Solving.


def _baseline_variance(problem: Problem, alpha: float) -> float:
  return math.expm1(alpha * problem.baseline_fan_in_sum) / problem.baseline_m


def _design(problem: Problem, alpha: float, i: int, m_real: float, m_int: int) -> Design:
  w = tuple(int(x) for x in problem.widths[i])
  key = problem.efficiency
  net = problem.network(m_int, w)
  cost = float(net[key])
  v = math.expm1(alpha * float(problem.fan_in_sum[i]))
  return Design(int(problem.n[i]), w, float(m_real), int(m_int), int(net['params']),
                int(net['flops']), float(problem.baseline_network[key]) / cost,
                (v / m_int) / _baseline_variance(problem, alpha), problem.label(m_int, w))


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


def solve(problem: Problem, alpha: float) -> SearchResult:
  """Primal and dual optima of ``problem`` for variance exponent ``alpha``."""
  alpha = _validate.finite_positive('alpha', alpha)
  c, i_p, i_d = curves(problem, alpha)
  primal = _design(problem, alpha, i_p, c.primal_m[i_p],
                   _primal_m_int(problem, i_p, c.primal_m[i_p]))
  dual = _design(problem, alpha, i_d, c.dual_m[i_d], _dual_m_int(c.dual_m[i_d]))
  bw = tuple(problem.baseline_widths)
  baseline = Baseline(problem.name, int(problem.baseline_network['params']),
                      int(problem.baseline_network['flops']), int(max(bw)), problem.baseline_m,
                      bw, problem.label(problem.baseline_m, bw))
  return SearchResult(baseline, alpha, problem.efficiency, problem.fan_in_convention, primal,
                      dual, bool(primal.n == dual.n and primal.widths == dual.widths), c)


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


def evaluate(problem: Problem, alpha: float, m: int, n: int | Sequence[int]) -> Design:
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
  return _design(problem, alpha, i, m_p, m)


# --------------------------------------------------------------------------------------------
# Reporting.

def _design_json(d: Design) -> dict:
  return {'n': d.n, 'm': d.m, 'm_int': d.m_int, 'params': d.params, 'flops': d.flops,
          'rho': d.rho, 'variance_ratio': d.variance_ratio, 'label': d.label,
          'widths': list(d.widths)}


def result_to_json(r: SearchResult) -> dict:
  """The JSON payload of experiments/search.py (keys documented in docs/SEARCH.md)."""
  return {
      'baseline': {'name': r.baseline.name, 'params': r.baseline.params,
                   'flops': r.baseline.flops, 'label': r.baseline.label,
                   'widths': list(r.baseline.widths)},
      'alpha': r.alpha,
      'efficiency': r.efficiency,
      'fan_in_convention': r.fan_in_convention,
      'primal': _design_json(r.primal),
      'dual': _design_json(r.dual),
      'strong_duality': r.strong_duality,
      'curves': {'n': r.curves.n, 'primal_objective': r.curves.primal_objective,
                 'primal_m': r.curves.primal_m, 'dual_m': r.curves.dual_m,
                 'dual_rho': r.curves.dual_rho},
  }


def format_result(r: SearchResult) -> str:
  """A readable table of the baseline, the primal and the dual designs."""
  b = r.baseline
  conv = f', fan-in convention {r.fan_in_convention}' if r.fan_in_convention else ''
  lines = [f'baseline {b.name} {b.label}: {b.params / 1e6:.2f}M params, '
           f'{b.flops / 1e9:.3f} GFLOPs; alpha {r.alpha:.4g}; efficiency {r.efficiency}{conv}',
           f'{"design":<7} {"n":>5} {"m (real)":>9} {"m_int":>6} {"label":>14} {"params":>9} '
           f'{"GFLOPs":>8} {"rho":>6} {"rho@curve":>9} {"Var(K_e)/Var(K_s)":>18}']
  for name, d in (('primal', r.primal), ('dual', r.dual)):
    i = int(list(r.curves.n).index(d.n)) if d.n in list(r.curves.n) else None
    rc = (r.curves.primal_m[i] / r.curves.dual_m[i] if name == 'dual' else 1.0) if i is not None \
        else float('nan')
    lines.append(f'{name:<7} {d.n:>5} {d.m:>9.2f} {d.m_int:>6} {d.label:>14} '
                 f'{d.params / 1e6:>8.2f}M {d.flops / 1e9:>8.3f} {d.rho:>6.2f} {rc:>9.2f} '
                 f'{d.variance_ratio:>18.3f}')
  lines.append(f'strong duality (n_d == n_p): {"yes" if r.strong_duality else "no"}')
  return '\n'.join(lines)
