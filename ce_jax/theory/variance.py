"""NTK statistics over random initializations: moments (Assumption 1, Eq. 11) and the NMK (Eq. 5).

Everything here is a pure function of an explicit PRNG key. A *sampler* is a function
``sample_fn(key) -> array`` returning NTK entries (any fixed shape, e.g. ``(N1, N2)`` or
``(N,)``) for ONE random initialization drawn from ``key``. Trial ``i`` always uses
``jax.random.fold_in(key, i)``, so results do not depend on ``chunk_size`` (nor on the number
of trials: the first T trials of a longer run are the same), and no array of all keys is formed.

Initializations are processed in chunks of ``chunk_size`` (``jax.vmap`` inside a chunk, one
jitted call per chunk, the next chunk dispatched while the last is summed), so memory is bounded
by one chunk of parameters and Jacobians, whatever ``trials``:

* :func:`ntk_moments` streams float64 sums of the first four powers of the shifted entries and
  computes::

      mean  = E[K],   var = Var[K],   ratio = E[K^2] / E[K]^2  (= 1 + Var/mean^2)

  with standard errors by the delta method from the sample covariance of ``(K, K^2)``:
  ``se(mean)^2 = Var K / T``, ``se(var)^2 = (mu_4 - var^2) / T``,
  ``se(ratio)^2 = g^T Cov(K, K^2) g / T`` with ``g = (-2 E[K^2]/E[K]^3, 1/E[K]^2)``, and
  ``se(log ratio) = se(ratio) / ratio``.
* :func:`neural_mean_kernel` streams sums of shifted entries (memory independent of ``trials``)
  and returns the Monte-Carlo NMK ``E_theta[K(theta)]`` with its standard error
  ``sqrt(Var K / T)``.

Samplers for the library's models: :func:`dense_ntk_sampler` (a member, or the collegial
ensemble of ``m`` members, ``K_e = (1/m) sum_j K(theta_j)``) and :func:`bottleneck_diag_sampler`
(the diagonal entry of the NTK bottleneck used by Algorithm 1).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ce_jax import _validate
from ce_jax.design import accounting
from ce_jax.models import dense
from ce_jax.models.bottleneck import NTKBottleneck
from ce_jax.theory import ntk


SampleFn = Callable[[jax.Array], jax.Array]
Progress = Optional[Callable[[int, int], None]]


class Moments(NamedTuple):
  """Moments of NTK entries over ``trials`` initializations, each of the entries' shape."""
  mean: np.ndarray
  mean_stderr: np.ndarray
  var: np.ndarray
  var_stderr: np.ndarray
  ratio: np.ndarray          # E[K^2] / E[K]^2
  ratio_stderr: np.ndarray
  log_ratio: np.ndarray      # log(E[K^2] / E[K]^2)
  log_ratio_stderr: np.ndarray
  trials: int


class MeanKernel(NamedTuple):
  """Monte-Carlo Neural Mean Kernel ``E_theta[K(theta)]`` and its standard error."""
  mean: np.ndarray
  stderr: np.ndarray
  trials: int


def _check_common(key, trials, chunk_size, min_trials=2):
  trials = _validate.positive_int('trials', trials, minimum=min_trials)
  chunk_size = _validate.positive_int('chunk_size', chunk_size)
  if not (hasattr(key, 'shape') and hasattr(key, 'dtype')):
    raise ValueError(f'key must be a jax.random key array, got {type(key).__name__}')
  return trials, min(chunk_size, trials)


def trial_keys(key, start, count: int):
  """Keys of trials ``start .. start + count - 1``: trial ``i`` uses ``fold_in(key, i)``.

  The key of a trial depends on nothing but ``key`` and ``i`` (not on the number of trials, the
  chunk size or the devices), and no array of all keys is ever formed.
  """
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(count))


def _cache(sample_fn: SampleFn) -> dict:
  cache = getattr(sample_fn, '_ce_jax_compiled', None)
  if not isinstance(cache, dict):
    cache = {}
    try:
      sample_fn._ce_jax_compiled = cache  # pylint: disable=protected-access
    except (AttributeError, TypeError):
      pass
  return cache


def _compiled_chunk(sample_fn: SampleFn, chunk_size: int):
  """``(key, start) -> (chunk_size,) + entry`` samples, jitted once per sampler and chunk size.

  Cached on the sampler itself (an attribute), so repeated Monte-Carlo calls with the same
  sampler do not retrace; samplers that cannot carry attributes get fresh functions.
  """
  cache = _cache(sample_fn)
  if chunk_size not in cache:
    batched = _batched(sample_fn)
    cache[chunk_size] = jax.jit(lambda k, start: batched(trial_keys(k, start, chunk_size)))
  return cache[chunk_size]


