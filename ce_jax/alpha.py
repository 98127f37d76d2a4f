"""Algorithm 1: fit the architecture constant alpha of Assumption 1.

Assumption 1 (paper Eq. 2 and 9) models one NTK entry's normalized second moment as::

    E[K^2] / E[K]^2 = exp(alpha * S),     S = sum_l 1 / fan_in_l

(dense: ``S = sum_l 1/n_l`` over hidden widths; bottleneck: ``blocks.bottleneck_fan_in_sum``).
For widths ``n`` we estimate the ratio by Monte Carlo over random initializations
(:func:`ce_jax.variance.ntk_moments`) and fit ``y = log ratio`` against ``S`` by weighted least
squares with weights ``1 / se(y)^2`` (``se(y) = se(ratio) / ratio``, delta method).

**Through the origin by default** (``intercept=False``): the paper's model ``exp(alpha S)`` has
no free constant, and it must give ratio 1 (a deterministic kernel) as S -> 0 (infinite width).
``intercept=True`` fits ``y = a + alpha S`` instead, as a diagnostic of model misfit
(``docs/ALPHA.md`` reports both).

Standard error of alpha: ``sqrt((X^T W X)^-1)`` scaled by ``sqrt(chi2 / dof)`` when that
exceeds 1 (a misfit inflates it, never shrinks it). ``r2`` is the weighted, centered
coefficient of determination ``1 - sum w (y - yhat)^2 / sum w (y - ybar_w)^2``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate, blocks

BLOCKS = ('dense', 'bottleneck')
INPUT_DISTRIBUTIONS = ('gaussian', 'relu', 'center_pixel', 'constant')


class AlphaFit(NamedTuple):
  """Weighted least-squares fit of ``log(E[K^2]/E[K]^2) = intercept + alpha * S``."""
  alpha: float
  alpha_stderr: float
  intercept: float           # 0.0 when fitted through the origin
  intercept_stderr: float    # 0.0 when fitted through the origin
  r2: float
  chi2_per_dof: float        # nan when dof == 0
  num_points: int


class AlphaPoint(NamedTuple):
  """One Monte-Carlo point of Algorithm 1."""
  width: int
  fan_in_sum: float
  ratio: float
  ratio_stderr: float
  mean: float                # E[K]
  var: float                 # Var[K]


class AlphaEstimate(NamedTuple):
  block: str
  fit: AlphaFit
  points: tuple
  trials: int


def _float_vector(name, values):
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a list of numbers, got {values!r}') from None
  if arr.ndim != 1:
    raise ValueError(f'{name} must be 1-dimensional, got shape {arr.shape}')
  _validate.finite_array(name, arr)
  return arr


def fit_alpha(fan_in_sums: Sequence[float], ratios: Sequence[float],
              ratio_stderrs: Optional[Sequence[float]] = None, *,
              intercept: bool = False) -> AlphaFit:
  """Fits ``log(ratio) = [a +] alpha * S`` by weighted least squares.

  Args:
    fan_in_sums: S of each point, ``(P,)``, finite and > 0.
    ratios: ``E[K^2]/E[K]^2`` of each point, ``(P,)``, finite and > 0.
    ratio_stderrs: standard errors of ``ratios`` ``(P,)``, finite and > 0; ``None`` -> an
      unweighted fit (and ``alpha_stderr`` from the residual scatter).
    intercept: also fit a constant ``a`` (default: through the origin, the paper's model).

  Returns:
    :class:`AlphaFit`.
  """
  s = _float_vector('fan_in_sums', fan_in_sums)
  r = _float_vector('ratios', ratios)
  if s.size == 0:
    raise ValueError('fan_in_sums must be a non-empty list, got []')
  if r.shape != s.shape:
    raise ValueError(f'ratios must have the same length as fan_in_sums ({s.size}), got {r.size}')
  if np.any(s <= 0):
    raise ValueError(f'fan_in_sums must be > 0, got {s[s <= 0].tolist()}')
  if np.any(r <= 0):
    raise ValueError(f'ratios must be > 0, got {r[r <= 0].tolist()}')
  min_points = 2 if intercept else 1
  if s.size < min_points:
    raise ValueError(f'fit_alpha needs at least {min_points} points (intercept={intercept}), '
                     f'got {s.size}')
  y = np.log(r)
  if ratio_stderrs is None:
    w = np.ones_like(y)
    weighted = False
  else:
    se = _float_vector('ratio_stderrs', ratio_stderrs)
    if se.shape != s.shape:
      raise ValueError(f'ratio_stderrs must have the same length as fan_in_sums ({s.size}), '
                       f'got {se.size}')
    if np.any(se <= 0):
      raise ValueError(f'ratio_stderrs must be > 0, got {se[se <= 0].tolist()}')
    w = (r / se) ** 2           # 1 / se(log ratio)^2
    weighted = True
  x = np.stack([np.ones_like(s), s], 1) if intercept else s[:, None]
  xtw = x.T * w
  cov = np.linalg.pinv(xtw @ x)
  beta = cov @ (xtw @ y)
  resid = y - x @ beta
  dof = s.size - x.shape[1]
  chi2 = float(np.sum(w * resid ** 2))
  chi2_dof = chi2 / dof if dof > 0 else float('nan')
  if weighted:
    scale = max(1.0, chi2_dof) if dof > 0 else 1.0
  else:
    scale = chi2_dof if dof > 0 else float('nan')
  cov = cov * scale
  ybar = np.sum(w * y) / np.sum(w)
  sst = float(np.sum(w * (y - ybar) ** 2))
  r2 = 1.0 - float(np.sum(w * resid ** 2)) / sst if sst > 0 else float('nan')
  alpha_idx = 1 if intercept else 0
  return AlphaFit(
      alpha=float(beta[alpha_idx]), alpha_stderr=float(math.sqrt(cov[alpha_idx, alpha_idx])),
      intercept=float(beta[0]) if intercept else 0.0,
      intercept_stderr=float(math.sqrt(cov[0, 0])) if intercept else 0.0,
      r2=r2, chi2_per_dof=chi2_dof, num_points=int(s.size))


def block_input(block: str, key, *, input_dim: int = 748, in_channels: int = 256,
                spatial: int = 3, num_inputs: int = 1, input_distribution: str = 'gaussian'):
  """The fixed input(s) whose diagonal NTK entry Algorithm 1 measures.

  dense: ``(num_inputs, input_dim)`` with entries N(0, 1) (only ``|x|`` matters, see
  :func:`ce_jax.variance.dense_diag_sampler`; ``input_distribution`` is ignored).
  bottleneck: ``(num_inputs, spatial, spatial, in_channels)``:

  * ``'gaussian'``: i.i.d. N(0, 1) entries (independent pixels);
  * ``'relu'``: ``relu`` of them (post-activation input, pixels correlated ~1/pi);
  * ``'center_pixel'``: one N(0, 1) pixel at the centre, zeros elsewhere (only the centre tap
    of the 3x3 convolution is active: its effective fan-in is ``n``);
  * ``'constant'``: one N(0, 1) pixel repeated over the window (a perfectly smooth input; the
    3x3 convolution then acts like a 1x1 of fan-in ``n``).

  (``'center_pixel'`` and ``'constant'`` draw the pixel as ``normal(key, (N, 1, 1, C))``.)
  """
  _validate.choice('block', block, BLOCKS)
  _validate.choice('input_distribution', input_distribution, INPUT_DISTRIBUTIONS)
  num_inputs = _validate.positive_int('num_inputs', num_inputs)
  if block == 'dense':
    return jax.random.normal(key, (num_inputs, _validate.positive_int('input_dim', input_dim)))
  spatial = _validate.positive_int('spatial', spatial)
  in_channels = _validate.positive_int('in_channels', in_channels)
  shape = (num_inputs, spatial, spatial, in_channels)
  if input_distribution in ('gaussian', 'relu'):
    x = jax.random.normal(key, shape)
    return jax.nn.relu(x) if input_distribution == 'relu' else x
  pixel = jax.random.normal(key, (num_inputs, 1, 1, in_channels))
  if input_distribution == 'constant':
    return jnp.broadcast_to(pixel, shape)
  c = spatial // 2
  return jnp.zeros(shape, pixel.dtype).at[:, c:c + 1, c:c + 1, :].set(pixel)


def fan_in_sum(block: str, width: int, *, depth: int = 6, in_channels: int = 256,
               fan_in_convention: str = 'channels') -> float:
  """S of Assumption 1 for ``block`` at width ``n`` (dense: ``(depth - 1)/n``)."""
  _validate.choice('block', block, BLOCKS)
  width = _validate.positive_int('width', width)
  if block == 'dense':
    return float(blocks.dense_uniform_fan_in_sum(width, depth))
  return float(blocks.bottleneck_fan_in_sum(width, in_channels, fan_in_convention))


def estimate_alpha(block: str = 'bottleneck', widths: Sequence[int] = (1, 2, 4, 8, 16, 32, 64,
                                                                     128, 256),
                   trials: int = 2000, key=None, *, fan_in_convention: str = 'channels',
                   depth: int = 6, input_dim: int = 748, in_channels: int = 256,
                   out_channels: int = 256, input_distribution: str = 'gaussian',
                   intercept: bool = False, chunk_size: int = 50,
                   progress: Optional[Callable[[int, int, int], None]] = None) -> AlphaEstimate:
  """Algorithm 1: Monte-Carlo ratios ``E[K^2]/E[K]^2`` of one diagonal NTK entry, then the fit.

  Args:
    block: ``'dense'`` (member of ``depth`` weight matrices, all hidden widths ``n``, scalar
      output) or ``'bottleneck'`` (:class:`NTKBottleneck`, cardinality 1, width ``n``,
      ``in_channels -> out_channels``, centre readout).
    widths: widths ``n`` to sample (each >= 1, at least one).
    trials: random initializations per width (>= 2; the paper uses 2000).
    key: PRNG key (``jax.random.PRNGKey(0)`` if None). The input is drawn from
      ``fold_in(key, 0)``, width ``i``'s initializations from ``fold_in(key, i + 1)``.
    fan_in_convention: S convention for the bottleneck (``'channels'`` or ``'kernel'``).
    depth, input_dim: dense member shape. in_channels, out_channels: bottleneck shape.
    input_distribution: bottleneck input, one of ``INPUT_DISTRIBUTIONS`` (see
      :func:`block_input`).
    intercept: fit with an intercept (default through the origin).
    chunk_size: initializations per vmapped chunk (memory bound).
    progress: optional ``progress(width_index, done, total)``.

  Returns:
    :class:`AlphaEstimate` with the fit and the per-width points.
  """
  from ce_jax import variance  # pylint: disable=g-import-not-at-top
  _validate.choice('block', block, BLOCKS)
  widths = _validate.int_list('widths', widths)
  trials = _validate.positive_int('trials', trials, minimum=2)
  _validate.choice('fan_in_convention', fan_in_convention, blocks.FAN_IN_CONVENTIONS)
  depth = _validate.positive_int('depth', depth, minimum=2)
  key = jax.random.PRNGKey(0) if key is None else key
  x = block_input(block, jax.random.fold_in(key, 0), input_dim=input_dim,
                  in_channels=in_channels, input_distribution=input_distribution)
  points = []
  for i, n in enumerate(widths):
    if block == 'dense':
      sampler = variance.dense_diag_sampler((n,) * (depth - 1), x)
    else:
      sampler = variance.bottleneck_diag_sampler(n, x, in_channels=in_channels,
                                                 out_channels=out_channels)
    cb = None if progress is None else (lambda done, total, i=i: progress(i, done, total))
    mom = variance.ntk_moments(sampler, jax.random.fold_in(key, i + 1), trials,
                               chunk_size=chunk_size, progress=cb)
    points.append(AlphaPoint(
        width=n, fan_in_sum=fan_in_sum(block, n, depth=depth, in_channels=in_channels,
                                       fan_in_convention=fan_in_convention),
        ratio=float(mom.ratio[0]), ratio_stderr=float(mom.ratio_stderr[0]),
        mean=float(mom.mean[0]), var=float(mom.var[0])))
  fit = fit_alpha([p.fan_in_sum for p in points], [p.ratio for p in points],
                  [p.ratio_stderr for p in points], intercept=intercept)
  return AlphaEstimate(block=block, fit=fit, points=tuple(points), trials=trials)
