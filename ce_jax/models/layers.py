"""Fast drop-in layers: a grouped convolution and a BatchNorm that train fast on XLA:CPU.

``GroupedConv`` is ``flax.linen.Conv`` with the same fields, parameter names, shapes and
initialization (``kernel`` of shape ``(*kernel_size, in_features / groups, features)``, optional
``bias`` of shape ``(features,)``), so checkpoints, parameter counts and configs do not change
when it replaces ``nn.Conv`` (pass the same ``name=``; an auto-named module is called
``GroupedConv_0`` instead of ``Conv_0``). Only its derivatives are computed differently.

Why: XLA lowers the kernel gradient of a grouped convolution (``feature_group_count = G > 1``)
to a convolution with ``batch_group_count = G``, which XLA:CPU runs on a slow generic path (a
known XLA:CPU limitation): 3 s instead of ~20 ms for 10 groups x 10 channels at 32x32, batch 32.
On the jax 0.5 CPU runtime the grouped forward pass is slow too (per group a few GFLOP/s).

Math (2-D shown; any number of spatial dims works). With ``x`` of shape ``(N, H, W, G*ci)``,
``w`` of shape ``(kh, kw, ci, G*co)``, group ``g`` uses channels ``x_g = x[..., g*ci:(g+1)*ci]``
and ``w_g = w[..., g*co:(g+1)*co]``::

    y_g[n, p, o]     = sum_{t, c} x_g[n, s*p + t - pad, c] w_g[t, c, o]       (forward)
    dx_g             = conv_transpose(dy_g, w_g)                                (input grad)
    dw_g[t, c, o]    = sum_{n, p} x_g[n, s*p + t - pad, c] dy_g[n, p, o]       (kernel grad)

Formulations (``impl``):

* ``'onednn'``: :func:`ce_jax.models.native.onednn.conv` -- oneDNN's forward, backward-data and
  backward-weights primitives through the XLA FFI (a small compiled extension; float32, CPU,
  no dilation, padding >= 0). The same kernels PyTorch calls on CPU.
* ``'stock'``: ``lax.conv_general_dilated(feature_group_count=G)`` and JAX's own derivatives.
* ``'loop'``: the forward, input gradient and kernel gradient as G dense convolutions on channel
  slices (each a fast dense Eigen/oneDNN convolution), concatenated.
* ``'grouped_loop'``: forward and input gradient as one grouped convolution; kernel gradient as
  G dense kernel-gradient convolutions (custom VJP).
* ``'grouped_transposed'``: forward and input gradient grouped; kernel gradient as ONE grouped
  convolution over transposed operands: lhs ``x`` as ``(ci, H, W, G*N)`` (batch <-> channels),
  rhs ``dy`` as ``(Ho, Wo, N, G*co)`` (a "kernel" over the output grid, dilated by the stride),
  ``feature_group_count = G``; output ``(ci, kh, kw, G*co)`` -> ``(kh, kw, ci, G*co)``.
* ``'auto'`` (default): the rule of :func:`choose_impl`.

Which one runs is decided in ONE place, :func:`choose_impl` (``GroupedConv`` calls it once per
call, nothing else re-decides); its docstring lists every knob (``impl=``, ``CE_JAX_ONEDNN``,
:func:`reference_convolutions`). The rule of ``'auto'``, measured in ``docs/PERFORMANCE.md``: on
CPU in float32, ``'onednn'`` wherever the built extension handles the case (any group count, 1x1
and 3x3 kernels alike: at ResNeXt shapes it is 0.9-1.1x PyTorch's time for forward + both
gradients, and faster than XLA's dense convolutions too); otherwise ``groups == 1``,
input/kernel dilation != 1, or a non-CPU backend (cuDNN has fast grouped kernels) ->
``'stock'``; on CPU with ``groups > 1`` -> ``'loop'`` (the fastest XLA formulation at every
ResNeXt shape measured, 9-96x faster than stock). The extension is never built here: without it
``'auto'`` takes the XLA paths and warns once how to build it.

Derivatives: ``'onednn'`` and the custom-VJP paths support reverse mode; ``'onednn'``'s backward
pass is not differentiable again and there is no forward mode (``jax.jvp``) through it: use
``impl='loop'`` or ``'stock'`` there (``'stock'`` supports everything).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import flax.linen as nn
from flax.linen.dtypes import canonicalize_dtype, promote_dtype

from ce_jax import _validate
from ce_jax.models.native import onednn

IMPLS = ('auto', 'onednn', 'stock', 'loop', 'grouped_loop', 'grouped_transposed')

default_kernel_init = nn.initializers.lecun_normal()


# ---------------------------------------------------------------------------------------------
# Grouped convolution with a custom VJP.


_REFERENCE_CONVOLUTIONS = contextvars.ContextVar('ce_jax_reference_convolutions', default=False)


@contextlib.contextmanager
def reference_convolutions():
  """Within this context ``GroupedConv(impl='auto')`` traces as ONE ``lax.conv_general_dilated``.

  Same numbers as the fast paths; used by :mod:`ce_jax.design.member` so that the jaxpr it reads shows
  each grouped convolution as one convolution with its ``feature_group_count`` (the XLA:CPU
  fallbacks split it into per-group convolutions inside a custom VJP).
  """
  token = _REFERENCE_CONVOLUTIONS.set(True)
  try:
    yield
  finally:
    _REFERENCE_CONVOLUTIONS.reset(token)


class ConvSpec(NamedTuple):
  """Static description of a convolution (hashable, used as a ``nondiff`` argument)."""
  strides: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]   # explicit (low, high) per spatial dim
  groups: int
  fwd: str                                 # 'grouped' | 'loop'
  dw: str                                  # 'loop' | 'transposed'
  precision: Any = None
  chunk: int = 1                           # groups per dense convolution in the 'loop' paths


def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """Channels-last numbers (NHWC, HWIO, NHWC) for any number of spatial dims."""
  lhs = (0, ndim - 1) + tuple(range(1, ndim - 1))
  rhs = (ndim - 1, ndim - 2) + tuple(range(0, ndim - 2))
  return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _conv(x, w, spec: ConvSpec, groups: int):
  return lax.conv_general_dilated(x, w, spec.strides, spec.padding,
                                  dimension_numbers=_dimension_numbers(x.ndim),
                                  feature_group_count=groups, precision=spec.precision)


def _slices(a, groups: int, chunk: int = 1):
  """Splits the last axis into ``groups`` equal parts and returns them ``chunk`` at a time."""
  size = a.shape[-1] // groups
  return [lax.slice_in_dim(a, g * size, min(g + chunk, groups) * size, axis=a.ndim - 1)
          for g in range(0, groups, chunk)]


def _block_diagonal(w, groups: int):
  """``(*k, ci, groups*co)`` -> dense block-diagonal ``(*k, groups*ci, groups*co)``."""
  if groups == 1:
    return w
  *ks, ci, gco = w.shape
  co = gco // groups
  wg = w.reshape(tuple(ks) + (ci, groups, co))
  eye = jnp.eye(groups, dtype=w.dtype)
  nd = len(ks)
  sub = 'abcdefgh'[:nd]
  wd = jnp.einsum(f'{sub}iko,lk->{sub}liko', wg, eye)
  return wd.reshape(tuple(ks) + (groups * ci, gco))


def _unit_conv(xu, wu, spec: ConvSpec):
  """One dense convolution over a chunk of groups (block-diagonal kernel if chunk > 1)."""
  return _conv(xu, _block_diagonal(wu, xu.shape[-1] // wu.shape[-2]), spec, 1)


def _units(x, w, spec: ConvSpec, *more):
  c = spec.chunk
  return zip(_slices(x, spec.groups, c), _slices(w, spec.groups, c),
             *[_slices(a, spec.groups, c) for a in more])


def _forward(x, w, spec: ConvSpec):
  if spec.fwd == 'grouped':
    return _conv(x, w, spec, spec.groups)
  return jnp.concatenate([_unit_conv(xu, wu, spec) for xu, wu in _units(x, w, spec)], axis=-1)


def _input_grad(x, w, dy, spec: ConvSpec):
  if spec.fwd == 'grouped':
    return jax.vjp(lambda a: _conv(a, w, spec, spec.groups), x)[1](dy)[0]
  return jnp.concatenate([jax.vjp(lambda a, wu=wu: _unit_conv(a, wu, spec), xu)[1](dyu)[0]
                          for xu, wu, dyu in _units(x, w, spec, dy)], axis=-1)


def _kernel_grad_loop(x, w, dy, spec: ConvSpec):
  """Dense kernel-gradient convolutions per chunk (JAX's dense rule: batch <-> feature)."""
  return jnp.concatenate([jax.vjp(lambda b, xu=xu: _unit_conv(xu, b, spec), wu)[1](dyu)[0]
                          for xu, wu, dyu in _units(x, w, spec, dy)], axis=-1)


def _kernel_grad_transposed(x, w, dy, spec: ConvSpec):
  """One grouped convolution over transposed operands (see module docstring)."""
  g = spec.groups
  nd = x.ndim - 2
  n = x.shape[0]
  ci = x.shape[-1] // g
  co = dy.shape[-1] // g
  ksize = w.shape[:nd]
  out_sp = dy.shape[1:-1]
  # Pad (lax.pad allows negative explicit padding) and trim to the rows actually used.
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in spec.padding] + [(0, 0, 0)])
  used = [(o - 1) * s + k for o, s, k in zip(out_sp, spec.strides, ksize)]
  xp = xp[(slice(None),) + tuple(slice(0, u) for u in used) + (slice(None),)]
  sp = xp.shape[1:-1]
  lhs = xp.reshape((n,) + sp + (g, ci))
  lhs = jnp.transpose(lhs, (nd + 2,) + tuple(range(1, nd + 1)) + (nd + 1, 0))
  lhs = lhs.reshape((ci,) + sp + (g * n,))
  rhs = dy.reshape((n,) + out_sp + (g, co))
  rhs = jnp.transpose(rhs, tuple(range(1, nd + 1)) + (0, nd + 1, nd + 2))
  rhs = rhs.reshape(out_sp + (n, g * co))
  out = lax.conv_general_dilated(lhs, rhs, (1,) * nd, [(0, 0)] * nd, rhs_dilation=spec.strides,
                                 dimension_numbers=_dimension_numbers(x.ndim),
                                 feature_group_count=g, precision=spec.precision,
                                 preferred_element_type=w.dtype)
  # (ci, *k, G*co) -> (*k, ci, G*co)
  return jnp.transpose(out, tuple(range(1, nd + 1)) + (0, nd + 1)).astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grouped_conv(x, w, spec: ConvSpec):
  """Grouped convolution ``(N, *S, G*ci) x (*k, ci, G*co) -> (N, *So, G*co)`` (custom VJP).

  Equal to ``lax.conv_general_dilated(x, w, spec.strides, spec.padding,
  feature_group_count=spec.groups)`` in value and derivatives (to rounding); ``spec.fwd`` and
  ``spec.dw`` select the formulations of the forward/input gradient and the kernel gradient.
  """
  return _forward(x, w, spec)