def _has_convolution(jaxpr) -> bool:
  for e in jaxpr.eqns:
    if accounting.flop_kind(e) == 'conv':   # stock or oneDNN (its registered FLOP rule)
      return True
    for p in e.params.values():
      for v in (p if isinstance(p, (tuple, list)) else (p,)):
        sub = getattr(v, 'jaxpr', v)
        if hasattr(sub, 'eqns') and _has_convolution(sub):
          return True
  return False


def _batched(sample_fn: SampleFn):
  """``keys (B,) -> (B,) + entry``: ``vmap``, or a sequential ``lax.map`` for convolutions.

  Batching one sampler over initializations batches its WEIGHTS: dense layers become batched
  matrix products (fast), but convolutions become grouped convolutions with one group per
  trial, which XLA:CPU runs 4-7x slower than the trials one after the other (measured on the
  bottleneck path, widths 64 and 256). The choice depends on the sampler only, never on the
  timing, so the samples do not change from run to run.
  """
  if batching(sample_fn) == 'sequential':
    return lambda keys: jax.lax.map(sample_fn, keys)
  return jax.vmap(sample_fn)


def batching(sample_fn: SampleFn) -> str:
  """``'sequential'`` (samplers with convolutions) or ``'vmap'``; see :func:`_batched`."""
  cache = _cache(sample_fn)
  if 'batching' not in cache:
    uses_conv = _has_convolution(jax.make_jaxpr(sample_fn)(jax.random.PRNGKey(0)).jaxpr)
    cache['batching'] = 'sequential' if uses_conv else 'vmap'
  return cache['batching']


def _compiled_round(sample_fn: SampleFn, chunk_size: int, devices: tuple):
  """``(key, starts (D,)) -> (D, chunk_size) + entry``: one chunk per device, in one program.

  ``starts`` is sharded over a 1-D mesh of ``devices`` (all devices of all processes), so
  device d computes the trials ``starts[d] .. starts[d] + chunk_size - 1``.
  """
  cache = _cache(sample_fn)
  tag = ('round', chunk_size, devices)
  if tag not in cache:
    spec = jax.sharding.PartitionSpec('trials')
    mesh = jax.sharding.Mesh(np.asarray(devices, dtype=object), ('trials',))
    sharded = jax.sharding.NamedSharding(mesh, spec)
    batched = _batched(sample_fn)

    def local(k, starts):   # on each device: its one start -> (1, chunk_size) + entry
      return batched(trial_keys(k, starts[0], chunk_size))[None]
    shard_map = getattr(jax, 'shard_map', None)
    if shard_map is None:   # jax < 0.7
      from jax.experimental.shard_map import shard_map  # pylint: disable=g-import-not-at-top
    fn = shard_map(local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec),
                   out_specs=spec)
    cache[tag] = (jax.jit(fn), sharded)
  return cache[tag]


