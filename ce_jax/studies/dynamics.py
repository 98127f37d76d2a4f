"""Theorem 1 (appendix Fig. 3): the ensemble NTK moves by O_p(1 / (m n)) during training.

Depth-``depth`` dense collegial ensembles ``F_e = (1/sqrt(m)) sum_j f(x; theta_j)`` (members of
``ce_jax.models.dense``, NTK parameterization, scalar output) are trained with the L2 loss

    L(Theta) = (1 / (2 N)) sum_i (F_e(x_i) - y_i)^2

by full-batch gradient descent (a discretized gradient flow, time ``t = learning_rate * steps``)
on a small training set. On a probe set of ``P`` inputs we measure, between initialization and
the end of training,

    delta_offdiag  = |K_e(T)[0, 1] - K_e(0)[0, 1]|                 (one off-diagonal entry)
    delta_frob_rel = ||K_e(T) - K_e(0)||_F / ||K_e(0)||_F          (whole probe kernel)

averaged over seeds. Theorem 1 predicts both scale like ``(m n)^(-1)``: a log-log fit against
``m n`` (:func:`fit_loglog_slope`) should have slope ~ -1.

The grid (:func:`design_grid`) holds the appendix figure's three panels for a list of ``d``:
(a) ``m = 1, n = d^2``; (b) ``m = n = d`` (same ``m n`` as (a)); (c) fixed width
``n = fixed_width`` with ``m`` chosen so that the parameters match panel (a)'s (larger ``m n``).

The empirical NTK is :func:`ce_jax.theory.ntk.empirical_ntk_fn` (its ``'auto'`` backend: the
structured kernel for the library's dense ensembles, the Jacobian contraction otherwise).
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.design import blocks
from ce_jax.models.dense import DenseEnsemble
from ce_jax.theory import ntk
from ce_jax.training import input_pipeline


__all__ = ['GridPoint', 'DynamicsOutput', 'DynamicsPoint', 'SlopeFit', 'DynamicsResult',
           'design_grid', 'regression_data', 'make_dynamics_fn',
           'measure_point', 'fit_loglog_slope', 'fit_usable', 'run_dynamics', 'NAN_FIT']


class GridPoint(NamedTuple):
  """A design ``m`` x width ``n`` and the panel(s) it belongs to ('a', 'b', 'c')."""
  m: int
  n: int
  params: int
  panel: str


class DynamicsOutput(NamedTuple):
  """Per seed (leading axis ``S`` when vmapped): kernels ``(P, P)`` and training losses."""
  k_init: jax.Array
  k_final: jax.Array
  loss_init: jax.Array
  loss_final: jax.Array


class DynamicsPoint(NamedTuple):
  """Seed-averaged NTK change of one design (with standard errors over seeds)."""
  m: int
  n: int
  params: int
  panel: str
  mn: int
  delta_offdiag: float
  delta_offdiag_stderr: float
  delta_frob_rel: float
  delta_frob_rel_stderr: float
  loss_init: float
  loss_final: float
  seconds: float


class SlopeFit(NamedTuple):
  """OLS fit ``log y = intercept + slope log x`` with the slope's standard error."""
  slope: float
  slope_stderr: float
  intercept: float
  r2: float
  num_points: int


class DynamicsResult(NamedTuple):
  """All points, the fits over all points, and per-panel fits of ``delta_frob_rel``.

  ``panel_fits``: ``{'a': SlopeFit, ...}`` for each panel with >= 3 points of distinct ``m n``.
  ``skipped``: ``{'frob': [i, ...], 'offdiag': [...]}``, the points left out of each fit
  because their change is zero or not finite (a degenerate point: a log-log fit needs
  ``y > 0``); a fit with fewer than 3 usable points (or one ``m n``) is all NaN.
  """
  points: list
  fit_frob: SlopeFit
  fit_offdiag: SlopeFit
  panel_fits: dict
  skipped: dict = {}


def _beta(n: int, input_dim: int, depth: int) -> int:
  """beta(n) of the depth-``depth`` dense member with one output."""
  return int(blocks.dense_uniform_params(int(n), input_dim, depth))