def _grouped_conv_fwd(x, w, spec):
  return _forward(x, w, spec), (x, w)


def _grouped_conv_bwd(spec, res, dy):
  x, w = res
  dx = _input_grad(x, w, dy, spec)
  if spec.dw == 'transposed':
    dw = _kernel_grad_transposed(x, w, dy, spec)
  else:
    dw = _kernel_grad_loop(x, w, dy, spec)
  return dx, dw


grouped_conv.defvjp(_grouped_conv_fwd, _grouped_conv_bwd)


_FALLBACK_WARNED = threading.Event()


def _warn_fallback_once() -> None:
  """One warning per process when 'auto' falls back to XLA for want of a built extension."""
  if _FALLBACK_WARNED.is_set():
    return
  notice = onednn.fallback_notice()
  if notice and not _FALLBACK_WARNED.is_set():
    _FALLBACK_WARNED.set()
    warnings.warn(notice, RuntimeWarning, stacklevel=3)


def _pairs(padding):
  return None if padding is None else tuple((int(lo), int(hi)) for lo, hi in padding)


def choose_impl(groups: int, backend: str | None = None, input_dilation=(1,),
                kernel_dilation=(1,), dtype=jnp.float32, padding=None,
                num_spatial: int = 2, *, impl: str = 'auto') -> str:
  """THE decision of which convolution :class:`GroupedConv` runs (nothing else decides).

  Args:
    groups: ``feature_group_count``.
    backend: ``jax.default_backend()`` if None.
    input_dilation, kernel_dilation: per-dim dilations; the fast paths need all ones.
    dtype: computation dtype (oneDNN: float32 only).
    padding: explicit ``(low, high)`` pairs, or None for zero padding.
    num_spatial: spatial dims.
    impl: the user's request (``GroupedConv(impl=...)``), one of ``IMPLS``.

  Returns:
    What runs: ``'onednn'``, ``'stock'``, ``'loop'``, ``'grouped_loop'`` or
    ``'grouped_transposed'``.

  The knobs, all of them:

  * ``impl='auto'`` (default): inside :func:`reference_convolutions` -> ``'stock'``; on CPU,
    float32, 1-3 spatial dims, no dilation, padding >= 0 and the extension loaded ->
    ``'onednn'``; else ``groups == 1``, a dilation or a non-CPU backend -> ``'stock'``; else
    ``'loop'``. Where oneDNN would apply but no library is built (or it fails to load), the XLA
    rule applies and one ``RuntimeWarning`` per process says how to build it (``python -m
    ce_jax.models.native.onednn build``; ``make install`` does). Deciding never compiles.
  * ``impl='onednn'``: oneDNN, or a one-line ``ValueError`` naming what rules it out (dtype,
    dims, padding, dilation, backend, or the extension: not built / turned off).
  * ``impl='stock'``: ``lax.conv_general_dilated`` and JAX's derivatives (everything works,
    forward mode and higher derivatives included).
  * ``impl='loop' | 'grouped_loop' | 'grouped_transposed'``: that custom-VJP formulation; with
    ``groups == 1`` or a dilation it would be the plain convolution anyway, so ``'stock'``.
  * ``CE_JAX_ONEDNN=0`` (environment; also false/no/off, while 1/true/yes/on or unset mean
    "use it where it applies"; other values are a one-line ``ValueError``): the extension is
    never loaded, ``'auto'`` takes the XLA rule without a warning, ``impl='onednn'`` is an
    error.
  * :func:`reference_convolutions` (a context manager): ``'auto'`` gives ``'stock'`` inside it,
    so that a jaxpr shows each convolution as one ``conv_general_dilated`` (same numbers);
    explicit ``impl=`` values are kept.

  Not choices between these paths: ``GroupedConv(chunk=)`` (groups per dense convolution of the
  loop formulations), ``onednn.COMBINED_BACKWARD`` (both oneDNN gradients in one call or two;
  for A/B timing), and where the library is built or found (``CE_JAX_ONEDNN_ROOT``,
  ``CE_JAX_BUILD_DIR``, ``CXX``; see :mod:`ce_jax.models.native.onednn`).
  """
  _validate.choice('impl', impl, IMPLS)
  backend = backend or jax.default_backend()
  in_dil, k_dil = tuple(input_dilation), tuple(kernel_dilation)
  dilated = any(d != 1 for d in in_dil + k_dil)
  pairs = _pairs(padding)
  pads = ((0, 0),) * num_spatial if pairs is None else pairs
  if impl == 'auto' and _REFERENCE_CONVOLUTIONS.get():
    return 'stock'
  if impl in ('auto', 'onednn'):
    case_ok = onednn.supports(dtype, num_spatial, pads, in_dil, k_dil, backend)
    if case_ok and onednn.available():
      return 'onednn'
    if impl == 'onednn':
      why = ('' if case_ok else
             f"; got {jnp.dtype(dtype).name}, {num_spatial} spatial dims, padding {pads}, "
             f'dilations {in_dil}/{k_dil}, backend {backend}')
      raise ValueError(
          f"impl='onednn' needs float32 on CPU, 1-3 spatial dims, no dilation, padding >= 0 "
          f"and the built extension{why} (extension: {onednn.status()['error'] or 'available'})")
    if case_ok:
      _warn_fallback_once()
    return 'stock' if groups == 1 or backend != 'cpu' or dilated else 'loop'
  if impl != 'stock' and (groups == 1 or dilated):
    return 'stock'
  return impl


