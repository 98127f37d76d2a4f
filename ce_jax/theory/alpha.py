"""Algorithm 1: fit the architecture constant alpha of Assumption 1.

Assumption 1 (paper Eq. 2 and 9) models one NTK entry's normalized second moment as::

    E[K^2] / E[K]^2 = exp(alpha * S),     S = sum_l 1 / fan_in_l

with S read from the member's module (:mod:`ce_jax.design.member`; dense member: ``S = sum_l 1/n_l``
over the hidden widths; bottleneck path: ``1/256 + 1/n + 1/n`` under the channels convention).
For widths ``n`` we estimate the ratio by Monte Carlo over random initializations
(:func:`ce_jax.theory.variance.ntk_moments`) of any member (:func:`estimate_alpha`) and fit
``y = log ratio`` against ``S`` by weighted least squares with weights ``1 / se(y)^2``
(``se(y) = se(ratio) / ratio``, delta method).

**The default recipe** (chosen on the evidence in ``docs/ALPHA.md``): widths
``DEFAULT_WIDTHS`` = 4..256 (n = 1, 2 are heavy-tailed: their Monte-Carlo ratio and standard
error are biased low together), a first-degree polynomial WITH intercept (the paper's "first
degree polynomial"; the intercept absorbs the curvature of ``log ratio`` at the ends of the
range and the input layer's 1/256, which carries no variance for a fixed input), the channels
convention. On the bottleneck it gives 1.60 (the paper's value) and, through the search, the
paper's 37x10d and 12x10d. ``intercept=False`` fits through the origin (the model without a
free constant).

Standard error of alpha: ``sqrt((X^T W X)^-1)`` scaled by ``sqrt(chi2 / dof)`` when that
exceeds 1 (a misfit inflates it, never shrinks it). ``r2`` is the weighted, centered
coefficient of determination ``1 - sum w (y - yhat)^2 / sum w (y - ybar_w)^2``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.design import member as member_lib
from ce_jax.design import presets
from ce_jax.design.member import Member
from ce_jax.theory import conditional
from ce_jax.theory import ntk
from ce_jax.theory import variance


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
  covariance: float = 0.0    # Cov(intercept, alpha) of the fit (0 through the origin)
  warnings: tuple = ()       # why the fit is degenerate (alpha <= 0, R^2 undefined, ...)


class AlphaPoint(NamedTuple):
  """One Monte-Carlo point of Algorithm 1 (``fan_in_sum`` under the estimate's convention)."""
  width: Any                 # int, or per-layer tuple
  fan_in_sum: float
  ratio: float
  ratio_stderr: float
  mean: float                # E[K]
  var: float                 # Var[K]
  params: int = 0            # beta(n) of the member
  flops: int = 0             # FLOPs of the member on one example
  fan_in_sums: dict = {}     # {'channels': S, 'kernel': S}


class AlphaEstimate(NamedTuple):
  """Algorithm 1's result: the fit, the points, and the fits under both conventions."""
  block: str
  fit: AlphaFit
  points: tuple
  trials: int
  fan_in_convention: str = 'channels'
  intercept: bool = True
  fits: dict = {}
  parameterization: str = 'as_given'
  input_distribution: str = 'gaussian'
  warnings: tuple = ()       # the fit's warnings (``fit.warnings``)


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
              intercept: bool = True) -> AlphaFit:
  """Fits ``log(ratio) = [a +] alpha * S`` by weighted least squares.

  Args:
    fan_in_sums: S of each point, ``(P,)``, finite and > 0.
    ratios: ``E[K^2]/E[K]^2`` of each point, ``(P,)``, finite and > 0.
    ratio_stderrs: standard errors of ``ratios`` ``(P,)``, finite and > 0; ``None`` -> an
      unweighted fit (and ``alpha_stderr`` from the residual scatter).
    intercept: also fit a constant ``a`` (default, the recipe); False: through the origin.

  Returns:
    :class:`AlphaFit`. Its ``warnings`` (a tuple of one-line strings, empty for a sound fit)
    say when the fit is degenerate: ``alpha <= 0`` (the ratio does not grow with S, e.g.
    ratios below 1, which no variance can give), an undefined ``R^2`` (all log ratios equal)
    or a non-finite standard error. Such a fit does not describe the member: the solver
    refuses ``alpha <= 0``.
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
  fit = AlphaFit(
      alpha=float(beta[alpha_idx]), alpha_stderr=float(math.sqrt(cov[alpha_idx, alpha_idx])),
      intercept=float(beta[0]) if intercept else 0.0,
      intercept_stderr=float(math.sqrt(cov[0, 0])) if intercept else 0.0,
      r2=r2, chi2_per_dof=chi2_dof, num_points=int(s.size),
      covariance=float(cov[0, 1]) if intercept else 0.0)
  return fit._replace(warnings=fit_warnings(fit, r))


def fit_warnings(fit: AlphaFit, ratios: Sequence[float] = ()) -> tuple:
  """One-line warnings for a degenerate fit (see :func:`fit_alpha`); ``()`` when sound."""
  out = []
  r = np.asarray(ratios, np.float64).reshape(-1)
  below = int(np.sum(r < 1.0))
  if not math.isfinite(fit.alpha) or fit.alpha <= 0:
    why = (f'{below} of {r.size} ratios E[K^2]/E[K]^2 are below 1, which no variance gives'
           if below else 'the ratio does not grow with S')
    out.append(f'degenerate fit: alpha = {fit.alpha:.4g} <= 0 ({why}): the fit does not '
               'describe this member; raise the trials or use narrower widths')
  elif below:
    out.append(f'{below} of {r.size} ratios E[K^2]/E[K]^2 are below 1, which no variance '
               'gives: too few trials?')
  if not math.isfinite(fit.r2):
    out.append('R^2 is undefined (the log ratios do not vary): the fit says nothing about '
               'alpha')
  if not math.isfinite(fit.alpha_stderr):
    out.append(f'the standard error of alpha is {fit.alpha_stderr!r}: too few points for the '
               'fit\'s parameters')
  return tuple(out)


class LoadedFit(NamedTuple):
  """What the solver needs of a fit saved as JSON (fit_alpha.py / design.py ``--json_out``)."""
  alpha: float
  alpha_stderr: float | None
  intercept: float
  covariance: float


def load_fit(path: str, flag: str = '--alpha_from',
             fan_in_convention: str | None = None) -> LoadedFit:
  """Reads ``alpha`` (and ``alpha_stderr``, ``intercept``, ``covariance``) from a fit's JSON.

  With ``fan_in_convention``, the fit under that convention (the JSON's ``fits`` holds both);
  a JSON fitted under another convention without ``fits`` is refused (an alpha means nothing
  under another convention). Raises a one-line ``ValueError`` naming ``flag`` when the file is
  unreadable, not JSON, or has no valid ``alpha``.
  """
  try:
    with open(path) as f:
      payload = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'cannot read {flag} {path!r}: {str(e).splitlines()[0]}') from None
  if not isinstance(payload, dict) or 'alpha' not in payload:
    raise ValueError(f'{flag} {path!r} has no key "alpha"')
  saved = payload.get('fan_in_convention')
  if fan_in_convention is not None and saved not in (None, fan_in_convention):
    fits = payload.get('fits') or {}
    if not isinstance(fits.get(fan_in_convention), dict):
      raise ValueError(f'{flag} {path!r} holds a fit under the {saved} convention, not '
                       f'{fan_in_convention}; refit with --fan_in_convention={fan_in_convention}')
    payload = dict(fits[fan_in_convention])
  a = _validate.finite_positive(f'alpha (from {flag})', payload['alpha'])
  se = payload.get('alpha_stderr')
  if se is not None:
    se = float(se)
    if not (math.isfinite(se) and se >= 0):
      raise ValueError(f'alpha_stderr (from {flag}) must be a finite number >= 0, got {se!r}')
  b = float(payload.get('intercept') or 0.0)
  cov = float(payload.get('covariance') or 0.0)
  if not (math.isfinite(b) and math.isfinite(cov)):
    raise ValueError(f'intercept and covariance (from {flag}) must be finite, got {b!r}, {cov!r}')
  return LoadedFit(a, se, b, cov)


def block_input(block: str, key, *, input_dim: int = 748, in_channels: int = 256,
                spatial: int = 3, num_inputs: int = 1, input_distribution: str = 'gaussian'):
  """The fixed input(s) whose diagonal NTK entry Algorithm 1 measures.

  dense: ``(num_inputs, input_dim)`` with entries N(0, 1) (only ``|x|`` matters, see
  :func:`ce_jax.theory.variance.dense_diag_sampler`; ``input_distribution`` is ignored).
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
  """S of Assumption 1 for a preset ``block`` at width ``n``, read from its module."""
  _validate.choice('block', block, BLOCKS)
  width = _validate.positive_int('width', width)
  return member_lib.fan_in_sum(_preset(block, depth=depth, in_channels=in_channels), width,
                               fan_in_convention)


def fan_in_sums(block: str, widths, *, depth: int = 6, in_channels: int = 256,
                fan_in_convention: str = 'channels') -> np.ndarray:
  """:func:`fan_in_sum` at each of ``widths`` ((G,) ints), float64 (G,): one count model of the
  preset for the whole grid instead of one trace per width (the same exact values)."""
  _validate.choice('block', block, BLOCKS)
  _validate.choice('fan_in_convention', fan_in_convention, member_lib.FAN_IN_CONVENTIONS)
  prof = member_lib.profile(_preset(block, depth=depth, in_channels=in_channels), widths)
  return np.asarray(prof.fan_in_sum[fan_in_convention], np.float64)


def _preset(block: str, *, depth: int = 6, input_dim: int = 748, in_channels: int = 256,
            out_channels: int = 256) -> Member:
  if block == 'dense':
    return presets.dense(depth, input_dim)
  return presets.bottleneck(in_channels=in_channels, out_channels=out_channels)


PARAMETERIZATIONS = ('as_given', 'ntk')
SAMPLERS = ('auto', 'conditional', 'full_weights')


def _init_scales(module, x, kwargs, key, min_entries: int = 4096, max_draws: int = 256):
  """Per-leaf initialization variance of the ``'params'`` leaves, pooled over draws.

  For the ``'ntk'`` reweighting: a leaf initialized with variance sigma^2 is reparameterized as
  ``theta = sigma z`` with ``z`` of variance 1, so ``|df/dz|^2 = sigma^2 |df/dtheta|^2``.
  Constant-initialized leaves (biases, normalization scales: variance 0) keep weight 1.
  """
  params = module.init(key, x[:1], **kwargs)['params']
  leaves, treedef = jax.tree_util.tree_flatten(params)
  out = []
  for i, leaf in enumerate(leaves):
    draws = int(min(max_draws, max(1, -(-min_entries // max(1, leaf.size)))))
    keys = jax.random.split(jax.random.fold_in(key, i + 1), draws)
    sq = jax.vmap(lambda k: jnp.mean(jnp.square(jax.tree_util.tree_leaves(
        module.init(k, x[:1], **kwargs)['params'])[i])))(keys)
    mean_sq = float(jnp.mean(sq))
    out.append(mean_sq if mean_sq > 0 else 1.0)
  return jax.tree_util.tree_unflatten(treedef, out)


def member_sampler(member: Member, width, x, *, parameterization: str = 'as_given',
                   scale_key=None, sampler: str = 'auto'):
  """``key -> (N,)``: the diagonal NTK entry ``K(x_i, x_i)`` of ``member`` at ``width``.

  The entry is ``|d r(x_i) / d theta|^2`` of the member's scalar readout ``r``
  (:func:`ce_jax.design.member.apply_readout`) over its ``'params'`` (other collections, e.g.
  BatchNorm statistics, are held at their initial values: the member is applied with
  ``member.apply_kwargs``, e.g. ``train=False``). Initializations use the module's own
  initializers (``parameterization='as_given'``, what the member trains with); ``'ntk'``
  reweights each leaf's gradient by its initialization variance, which is the NTK of the same
  network in the NTK parameterization (weights N(0, 1) scaled in the forward pass).

  ``sampler``: ``'auto'`` takes the fastest exact path: the exact-in-law conditional sampler
  (:mod:`ce_jax.theory.conditional`, no weight matrix is formed) for the library's NTK-parameterized
  dense member and bottleneck at one input, else the closed-form structured diagonal for the
  dense member, else one reverse-mode pass per input (vmapped) over fully sampled weights.
  ``'conditional'`` insists on the first (a one-line error where it does not apply);
  ``'full_weights'`` never takes it. The conditional draws differ from the full-weight ones;
  the entry's law is the same.
  """
  _validate.choice('parameterization', parameterization, PARAMETERIZATIONS)
  _validate.choice('sampler', sampler, SAMPLERS)
  module = member.build(width)
  kwargs = member.kwargs
  x = jnp.asarray(x, member.input_dtype)
  if sampler != 'full_weights':
    fast = None
    if parameterization == 'as_given':
      fast = conditional.sampler_for(module, x, readout=member.readout, apply_kwargs=kwargs)
    if fast is not None:
      return fast
    if sampler == 'conditional':
      raise ValueError(f"sampler='conditional' does not apply to member {member.name!r} "
                       f"({type(module).__name__}, {np.shape(x)[0]} input(s), parameterization "
                       f"{parameterization!r}); it needs the library's NTK-parameterized dense "
                       f"member or bottleneck, one input, parameterization 'as_given'; use "
                       f"sampler='auto'")
  if (parameterization == 'as_given' and not kwargs and member.readout == 'center'
      and ntk.structured_applies(module.apply) and getattr(module, 'num_outputs', 0) == 1):
    diag_fn = ntk.ntk_diagonal_fn(module.apply, backend='structured')

    def structured(key):
      return diag_fn(x, module.init(key, x[:1]))
    return structured
  weights = None
  if parameterization == 'ntk':
    scale_key = jax.random.PRNGKey(12345) if scale_key is None else scale_key
    weights = _init_scales(module, x, kwargs, scale_key)

  def one(variables, xi):
    rest = {k: v for k, v in variables.items() if k != 'params'}

    def scalar(p):
      y = module.apply({'params': p, **rest}, xi[None], **kwargs)
      return member_lib.apply_readout(member, y)[0]
    g = jax.grad(scalar)(variables['params'])
    if weights is None:
      return sum(jnp.sum(l * l) for l in jax.tree_util.tree_leaves(g))
    return sum(w * jnp.sum(l * l) for l, w in zip(jax.tree_util.tree_leaves(g),
                                                   jax.tree_util.tree_leaves(weights)))

  def sample_fn(key):
    variables = module.init(key, x[:1], **kwargs)
    return jax.vmap(lambda xi: one(variables, xi))(x)

  return sample_fn


def _chunk_sizes(member: Member, widths, prof, chunk_size: int) -> list:
  """Initializations per chunk for the full-weight samplers, one per width.

  Memory: parameters, gradients and activations of one chunk of initializations. Refuses a
  width whose single initialization cannot fit, shrinks the chunk for the others.
  """
  chunks = []
  for i, n in enumerate(widths):
    per_init = 4.0 * np.dtype(member.input_dtype).itemsize * float(prof.params[i]) + 1e6
    _validate.fits_in_memory(f'width {n!r} ({int(prof.params[i]):,} parameters per '
                             f'initialization)', per_init)
    budget = 0.25 * (_validate.memory_bytes() or 8 * 2 ** 30)
    chunks.append(int(max(1, min(chunk_size, budget // per_init))))
  return chunks


DEFAULT_WIDTHS = (4, 8, 16, 32, 64, 128, 256)
"""Algorithm 1's default widths. n = 1, 2 are left out: there the entry is heavy-tailed and the
Monte-Carlo ratio and its standard error are biased low together (docs/ALPHA.md)."""


def estimate_alpha(block: Any = 'bottleneck', widths: Sequence[Any] = DEFAULT_WIDTHS,
                   trials: int = 2000, key=None, *, fan_in_convention: str = 'channels',
                   depth: int = 6, input_dim: int = 748, in_channels: int = 256,
                   out_channels: int = 256, input_distribution: str = 'gaussian',
                   intercept: bool = True, chunk_size: int = 50,
                   parameterization: str = 'as_given', sampler: str = 'auto',
                   progress: Optional[Callable[[int, int, int], None]] = None,
                   on_point: Optional[Callable[[AlphaPoint], None]] = None) -> AlphaEstimate:
  """Algorithm 1 for any member: Monte-Carlo ``E[K^2]/E[K]^2`` of one diagonal entry, then the fit.

  Args:
    block: a :class:`ce_jax.design.member.Member`, or a preset name: ``'dense'`` (member of ``depth``
      weight matrices on ``input_dim``-d inputs, hidden widths ``n``, scalar output) or
      ``'bottleneck'`` (one path ``in_channels -> n -> n -> out_channels``, centre readout).
    widths: widths to sample (ints, or per-layer tuples for such a member; at least one).
    trials: random initializations per width (>= 2; the paper uses 2000).
    key: PRNG key (``jax.random.PRNGKey(0)`` if None). The input is drawn from
      ``fold_in(key, 0)``. Full-weight samplers: width ``i``'s initializations from
      ``fold_in(key, i + 1)``, trial t from ``fold_in(., t)``. Conditional sampler (every width
      in one program): trial t from ``fold_in(fold_in(key, 1), t)``, width ``n`` of it from
      ``fold_in(., n)`` (:mod:`ce_jax.theory.conditional`). Either way the results do not depend on
      ``chunk_size`` or the device count.
    fan_in_convention: S of the fit (``'channels'`` or ``'kernel'``); both fits are reported
      in ``fits``.
    depth, input_dim, in_channels, out_channels: preset shapes (ignored for a Member).
    input_distribution: one of ``ce_jax.design.member.INPUT_DISTRIBUTIONS``.
    intercept: fit ``log ratio = a + alpha S`` (the default recipe, a first-degree polynomial as
      in the paper); ``False`` fits through the origin.
    chunk_size: initializations per vmapped chunk (memory bound).
    parameterization: ``'as_given'`` (the module's own initializers) or ``'ntk'`` (see
      :func:`member_sampler`).
    sampler: ``'auto'`` | ``'conditional'`` | ``'full_weights'`` (:func:`member_sampler`).
    progress: optional ``progress(width_index, done, total)``.
    on_point: optional ``on_point(point)``, called with each :class:`AlphaPoint` as soon as its
      width is done (to save the points as they come).

  Returns:
    :class:`AlphaEstimate` with the fit under ``fan_in_convention``, the per-width points and
    ``fits`` under both conventions; ``warnings`` (also ``fit.warnings``) says when the fit is
    degenerate (:func:`fit_alpha`).
  """
  if isinstance(block, Member):
    member = block
    name = member.name
  else:
    _validate.choice('block', block, BLOCKS)
    depth = _validate.positive_int('depth', depth, minimum=2)
    member = _preset(block, depth=depth, input_dim=input_dim, in_channels=in_channels,
                     out_channels=out_channels)
    name = block
  if isinstance(widths, (str, int, np.integer)):
    widths = _validate.int_list('widths', widths)
  widths = [member_lib.canonical_width(w, f'widths[{i}]') for i, w in enumerate(widths)]
  if not widths:
    raise ValueError('widths must be a non-empty list of widths, got []')
  _validate.distinct('widths', widths)
  trials = _validate.positive_int('trials', trials, minimum=2)
  _validate.choice('fan_in_convention', fan_in_convention, member_lib.FAN_IN_CONVENTIONS)
  _validate.choice('parameterization', parameterization, PARAMETERIZATIONS)
  _validate.choice('sampler', sampler, SAMPLERS)
  _validate.choice('input_distribution', input_distribution, INPUT_DISTRIBUTIONS)
  chunk_size = _validate.positive_int('chunk_size', chunk_size)
  if intercept and len(widths) < 2:
    raise ValueError(f'the fit with intercept needs at least 2 widths, got {len(widths)} '
                     f'({widths[0]!r}); give more widths or intercept=False')
  key = jax.random.PRNGKey(0) if key is None else key
  if block == 'dense':
    x = block_input('dense', jax.random.fold_in(key, 0), input_dim=input_dim)
  else:
    x = member_lib.example_batch(member, jax.random.fold_in(key, 0), 1, input_distribution)
  prof = member_lib.profile(member, widths if all(np.ndim(w) == 0 for w in widths)
                            else np.asarray([member_lib.width_vector(w) for w in widths]))
  moments = None
  if sampler != 'full_weights' and parameterization == 'as_given':
    joint = conditional.sampler_for([member.build(n) for n in widths], x,
                                    readout=member.readout, apply_kwargs=member.kwargs)
    if joint is not None:   # every width in one program (ce_jax.theory.conditional)
      cb = None if progress is None else (
          lambda done, total: [progress(i, done, total) for i in range(len(widths))])
      mom = variance.ntk_moments(joint, jax.random.fold_in(key, 1), trials,
                                 chunk_size=chunk_size, progress=cb)
      moments = [mom._replace(**{f: getattr(mom, f)[i:i + 1] for f in mom._fields
                                 if f != 'trials'}) for i in range(len(widths))]
  if moments is None and sampler == 'conditional':
    for n in widths:   # the one-line reason where one width does not qualify
      member_sampler(member, n, x, parameterization=parameterization, sampler='conditional')
    raise ValueError(f"sampler='conditional' applies to each width of {widths} alone but not to "
                     f"all of them in one program (modules of different kinds or shapes); use "
                     f"sampler='auto'")
  if moments is None:
    chunks = _chunk_sizes(member, widths, prof, chunk_size)
  points = []
  for i, n in enumerate(widths):
    if moments is None:
      sample_fn = member_sampler(member, n, x, parameterization=parameterization,
                                 sampler='full_weights')
      cb = None if progress is None else (lambda done, total, i=i: progress(i, done, total))
      mom = variance.ntk_moments(sample_fn, jax.random.fold_in(key, i + 1), trials,
                                 chunk_size=chunks[i], progress=cb)
    else:
      mom = moments[i]
    if not (np.isfinite(mom.ratio[0]) and mom.ratio[0] > 0 and mom.ratio_stderr[0] > 0):
      raise ValueError(f'Monte-Carlo ratio at width {n!r} is degenerate (ratio '
                       f'{float(mom.ratio[0])!r}, stderr {float(mom.ratio_stderr[0])!r}): '
                       f'is the NTK entry constant over initializations?')
    points.append(AlphaPoint(
        width=n, fan_in_sum=float(prof.fan_in_sum[fan_in_convention][i]),
        ratio=float(mom.ratio[0]), ratio_stderr=float(mom.ratio_stderr[0]),
        mean=float(mom.mean[0]), var=float(mom.var[0]),
        params=int(prof.params[i]), flops=int(prof.flops[i]),
        fan_in_sums={c: float(prof.fan_in_sum[c][i]) for c in member_lib.FAN_IN_CONVENTIONS}))
    if on_point is not None:
      on_point(points[-1])
  fits = {}
  for conv in member_lib.FAN_IN_CONVENTIONS:
    fits[conv] = fit_alpha([p.fan_in_sums[conv] for p in points], [p.ratio for p in points],
                           [p.ratio_stderr for p in points], intercept=intercept)
  return AlphaEstimate(block=name, fit=fits[fan_in_convention], points=tuple(points),
                       trials=trials, fan_in_convention=fan_in_convention, intercept=intercept,
                       fits=fits, parameterization=parameterization,
                       input_distribution=input_distribution,
                       warnings=fits[fan_in_convention].warnings)