def design_grid(ds: Sequence[int] = (3, 4, 6, 8, 12), *, fixed_width: int = 16,
                input_dim: int = 64, depth: int = 4) -> list[GridPoint]:
  """The three panels' designs for each ``d`` in ``ds`` (duplicates merged, panels joined).

  (a) ``(1, d^2)``; (b) ``(d, d)``; (c) ``(round(beta(d^2) / beta(fixed_width)), fixed_width)``
  whenever that ``m >= 1``. Sorted by ``m n`` then ``m``.
  """
  ds = _validate.int_list('ds', ds)
  fixed_width = _validate.positive_int('fixed_width', fixed_width)
  input_dim = _validate.positive_int('input_dim', input_dim)
  depth = _validate.positive_int('depth', depth, minimum=2)
  panels: dict[tuple[int, int], set] = {}
  for d in ds:
    panels.setdefault((1, d * d), set()).add('a')
    panels.setdefault((d, d), set()).add('b')
    m_c = int(round(_beta(d * d, input_dim, depth) / _beta(fixed_width, input_dim, depth)))
    if m_c >= 1:
      panels.setdefault((m_c, fixed_width), set()).add('c')
  pts = [GridPoint(m, n, m * _beta(n, input_dim, depth), ''.join(sorted(p)))
         for (m, n), p in panels.items()]
  return sorted(pts, key=lambda g: (g.m * g.n, g.m))


def regression_data(num_train: int = 128, num_probe: int = 8):
  """A digits subset for the L2 dynamics: ``(x_train, y_train, x_probe)``.

  Inputs from ``ce_jax.training.input_pipeline.load_arrays('digits')`` (per-pixel standardized, d = 64);
  target ``y = +1`` for even digits, ``-1`` for odd ones, shape ``(N, 1)``; the probe set is the
  first ``num_probe`` test images.
  """
  num_train = _validate.positive_int('num_train', num_train)
  num_probe = _validate.positive_int('num_probe', num_probe, minimum=2)
  data = input_pipeline.load_arrays('digits')
  if num_train > len(data.y_train):
    raise ValueError(f'num_train must be <= {len(data.y_train)}, got {num_train}')
  if num_probe > len(data.y_test):
    raise ValueError(f'num_probe must be <= {len(data.y_test)}, got {num_probe}')
  y = np.where(data.y_train[:num_train] % 2 == 0, 1.0, -1.0).astype(np.float32)[:, None]
  return data.x_train[:num_train], y, data.x_test[:num_probe]


def make_dynamics_fn(model, x_train, y_train, x_probe, *, steps: int = 300,
                     learning_rate: float = 1.0) -> Callable[[jax.Array], DynamicsOutput]:
  """Pure ``run_one(key) -> DynamicsOutput``: init from ``key``, full-batch GD on the L2 loss.

  ``model``: a Flax module with scalar output (e.g. ``DenseEnsemble(m, widths, 1)``).
  Kernels on ``x_probe`` at initialization and after ``steps`` steps of
  ``Theta <- Theta - learning_rate * grad L``. jit- and vmap-friendly.
  """
  steps = _validate.positive_int('steps', steps)
  learning_rate = _validate.finite_positive('learning_rate', learning_rate)
  x_train = jnp.asarray(x_train, jnp.float32)
  y_train = jnp.asarray(y_train, jnp.float32)
  x_probe = jnp.asarray(x_probe, jnp.float32)

  def apply_fn(p, x):
    return model.apply({'params': p}, x)

  def loss_fn(p):
    return 0.5 * jnp.mean((apply_fn(p, x_train) - y_train) ** 2)

  kernel_fn = ntk.empirical_ntk_fn(apply_fn, vmap_axes=0)

  grad_fn = jax.value_and_grad(loss_fn)

  def run_one(key):
    params = model.init(key, x_train[:1])['params']
    k0 = kernel_fn(x_probe, None, params)

    def step(p, _):
      loss, g = grad_fn(p)
      return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g), loss

    params_t, losses = jax.lax.scan(step, params, None, length=steps)
    kt = kernel_fn(x_probe, None, params_t)
    return DynamicsOutput(k0, kt, losses[0], loss_fn(params_t))

  return run_one


def _mean_se(v: np.ndarray) -> tuple[float, float]:
  v = np.asarray(v, np.float64)
  se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float('nan')
  return float(v.mean()), se


def measure_point(point: GridPoint, x_train, y_train, x_probe, *, depth: int = 4,
                  steps: int = 300, learning_rate: float = 1.0, seeds: int = 3,
                  seed: int = 0) -> DynamicsPoint:
  """Trains ``seeds`` initializations of ``point`` at once (vmap) and averages the changes.

  Seed ``s`` uses ``fold_in(PRNGKey(seed), s)``.
  """
  seeds = _validate.positive_int('seeds', seeds)
  t0 = time.time()
  model = DenseEnsemble(point.m, (point.n,) * (depth - 1), 1)
  run_one = make_dynamics_fn(model, x_train, y_train, x_probe, steps=steps,
                             learning_rate=learning_rate)
  base = jax.random.PRNGKey(int(seed))
  keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(seeds))
  out = jax.block_until_ready(jax.jit(jax.vmap(run_one))(keys))
  k0 = np.asarray(out.k_init, np.float64)
  kt = np.asarray(out.k_final, np.float64)
  off = np.abs(kt[:, 0, 1] - k0[:, 0, 1])
  frob = np.linalg.norm(kt - k0, axis=(1, 2)) / np.linalg.norm(k0, axis=(1, 2))
  return DynamicsPoint(point.m, point.n, point.params, point.panel, point.m * point.n,
                       *_mean_se(off), *_mean_se(frob),
                       float(np.mean(np.asarray(out.loss_init))),
                       float(np.mean(np.asarray(out.loss_final))), time.time() - t0)