def _spec_for(impl: str, strides, padding, groups, precision, chunk: int = 1) -> ConvSpec:
  fwd, dw = {'loop': ('loop', 'loop'), 'grouped_loop': ('grouped', 'loop'),
             'grouped_transposed': ('grouped', 'transposed')}[impl]
  return ConvSpec(tuple(strides), tuple(tuple(p) for p in padding), groups, fwd, dw, precision,
                  chunk)


def _canonicalize_padding(padding, rank: int):
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return [(padding, padding)] * rank
  if isinstance(padding, Sequence) and len(padding) == rank:
    out = []
    for p in padding:
      if isinstance(p, int):
        out.append((p, p))
      elif isinstance(p, (tuple, list)) and len(p) == 2:
        out.append((int(p[0]), int(p[1])))
      else:
        break
    if len(out) == rank:
      return out
  raise ValueError(f'padding must be a string, an int or a sequence of {rank} ints or (low, high) '
                   f'pairs, got {padding!r}')


class GroupedConv(nn.Module):
  """``nn.Conv`` with fast derivatives for ``feature_group_count > 1`` (drop-in replacement).

  Same fields, defaults, parameters and initialization as ``flax.linen.Conv`` (except ``mask``
  and the deprecated ``conv_general_dilated*`` hooks, which are not supported), plus ``impl``
  (one of ``IMPLS``, the request that :func:`choose_impl` turns into what runs; ``'auto'``:
  its rule) and ``chunk`` (groups per dense convolution of the loop formulations).

  Input ``(*batch, *spatial, in_features)``; output ``(*batch, *spatial_out, features)``.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: None | int | Sequence[int] = 1
  padding: Any = 'SAME'
  input_dilation: None | int | Sequence[int] = 1
  kernel_dilation: None | int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  promote_dtype: Callable = promote_dtype
  impl: str = 'auto'
  chunk: int = 1

  @nn.compact
  def __call__(self, inputs):
    _validate.choice('impl', self.impl, IMPLS)
    if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
      raise ValueError(f'chunk must be an integer >= 1, got {self.chunk!r}')
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    nsp = len(kernel_size)

    def bcast(v):
      v = 1 if v is None else v
      return (v,) * nsp if isinstance(v, int) else tuple(v)

    num_batch = inputs.ndim - (nsp + 1)
    if num_batch != 1:
      batch_shape = inputs.shape[:num_batch]
      inputs = jnp.reshape(inputs, (int(np.prod(batch_shape)),) + inputs.shape[num_batch:])
    strides, in_dil, k_dil = bcast(self.strides), bcast(self.input_dilation), bcast(
        self.kernel_dilation)
    padding = _canonicalize_padding(self.padding, nsp)
    if padding in ('CIRCULAR', 'REFLECT'):
      kd = [(k - 1) * d + 1 for k, d in zip(kernel_size, k_dil)]
      pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kd] + [(0, 0)]
      inputs = jnp.pad(inputs, pads, mode={'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}[padding])
      padding = 'VALID'
    elif padding == 'CAUSAL':
      if nsp != 1:
        raise ValueError('Causal padding is only implemented for 1D convolutions.')
      inputs = jnp.pad(inputs, [(0, 0), (k_dil[0] * (kernel_size[0] - 1), 0), (0, 0)])
      padding = 'VALID'

    in_features = inputs.shape[-1]
    groups = self.feature_group_count
    if in_features % groups or self.features % groups:
      raise ValueError(f'feature_group_count {groups} must divide the input features '
                       f'{in_features} and features {self.features}')
    kernel = self.param('kernel', self.kernel_init,
                        kernel_size + (in_features // groups, self.features), self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

    # Explicit (low, high) pairs, as lax.conv_general_dilated derives them from a padding name.
    if isinstance(padding, str):
      kd = [(k - 1) * d + 1 for k, d in zip(kernel_size, k_dil)]
      pairs = lax.padtype_to_pads(inputs.shape[1:-1], kd, strides, padding)
    else:
      pairs = padding
    pairs = tuple((int(lo), int(hi)) for lo, hi in pairs)
    impl = choose_impl(groups, None, in_dil, k_dil, inputs.dtype, pairs, nsp, impl=self.impl)
    if impl == 'stock':
      y = lax.conv_general_dilated(inputs, kernel, strides, padding, lhs_dilation=in_dil,
                                   rhs_dilation=k_dil,
                                   dimension_numbers=_dimension_numbers(inputs.ndim),
                                   feature_group_count=groups, precision=self.precision)
    elif impl == 'onednn':
      y = onednn.conv(inputs, kernel, strides, pairs, groups)
    else:
      y = grouped_conv(inputs, kernel, _spec_for(impl, strides, pairs, groups, self.precision,
                                                 self.chunk))
    if bias is not None:
      y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    if num_batch != 1:
      y = jnp.reshape(y, batch_shape + y.shape[1:])
    return y


# ---------------------------------------------------------------------------------------------
# BatchNorm with batch statistics by matrix products.


def _column_sums(a):
  """``ones(M) @ a`` for ``a`` of shape ``(M, C)`` in float32: a GEMV instead of a reduce.

  Fast, but one float32 accumulator per column over all M rows: its error grows with M (1e-5
  relative for M = 32768). Used in the backward pass; the batch statistics use XLA's
  reduction instead (:func:`_batch_stats`).
  """
  return jnp.dot(jnp.ones((a.shape[0],), a.dtype), a, precision=lax.Precision.HIGHEST)


def _batch_stats(x2, fast_variance: bool, axis_name, axis_index_groups):
  """Mean and biased variance over rows of ``x2`` ``(M, C)`` (float32), as nn.BatchNorm.

  ``fast_variance``: flax's one pass ``E[x^2] - E[x]^2``. Otherwise the same single pass on the
  SHIFTED data ``d = x - s`` with ``s`` the first row (averaged over ``axis_name``):
  ``mean = s + E[d]``, ``var = E[d^2] - E[d]^2``. ``s`` is one sample of each channel, so
  ``E[d]`` is of the order of the spread and nothing cancels, however large the mean (after a
  ReLU, say); the column sums of ``d`` then carry no large constant either.
  """
  m = x2.shape[0]
  if fast_variance:
    mus = jnp.stack([_column_sums(x2), _column_sums(lax.square(x2))]) / m
    if axis_name is not None:
      mus = lax.pmean(mus, axis_name, axis_index_groups=axis_index_groups)
    mu, mu2 = mus[0], mus[1]
    return mu, jnp.maximum(0.0, mu2 - lax.square(mu))
  shift = lax.stop_gradient(x2[0])
  if axis_name is not None:
    shift = lax.pmean(shift, axis_name, axis_index_groups=axis_index_groups)
  d = x2 - shift
  # XLA's reduction, not the GEMV of _column_sums: it sums in a tree of partial sums, so the
  # statistics are exact to float32 rounding however many rows (the GEMV's one accumulator
  # per column put the train-mode logits at 4x torch's float32 error), at the same speed.
  mus = jnp.stack([jnp.sum(d, axis=0), jnp.sum(lax.square(d), axis=0)]) / m
  if axis_name is not None:
    mus = lax.pmean(mus, axis_name, axis_index_groups=axis_index_groups)
  return shift + mus[0], jnp.maximum(0.0, mus[1] - lax.square(mus[0]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _bn_train(x2, mean, var, scale, bias, epsilon, axis_name, axis_index_groups):
  """``(x2 - mean) * scale * rsqrt(var + eps) + bias`` where mean/var ARE the batch statistics.

  The custom VJP returns the total derivative w.r.t. ``x2`` (through mean and var too), with
  the two column sums of the backward pass done as matrix products; mean and var get zero
  cotangents (callers pass them under ``stop_gradient``).
  """
  return (x2 - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def _bn_train_fwd(x2, mean, var, scale, bias, epsilon, axis_name, axis_index_groups):
  rstd = lax.rsqrt(var + epsilon)
  y = (x2 - mean) * (rstd * scale) + bias
  return y, (x2, mean, rstd, scale)


def _bn_train_bwd(epsilon, axis_name, axis_index_groups, res, dy):
  x2, mean, rstd, scale = res
  m = x2.shape[0]
  xhat = (x2 - mean) * rstd
  sums = jnp.stack([_column_sums(dy), _column_sums(dy * xhat)])  # dbias, dscale
  means = sums / m
  if axis_name is not None:
    means = lax.pmean(means, axis_name, axis_index_groups=axis_index_groups)
  dx = (rstd * scale) * (dy - means[0] - xhat * means[1])
  return (dx, jnp.zeros_like(mean), jnp.zeros_like(rstd), sums[1].astype(scale.dtype),
          sums[0].astype(scale.dtype))


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class FastBatchNorm(nn.Module):
  """``nn.BatchNorm`` with batch statistics (and their backward) as matrix products.

  Same fields, variables (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``,
  float32) and numerics (to float32 rounding) as ``flax.linen.BatchNorm``: in training
  ``mean = E[x]``, ``var = E[(x - mean)^2]`` computed in one pass on data shifted by one sample
  per channel (see ``_batch_stats``; ``use_fast_variance=True`` gives flax's default
  ``max(0, E[x^2] - E[x]^2)``, which cancels in float32 when the mean is large against the
  spread, as after every ReLU) over all axes but ``axis`` (averaged over
  ``axis_name`` under pmap/vmap), ``y = (x - mean) * scale /
  sqrt(var + epsilon) + bias``, running averages ``ra = momentum * ra + (1 - momentum) * stat``.
  The sums ``sum_rows x``, ``sum_rows x^2`` and, in the backward pass, ``sum_rows dy``,
  ``sum_rows dy * xhat`` are GEMVs ``ones(M) @ X`` (XLA:CPU's row reductions are ~3x slower).

  Differences: no ``mask`` argument; the batch statistics written to ``batch_stats`` carry no
  gradient (as in every training loop; the normalized output's gradient is exact).
  """
  use_running_average: bool | None = None
  axis: int = -1
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable = nn.initializers.zeros
  scale_init: Callable = nn.initializers.ones
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = False   # shifted: as accurate as PyTorch's in float32

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    axes = self.axis if isinstance(self.axis, (tuple, list)) else (self.axis,)
    feature_axes = tuple(sorted({a % x.ndim for a in axes}))
    feature_shape = tuple(x.shape[a] for a in feature_axes)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32),
                            feature_shape)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32),
                           feature_shape)
    scale = (self.param('scale', self.scale_init, feature_shape, self.param_dtype)
             if self.use_scale else None)
    bias = (self.param('bias', self.bias_init, feature_shape, self.param_dtype)
            if self.use_bias else None)
    out_dtype = canonicalize_dtype(*[a for a in (x, scale, bias) if a is not None],
                                   dtype=self.dtype)
    stat_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)

    # Move feature axes last and flatten: x2 of shape (M, C).
    other = tuple(a for a in range(x.ndim) if a not in feature_axes)
    perm = other + feature_axes
    xt = jnp.transpose(x, perm) if perm != tuple(range(x.ndim)) else x
    c = int(np.prod(feature_shape))
    x2 = jnp.asarray(xt, stat_dtype).reshape(-1, c)
    s = (jnp.ones((c,), stat_dtype) if scale is None
         else jnp.asarray(scale, stat_dtype).reshape(c))
    b = (jnp.zeros((c,), stat_dtype) if bias is None
         else jnp.asarray(bias, stat_dtype).reshape(c))

    if use_running_average:
      mean = ra_mean.value.reshape(c)
      var = ra_var.value.reshape(c)
      y2 = (x2 - mean) * (lax.rsqrt(var + self.epsilon) * s) + b
    else:
      axis_name = self.axis_name if not self.is_initializing() else None
      mean, var = _batch_stats(x2, self.use_fast_variance, axis_name, self.axis_index_groups)
      mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
      y2 = _bn_train(x2, mean, var, s, b, self.epsilon, axis_name, self.axis_index_groups)
      if not self.is_initializing():
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean.reshape(feature_shape))
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * var.reshape(feature_shape))

    y = y2.reshape(xt.shape)
    if perm != tuple(range(x.ndim)):
      y = jnp.transpose(y, tuple(np.argsort(perm)))
    return jnp.asarray(y, out_dtype)