def _gather(x) -> np.ndarray:
  """A (possibly multi-process) global array as one numpy array on every process."""
  if getattr(x, 'is_fully_addressable', True):
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _chunks(sample_fn: SampleFn, key, trials: int, chunk_size: int, progress: Progress):
  """Yields float64 numpy chunks of samples ``(valid,) + entry``, in trial order.

  On one device: one jitted chunk at a time, the next dispatched while the last is summed. On
  several devices (and processes, with ``jax.distributed``): each round runs one chunk per
  device of every process and gathers them in trial order, so every process sees the same
  samples as one device would (the keys depend on the trial index only).
  """
  devices = tuple(jax.devices())
  if len(devices) > 1:
    fn, sharding = _compiled_round(sample_fn, chunk_size, devices)
    per_round = len(devices) * chunk_size
    num_rounds = -(-trials // per_round)
    for r in range(num_rounds):
      starts = (r * per_round + chunk_size * np.arange(len(devices))).astype(np.int32)
      starts = jax.make_array_from_callback(starts.shape, sharding, lambda i: starts[i])
      out = _gather(fn(key, starts))
      out = out.reshape((per_round,) + out.shape[2:])
      valid = min(per_round, trials - r * per_round)
      if progress is not None:
        progress(min((r + 1) * per_round, trials), trials)
      yield np.asarray(out[:valid], np.float64)
    return
  fn = _compiled_chunk(sample_fn, chunk_size)
  num_chunks = -(-trials // chunk_size)
  pending = fn(key, 0)
  for c in range(num_chunks):
    nxt = fn(key, (c + 1) * chunk_size) if c + 1 < num_chunks else None  # overlap dispatch
    valid = min(chunk_size, trials - c * chunk_size)
    chunk = np.asarray(pending, np.float64)[:valid]
    if progress is not None:
      progress(min((c + 1) * chunk_size, trials), trials)
    yield chunk
    pending = nxt


def sample_over_inits(sample_fn: SampleFn, key, trials: int, *, chunk_size: int = 64,
                      progress: Progress = None) -> jax.Array:
  """Evaluates ``sample_fn`` on ``trials`` independent keys, chunk by chunk.

  Args:
    sample_fn: ``key -> array`` (one initialization's NTK entries).
    key: PRNG key; trial ``i`` uses ``fold_in(key, i)`` (:func:`trial_keys`).
    trials: number of initializations (>= 1).
    chunk_size: initializations per vmapped chunk (memory bound).
    progress: optional ``progress(done, total)`` called after each chunk.

  Returns:
    ``(trials,) + entry_shape`` array (kept in memory: for many trials use the streaming
    :func:`ntk_moments` / :func:`neural_mean_kernel`; a request that cannot fit is refused).
  """
  trials, chunk_size = _check_common(key, trials, chunk_size, min_trials=1)
  parts = []
  for chunk in _chunks(sample_fn, key, trials, chunk_size, progress):
    if not parts:   # refuse before the whole array is built
      _validate.fits_in_memory(f'{trials} samples of shape {chunk.shape[1:]}',
                               trials * chunk[0].nbytes)
    parts.append(chunk.astype(np.float32) if chunk.dtype == np.float64 and not
                 jax.config.jax_enable_x64 else chunk)
  return jnp.asarray(np.concatenate(parts, axis=0))


class _PowerSums:
  """Running sums of ``(x - shift)^p``, p = 1..order, in float64 (shift: the first chunk's mean)."""

  def __init__(self, order: int):
    self.order = order
    self.shift = None
    self.count = 0
    self.sums = None

  def add(self, chunk: np.ndarray):
    if self.shift is None:
      self.shift = chunk.mean(0)
      self.sums = [np.zeros_like(self.shift) for _ in range(self.order)]
    y = chunk - self.shift
    yp = np.ones_like(y)
    for p in range(self.order):
      yp = yp * y
      self.sums[p] = self.sums[p] + yp.sum(0)
    self.count += chunk.shape[0]

  def raw(self, p: int) -> np.ndarray:
    """``E[(x - shift)^p]``."""
    return self.sums[p - 1] / self.count


def _check_finite_chunk(chunk):
  if not np.all(np.isfinite(chunk)):
    bad = int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    raise ValueError(f'samples must be finite, got {bad} non-finite entries in a chunk of shape '
                     f'{chunk.shape} (overflow at this width?)')


def _moments_from_sums(acc: _PowerSums) -> Moments:
  t = acc.count
  a = acc.raw(1)
  e2, e3, e4 = acc.raw(2), acc.raw(3), acc.raw(4)
  mean = acc.shift + a
  m2c = np.maximum(e2 - a * a, 0.0)                           # central moments (population)
  m3c = e3 - 3 * a * e2 + 2 * a ** 3
  m4c = np.maximum(e4 - 4 * a * e3 + 6 * a * a * e2 - 3 * a ** 4, 0.0)
  if np.any(mean == 0):
    raise ValueError('samples must have a nonzero mean for the normalized second moment, '
                     f'got {int(np.sum(mean == 0))} entries with mean 0')
  var = m2c * t / (t - 1)
  m2 = mean ** 2 + m2c                                        # E[K^2]
  c11 = m2c                                                   # Var K
  c22 = np.maximum(4 * mean ** 2 * m2c + 4 * mean * m3c + m4c - m2c ** 2, 0.0)  # Var K^2
  c12 = 2 * mean * m2c + m3c                                  # Cov(K, K^2)
  ratio = m2 / mean ** 2
  g1 = -2.0 * m2 / mean ** 3
  g2 = 1.0 / mean ** 2
  ratio_var = (g1 * g1 * c11 + g2 * g2 * c22 + 2 * g1 * g2 * c12) / t
  ratio_se = np.sqrt(np.maximum(ratio_var, 0.0))
  return Moments(mean=mean, mean_stderr=np.sqrt(var / t), var=var,
                 var_stderr=np.sqrt(np.maximum(m4c - m2c ** 2, 0.0) / t),
                 ratio=ratio, ratio_stderr=ratio_se, log_ratio=np.log(ratio),
                 log_ratio_stderr=ratio_se / ratio, trials=t)


def moments_from_samples(samples) -> Moments:
  """Moments and delta-method standard errors of ``samples`` ``(trials, ...)`` (float64).

  Raises ``ValueError`` for fewer than 2 trials, non-finite samples, or a zero mean.
  """
  x = np.asarray(samples, dtype=np.float64)
  if x.ndim < 1 or x.shape[0] < 2:
    raise ValueError(f'samples must have at least 2 trials along axis 0, got shape {x.shape}')
  _validate.finite_array('samples', x)
  acc = _PowerSums(4)
  acc.add(x)
  return _moments_from_sums(acc)


def ntk_moments(sample_fn: SampleFn, key, trials: int, *, chunk_size: int = 64,
                progress: Progress = None) -> Moments:
  """Mean, variance and E[K^2]/E[K]^2 of NTK entries over ``trials`` initializations.

  Streams over chunks, keeping float64 sums of the first four powers of the shifted entries:
  memory does not grow with ``trials``. The standard errors are the delta-method ones of the
  module docstring (identical to :func:`moments_from_samples` on the same samples, to float
  rounding).

  Args:
    sample_fn: ``key -> entries`` for one initialization (e.g. from :func:`dense_ntk_sampler`).
    key: PRNG key; trial ``i`` uses ``fold_in(key, i)`` (:func:`trial_keys`).
    trials: number of initializations (>= 2).
    chunk_size: initializations evaluated at once (memory bound).
    progress: optional ``progress(done, total)`` callback.

  Returns:
    :class:`Moments` (float64 numpy arrays of the entries' shape).
  """
  trials, chunk_size = _check_common(key, trials, chunk_size)
  acc = _PowerSums(4)
  for chunk in _chunks(sample_fn, key, trials, chunk_size, progress):
    _check_finite_chunk(chunk)
    acc.add(chunk)
  return _moments_from_sums(acc)


def neural_mean_kernel(sample_fn: SampleFn, key, trials: int, *, chunk_size: int = 64,
                       progress: Progress = None) -> MeanKernel:
  """Monte-Carlo Neural Mean Kernel (Eq. 5) ``E_theta[K(theta)]`` with standard error.

  Streams over chunks of initializations keeping only float64 running sums of ``K - shift``
  and ``(K - shift)^2`` (``shift`` = first chunk's mean), so memory does not grow with
  ``trials``.

  Args:
    sample_fn: ``key -> K`` (e.g. ``(N1, N2)``) for one initialization.
    key: PRNG key; trial ``i`` uses ``fold_in(key, i)``.
    trials: number of initializations (>= 2).
    chunk_size: initializations evaluated at once.
    progress: optional ``progress(done, total)`` callback.

  Returns:
    :class:`MeanKernel` with ``mean`` and ``stderr = sqrt(Var K / trials)`` (numpy arrays).
  """
  trials, chunk_size = _check_common(key, trials, chunk_size)
  acc = _PowerSums(2)
  for chunk in _chunks(sample_fn, key, trials, chunk_size, progress):
    acc.add(chunk)
  mean = acc.shift + acc.raw(1)
  var = np.maximum(acc.raw(2) - acc.raw(1) ** 2, 0.0) * trials / (trials - 1)
  return MeanKernel(mean=mean, stderr=np.sqrt(var / trials), trials=trials)


def ensemble_mean(sample_fn: SampleFn, key, m: int, *, chunk_size: int = 64,
                  progress: Progress = None) -> np.ndarray:
  """``(1/m) sum_j K(theta_j)``, the NTK of ONE collegial ensemble of ``m`` members (Eq. 4).

  Member ``j`` uses ``fold_in(key, j)``; streamed, so ``m`` may be large.
  """
  m, chunk_size = _check_common(key, m, chunk_size, min_trials=1)
  acc = _PowerSums(1)
  for chunk in _chunks(sample_fn, key, m, chunk_size, progress):
    acc.add(chunk)
  return acc.shift + acc.raw(1)


def variance_ratio(a: Moments, b: Moments) -> tuple[np.ndarray, np.ndarray]:
  """``Var_a / Var_b`` of two independent estimates and its delta-method standard error."""
  for name, v in (('a', a), ('b', b)):
    if not isinstance(v, Moments):
      raise ValueError(f'{name} must be Moments (of ntk_moments), got {type(v).__name__}')
  r = a.var / b.var
  se = np.abs(r) * np.sqrt((a.var_stderr / a.var) ** 2 + (b.var_stderr / b.var) ** 2)
  return r, se


# ----------------------------------------------------------------------------------------------
# Samplers for the library's models.
# ----------------------------------------------------------------------------------------------

def dense_ntk_sampler(widths, x1, x2=None, *, m: int = 1, num_outputs: int = 1,
                      backend: str = 'auto', param_dtype=jnp.float32) -> SampleFn:
  """``key -> K(x1, x2)`` ``(N1, N2)`` of a dense member (``m=1``) or a collegial ensemble.

  For ``m > 1`` the NTK of the ONE ensemble module (:class:`DenseEnsemble`, block-diagonal
  weights) over the concatenated parameters, i.e. ``K_e = (1/m) sum_j K(theta_j)`` (Eq. 4).
  For ``num_outputs > 1`` the NTK is traced over outputs (``ce_jax.theory.ntk`` convention, divided by
  ``k``). ``backend``: as :func:`ce_jax.theory.ntk.empirical_ntk_fn` (``'auto'`` = the closed-form
  ``'structured'`` path for these models).
  """
  widths = _validate.int_list('widths', widths)
  m = _validate.positive_int('m', m)
  x1, x2 = _validate.input_pair(x1, x2)
  if m == 1:
    module = dense.DenseMember(widths, num_outputs, param_dtype)
  else:
    module = dense.DenseEnsemble(m, widths, num_outputs, param_dtype)
  x1 = jnp.asarray(x1, param_dtype)
  x2 = jnp.asarray(x2, param_dtype)
  ntk_fn = ntk.empirical_ntk_fn(module.apply, backend=backend)

  def sample_fn(key):
    params = module.init(key, x1[:1])
    return ntk_fn(x1, x2, params)

  return sample_fn


def _diag_sampler(module, x) -> SampleFn:
  """``key -> (N,)``: ``K(x_i, x_i) = |d f(x_i)/d theta|^2`` of a scalar-output Flax module.

  One reverse-mode pass per input (vmapped); no N x N kernel is formed.
  """

  def one(params, xi):
    g = jax.grad(lambda p: module.apply(p, xi[None])[0, 0])(params)
    return sum(jnp.sum(l * l) for l in jax.tree_util.tree_leaves(g))

  def sample_fn(key):
    params = module.init(key, x[:1])
    return jax.vmap(lambda xi: one(params, xi))(x)

  return sample_fn


def dense_diag_sampler(widths, x, *, backend: str = 'auto',
                       param_dtype=jnp.float32) -> SampleFn:
  """``key -> K(x_i, x_i)`` ``(N,)``: NTK diagonal of a scalar-output dense member.

  ``x``: ``(N, n_0)``. Uses :func:`ce_jax.theory.ntk.ntk_diagonal_fn` (``'auto'``: the closed-form
  structured path, one forward and one backward pass). By rotation invariance of the first
  layer the entry's distribution depends on ``x_i`` only through ``|x_i|``, and
  ``E[K^2]/E[K]^2`` not at all.
  """
  widths = _validate.int_list('widths', widths)
  _validate.finite_array('x', x, ndim=2)
  module = dense.DenseMember(widths, 1, param_dtype)
  x = jnp.asarray(x, param_dtype)
  diag_fn = ntk.ntk_diagonal_fn(module.apply, backend=backend)

  def sample_fn(key):
    return diag_fn(x, module.init(key, x[:1]))

  return sample_fn


def bottleneck_diag_sampler(width: int, x, *, cardinality: int = 1, in_channels: int = 256,
                            out_channels: int = 256, param_dtype=jnp.float32) -> SampleFn:
  """``key -> K(x_i, x_i)`` ``(N,)``: NTK diagonal of :class:`NTKBottleneck` (centre readout).

  ``x``: ``(N, H, W, in_channels)``; the entry is for output channel 0 at the centre pixel,
  which sees only the centre 3x3 window of ``x`` (so ``H = W = 3`` loses nothing).
  """
  module = NTKBottleneck(cardinality, width, in_channels, out_channels, readout='center',
                         param_dtype=param_dtype)
  _validate.finite_array('x', x, ndim=4)
  if np.shape(x)[-1] != in_channels:
    raise ValueError(f'x must have {in_channels} channels (in_channels), got shape '
                     f'{np.shape(x)}')
  return _diag_sampler(module, jnp.asarray(x, param_dtype))


def standard_error_of_mean(samples) -> float:
  """``std / sqrt(n)`` of a 1-D sample (helper for tests and reports)."""
  s = np.asarray(samples, np.float64).ravel()
  if s.size < 2:
    raise ValueError(f'samples must hold at least 2 values, got {s.size}')
  return float(s.std(ddof=1) / math.sqrt(s.size))