def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> SlopeFit:
  """OLS of ``log y`` on ``log x``: slope, its standard error, intercept and R^2.

  Needs at least 3 points with positive ``x`` and ``y``.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f'x and y must be 1-D of equal length, got {x.shape} and {y.shape}')
  if x.size < 3:
    raise ValueError(f'a slope with a standard error needs >= 3 points, got {x.size}')
  if np.any(~np.isfinite(x)) or np.any(~np.isfinite(y)) or np.any(x <= 0) or np.any(y <= 0):
    raise ValueError('x and y must be finite and > 0 for a log-log fit')
  lx, ly = np.log(x), np.log(y)
  if np.ptp(lx) == 0:
    raise ValueError('x must take at least two distinct values')
  a = np.stack([np.ones_like(lx), lx], axis=1)
  coef, *_ = np.linalg.lstsq(a, ly, rcond=None)
  resid = ly - a @ coef
  dof = x.size - 2
  sigma2 = float(resid @ resid) / dof
  sxx = float(((lx - lx.mean()) ** 2).sum())
  ss_tot = float(((ly - ly.mean()) ** 2).sum())
  r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else 1.0
  return SlopeFit(float(coef[1]), math.sqrt(sigma2 / sxx), float(coef[0]), r2, int(x.size))


NAN_FIT = SlopeFit(float('nan'), float('nan'), float('nan'), float('nan'), 0)


def fit_usable(x: Sequence[float], y: Sequence[float]) -> tuple[SlopeFit, list[int]]:
  """:func:`fit_loglog_slope` over the points with finite ``y > 0``; ``(fit, skipped)``.

  ``skipped`` lists the indices left out (degenerate points). With fewer than 3 usable points
  or a single distinct ``x`` the fit is :data:`NAN_FIT` (with its ``num_points``).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  usable = np.isfinite(y) & (y > 0) & np.isfinite(x) & (x > 0)
  skipped = [int(i) for i in np.flatnonzero(~usable)]
  if usable.sum() < 3 or np.ptp(np.log(x[usable])) == 0:
    return NAN_FIT._replace(num_points=int(usable.sum())), skipped
  return fit_loglog_slope(x[usable], y[usable]), skipped


def run_dynamics(grid: Sequence[GridPoint], x_train, y_train, x_probe, *, depth: int = 4,
                 steps: int = 300, learning_rate: float = 1.0, seeds: int = 3, seed: int = 0,
                 progress: Callable[[str], None] | None = print,
                 on_point: Callable[[list], None] | None = None) -> DynamicsResult:
  """Measures every grid point and fits both changes against ``m n`` in log-log.

  ``on_point`` is called with the points measured so far after each one (to save them as they
  come). Points whose change is zero or not finite are left out of the fits (``skipped``).
  """
  depth = _validate.positive_int('depth', depth, minimum=2)
  points = []
  for i, g in enumerate(grid):
    p = measure_point(g, x_train, y_train, x_probe, depth=depth, steps=steps,
                      learning_rate=learning_rate, seeds=seeds, seed=seed)
    points.append(p)
    if progress:
      progress(f'[{i + 1}/{len(grid)}] panel {p.panel:3s} m={p.m:4d} n={p.n:4d} mn={p.mn:6d} '
               f'params={p.params:8d} |dK01|={p.delta_offdiag:.3e} '
               f'dK_F/K_F={p.delta_frob_rel:.3e} loss {p.loss_init:.3f}->{p.loss_final:.4f} '
               f'({p.seconds:.1f}s)')
    if on_point is not None:
      on_point(list(points))
  mn = [p.mn for p in points]
  fit_frob, skip_frob = fit_usable(mn, [p.delta_frob_rel for p in points])
  fit_off, skip_off = fit_usable(mn, [p.delta_offdiag for p in points])
  panel_fits = {}
  for panel in 'abc':
    pts = [p for p in points if panel in p.panel and p.delta_frob_rel > 0
           and math.isfinite(p.delta_frob_rel)]
    if len(pts) >= 3 and len({p.mn for p in pts}) >= 2:
      panel_fits[panel] = fit_loglog_slope([p.mn for p in pts], [p.delta_frob_rel for p in pts])
  return DynamicsResult(points, fit_frob, fit_off, panel_fits,
                        {'frob': skip_frob, 'offdiag': skip_off})
