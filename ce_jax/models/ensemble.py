"""The collegial ensemble of any Flax member module as ONE trainable Flax module.

A collegial ensemble of ``m`` identical members ``f(x; theta_j)`` is aggregated

* at network level (``aggregation='network'``, the paper's Eq. 4)::

      F_e(x) = (1 / sqrt(m)) sum_j f(x; theta_j)          (normalize=True, the default)

  whose empirical NTK over all parameters is the mean of the members' NTKs,
  ``K_e(x, x') = (1/m) sum_j K(x, x'; theta_j)`` (the members' parameters are disjoint);
  ``normalize=False`` gives the plain sum;
* at block level (``aggregation='block'``, ResNeXt)::

      F_b(x) = sum_j f(x; theta_j)                          (normalize=False, the default)

  with the sum taken INSIDE the member's last weight layer (a ResNeXt bottleneck of ``m`` paths:
  its last 1x1 convolution reads all ``m * n`` path channels and writes ``out``);
  ``normalize=True`` multiplies by ``1/sqrt(m)`` (the NTK bottleneck of
  :mod:`ce_jax.models.bottleneck`).

Realization (no ``vmap`` over members). The ensemble runs the member module ONCE, under
``flax.linen.intercept_methods``, on activations whose channels (last axis) are the members'
channels concatenated, ``(..., m * C)`` with member ``j`` at ``[..., j*C:(j+1)*C]``. Every call
of a weight layer (``nn.Dense``, ``nn.Conv``, :class:`~ce_jax.models.layers.GroupedConv`,
:class:`~ce_jax.models.bottleneck.NTKConv`, :class:`~ce_jax.models.dense.NTKDense`) is replaced
by its m-fold version, with its parameters created in that layer's own scope (so the ensemble's
parameter tree has the member's names):

* input still the shared member input (``C`` channels): one layer with ``m * O`` outputs --
  dense ``y[..., j, :] = x W_j`` (contraction ``'...i,mio->...mo'``); convolution with the
  kernels concatenated on the output axis ``(kh, kw, C, m*O)`` (a grouped member convolution
  with ``g`` groups reads its input tiled ``m`` times, ``m*g`` groups);
* input with ``m * C`` channels: block-diagonal dense (``'...mi,mio->...mo'``) or a grouped
  convolution with ``m * g`` groups (:class:`~ce_jax.models.layers.GroupedConv`, whose fast CPU
  path -- oneDNN -- applies);
* the last weight layer under block aggregation sums the paths: dense
  ``y = sum_j x_j W_j`` (one matmul with ``(m*C, O)``), convolution with ``g = 1``: one
  convolution over all ``m * C`` channels with the members' kernels stacked on the input axis
  ``(kh, kw, m*C, O)``; ``g > 1``: the grouped convolution then a reshape-sum.

Network aggregation reshapes the final ``(..., m*k)`` output to ``(..., m, k)`` and sums (times
``1/sqrt(m)``). Before the run, the member is traced alone (``jax.eval_shape`` of its ``init``)
to record each weight-layer call's input and output shapes: a call whose ensemble input has the
member's ``C`` channels reads the shared input, one with ``m * C`` channels the members'
concatenated activations.

Parameters and their layout (``ensemble_variables`` / ``member_variables`` convert):

* every ``kernel`` is the member's kernels stacked on a new leading axis, ``(m, *member_shape)``
  (dense ``(m, n_in, n_out)``, as :class:`~ce_jax.models.dense.DenseEnsemble`; conv
  ``(m, kh, kw, C/g, O)``), each member's slice drawn with the member layer's own
  ``kernel_init`` on the MEMBER shape (so fan-in based initializers see the member's fan-in);
* every other leaf -- biases, BatchNorm ``scale``/``bias`` and ``batch_stats`` ``mean``/``var``
  -- is the members' leaves concatenated on the last (channel) axis, ``(m * C,)``.

NTK-parameterized layers (``NTKConv``, ``NTKDense``: forward scale ``sqrt(gain / fan_in)``) use
the PER-MEMBER fan-in. Biases are one per member, summed where the paths are summed.

What a member may contain:

* weight layers of the classes above (exact classes; ``nn.Conv`` without ``mask`` or a custom
  ``conv_general_dilated``; ``nn.Dense`` without a custom ``dot_general``), each reading either
  the member's input or channels produced by earlier weight layers;
* between them, elementwise operations (ReLU, GELU, dropout, adding two activations of the same
  layout, scalar factors) and channelwise ones: ``nn.BatchNorm`` / ``FastBatchNorm`` over the
  last axis (per channel, so per member on ``m * C`` channels), pooling over spatial axes;
* the output: one channels-last array.

Not supported (a one-line ``ValueError`` where it can be detected): parameters that are not
created by a supported weight layer or BatchNorm (e.g. a raw ``self.param`` used in a matmul);
operations that mix channels outside weight layers (LayerNorm / GroupNorm over features,
attention, a flatten or concatenation across the channel axis, transposes that move the channel
axis); a residual from the member's input inside the member (put shortcuts outside the
ensemble); a member that contains an ensemble. Under block aggregation the member must return its
last weight layer's output unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ce_jax import _validate
from ce_jax.models import layers as _layers
from ce_jax.models.bottleneck import NTKConv
from ce_jax.models.dense import NTKDense

__all__ = ['ensemble', 'Ensemble', 'ensemble_variables', 'member_variables', 'AGGREGATIONS',
           'WEIGHT_LAYERS', 'NORM_LAYERS']

AGGREGATIONS = ('network', 'block')

DENSE_LAYERS = (nn.Dense, NTKDense)
CONV_LAYERS = (nn.Conv, _layers.GroupedConv, NTKConv)
WEIGHT_LAYERS = DENSE_LAYERS + CONV_LAYERS
NORM_LAYERS = (nn.BatchNorm, _layers.FastBatchNorm)
# Modules that mix the channel axis outside a weight layer (rejected even without parameters).
_MIXING_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.MultiHeadDotProductAttention,
                  nn.DenseGeneral, nn.Einsum, nn.Embed, nn.ConvTranspose, nn.ConvLocal)

_STD_NORMAL = nn.initializers.normal(stddev=1.0)


# ---------------------------------------------------------------------------------------------
# Construction.


def ensemble(factory: Callable[[Any], nn.Module] | nn.Module, m: int, width: Any = None, *,
             aggregation: str = 'network', normalize: bool | None = None,
             conv_impl: str | None = None, name: str | None = None) -> 'Ensemble':
  """The collegial ensemble of ``m`` copies of a member module, as ONE Flax module.

  Args:
    factory: a callable ``width -> nn.Module`` (then ``width`` is required) or an ``nn.Module``
      instance (then ``width`` must be None): the member.
    m: number of members (>= 1).
    width: an int or a per-layer tuple of ints, passed to ``factory``.
    aggregation: ``'network'`` -> ``(1/sqrt(m)) sum_j f_j(x)``; ``'block'`` -> ``sum_j f_j(x)``
      summed inside the last weight layer (see the module docstring).
    normalize: multiply the sum by ``1/sqrt(m)``; default True for ``'network'``, False for
      ``'block'``.
    conv_impl: ``GroupedConv`` implementation of the m-fold convolutions (one of
      ``layers.IMPLS``); None: a ``GroupedConv`` member layer keeps its own ``impl``, ``nn.Conv``
      and ``NTKConv`` use ``'auto'`` (oneDNN on CPU: reverse-mode derivatives only; pass
      ``'stock'`` for forward mode).
    name: the Flax module name of the ensemble (when it is a submodule).

  Inside a compact method prefer a factory: ``factory(width)`` is built outside the enclosing
  module, while a member instance built there has already taken an auto-name in it (harmless:
  the ensemble detaches it, its parameters live under the ensemble's name).

  Returns:
    An :class:`Ensemble`; ``ens(x, *args, **kwargs)`` forwards the extra arguments to the member
    (e.g. ``train=True``) and returns the aggregated output, the member's output shape.
  """
  m = _validate.positive_int('m', m)
  if isinstance(factory, nn.Module):
    if width is not None:
      raise ValueError(f'width must be None when factory is a module instance, got {width!r}')
    member = factory
  elif callable(factory):
    if width is None:
      raise ValueError('width is required when factory is a callable width -> nn.Module, '
                       'got None')
    if isinstance(width, (list, tuple)):
      width = _validate.int_list('width', width)
    else:
      width = _validate.positive_int('width', width)
    member = _build_unbound(factory, width)
    if not isinstance(member, nn.Module):
      raise ValueError(f'factory(width) must return a flax.linen.Module, got '
                       f'{type(member).__name__}')
  else:
    raise ValueError(f'factory must be a flax.linen.Module or a callable width -> Module, got '
                     f'{type(factory).__name__}')
  # Detached from wherever it was built: its parameters live in the ensemble's scope.
  member = member.clone(parent=None, name=None)
  return Ensemble(member=member, m=m, aggregation=aggregation, normalize=normalize,
                  conv_impl=conv_impl, name=name)


def _build_unbound(factory: Callable[[Any], Any], width: Any) -> Any:
  """``factory(width)`` built outside any module context (so it is not adopted, nor named, by
  the module whose compact method calls :func:`ensemble`)."""
  stack = getattr(getattr(nn.module, '_context', None), 'module_stack', None)
  if stack is None:  # another flax: build as is (ensemble() detaches the result)
    return factory(width)
  stack.append(None)
  try:
    return factory(width)
  finally:
    stack.pop()


class _Call(NamedTuple):
  """One weight-layer call of the member alone (recorded by the trace)."""
  path: tuple            # module path relative to the member
  kind: type             # the layer class
  in_shape: tuple        # member input shape of the call
  out_shape: tuple       # member output shape of the call


class _Plan(NamedTuple):
  calls: tuple           # _Call per weight-layer call, in call order
  out_shape: tuple       # member output shape


class Ensemble(nn.Module):
  """``m`` members of ``member`` run as one module (see the module docstring).

  Attributes:
    member: the member module (unbound).
    m: number of members.
    aggregation: ``'network'`` or ``'block'``.
    normalize: ``1/sqrt(m)`` factor; None: True for ``'network'``, False for ``'block'``.
    conv_impl: ``GroupedConv`` implementation of the m-fold convolutions (see :func:`ensemble`).

  ``__call__(x, *args, **kwargs)``: ``x`` of the member's input shape; extra arguments go to the
  member. Returns the aggregated output, of the member's output shape.
  """
  member: nn.Module
  m: int
  aggregation: str = 'network'
  normalize: bool | None = None
  conv_impl: str | None = None

  def __post_init__(self):
    object.__setattr__(self, 'm', _validate.positive_int('m', self.m))
    _validate.choice('aggregation', self.aggregation, AGGREGATIONS)
    if self.conv_impl is not None:
      _validate.choice('conv_impl', self.conv_impl, _layers.IMPLS)
    if not isinstance(self.member, nn.Module):
      raise ValueError(f'member must be a flax.linen.Module, got {type(self.member).__name__}')
    if isinstance(self.member, Ensemble):
      raise ValueError('member must not be an Ensemble: nested ensembles are not supported')
    super().__post_init__()

  @property
  def normalized(self) -> bool:
    """Whether the sum is multiplied by ``1/sqrt(m)``."""
    if self.normalize is None:
      return self.aggregation == 'network'
    return bool(self.normalize)

  def setup(self):
    nn.share_scope(self, self.member)  # the member's parameters at the ensemble's top level

  def __call__(self, x, *args, **kwargs):
    """``x``: the member's input (channels last) -> the aggregated member output."""
    unbound = self.member.clone(parent=None, _deep_clone=True)
    plan = _trace_member(unbound, x, args, kwargs, self.aggregation == 'block')
    m, block = self.m, self.aggregation == 'block'
    state = {'index': 0, 'busy': False}
    root = len(self.scope.path)

    def interceptor(next_fun, a, kw, context):
      mod = context.module
      if (state['busy'] or context.method_name != '__call__'
          or type(mod) not in WEIGHT_LAYERS):
        return next_fun(*a, **kw)
      i = state['index']
      state['index'] += 1
      path = tuple(mod.scope.path[root:])
      if i >= len(plan.calls) or plan.calls[i].path != path:
        raise ValueError(f'the member called weight layer {_name(path)} out of the order of its '
                         f'trace: its weight-layer calls must not depend on the inputs')
      call = plan.calls[i]
      inputs = a[0] if a else next(iter(kw.values()))
      shared = _classify(inputs, call, m)
      last = block and i == len(plan.calls) - 1
      state['busy'] = True
      try:
        if isinstance(mod, DENSE_LAYERS):
          return _dense(mod, inputs, call, m, shared, last)
        return _conv(mod, inputs, call, m, shared, last, self.conv_impl)
      finally:
        state['busy'] = False

    with nn.intercept_methods(interceptor):
      try:
        y = self.member(x, *args, **kwargs)
      except (TypeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if 'broadcast' in msg.lower() or 'incompatible shapes' in msg.lower():
          raise ValueError(f'the member combines arrays of the shared input layout and the '
                           f'members\' concatenated layout (a residual from the member input? put '
                           f'shortcuts outside the ensemble): {msg}') from None
        raise
    if not isinstance(y, jax.Array):
      raise ValueError(f'the member output must be one array, got {type(y).__name__}')
    k = plan.out_shape[-1] if plan.out_shape else 1
    expected = plan.out_shape if block else plan.out_shape[:-1] + (m * k,)
    if tuple(y.shape) != tuple(expected):
      raise ValueError(f'the member output of shape {plan.out_shape} is not channels-last '
                       f'compatible: the ensemble produced {tuple(y.shape)}, expected '
                       f'{tuple(expected)} (members concatenated on the last axis)')
    if not block:
      y = jnp.sum(y.reshape(y.shape[:-1] + (m, k)), axis=-2)
    if self.normalized:
      y = y / jnp.sqrt(jnp.asarray(m, y.dtype))
    return y


# ---------------------------------------------------------------------------------------------
# Member trace and checks.


def _name(path) -> str:
  return "'" + '/'.join(map(str, path)) + "'" if path else 'the member itself'


def _trace_member(member: nn.Module, x, args, kwargs, block: bool) -> _Plan:
  """Runs ``member.init`` abstractly, recording weight-layer calls; validates the member."""
  calls, modules, last_out, checks = [], {}, [None], {}

  def recorder(next_fun, a, kw, context):
    mod = context.module
    path = tuple(mod.scope.path)
    modules.setdefault(path, mod)
    y = next_fun(*a, **kw)
    if context.method_name == '__call__' and type(mod) in WEIGHT_LAYERS:
      inputs = a[0] if a else next(iter(kw.values()))
      calls.append(_Call(path, type(mod), tuple(inputs.shape), tuple(y.shape)))
      last_out[0] = y
    elif context.method_name == '__call__' and type(mod) in NORM_LAYERS:
      inputs = a[0] if a else next(iter(kw.values()))
      axis = mod.axis
      if not isinstance(axis, int) or axis % inputs.ndim != inputs.ndim - 1:
        raise ValueError(f'{type(mod).__name__} {_name(path)} normalizes axis {axis!r}: ensemble() '
                         f'needs BatchNorm over the last (channel) axis')
    return y

  leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
  dynamic = [i for i, l in enumerate(leaves) if isinstance(l, (jax.Array, np.ndarray))]

  def run(x_, *dyn):
    vals = list(leaves)
    for i, v in zip(dynamic, dyn):
      vals[i] = v
    a, kw = jax.tree_util.tree_unflatten(tree, vals)
    with nn.intercept_methods(recorder):
      y, variables = member.init_with_output(jax.random.PRNGKey(0), x_, *a, **kw)
    checks['returns_last'] = calls and y is last_out[0]
    return y, variables

  spec = lambda v: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v))
  y, variables = jax.eval_shape(run, spec(x), *[spec(leaves[i]) for i in dynamic])

  for path, mod in modules.items():
    if isinstance(mod, _MIXING_LAYERS):
      raise ValueError(f'the member uses {type(mod).__name__} {_name(path)}, which mixes channels '
                       f'outside a weight layer: ensemble() cannot group it')
  owners = {p for p, mod in modules.items() if type(mod) in WEIGHT_LAYERS + NORM_LAYERS}
  layer_names = ', '.join(c.__name__ for c in WEIGHT_LAYERS)
  for kpath, _ in jax.tree_util.tree_flatten_with_path(variables)[0]:
    keys = tuple(getattr(k, 'key', getattr(k, 'name', k)) for k in kpath)
    col, rest = keys[0], keys[1:]
    if not any(rest[:len(p)] == p for p in owners if len(p) < len(rest)):
      raise ValueError(f"member variable {col}/{'/'.join(map(str, rest))} is not created by a "
                       f'weight layer ensemble() can group ({layer_names}) or a BatchNorm')
  if not calls:
    raise ValueError('the member calls no weight layer (nn.Dense, nn.Conv, GroupedConv, NTKConv, '
                     'NTKDense): there is nothing to ensemble')
  if not isinstance(y, jax.ShapeDtypeStruct):
    raise ValueError(f'the member output must be one array, got {type(y).__name__}')
  if not y.shape:
    raise ValueError('the member output must have a channel (last) axis, got a scalar')
  x_channels = jnp.shape(x)[-1] if jnp.ndim(x) else None
  produced = set()
  for c in calls:
    n_in = c.in_shape[-1]
    if n_in != x_channels and n_in not in produced:
      raise ValueError(f'weight layer {_name(c.path)} reads {n_in} features, neither the member '
                       f"input's channels nor an earlier weight layer's outputs: a flatten, "
                       f'reshape or concatenation across channels cannot be grouped')
    produced.add(c.out_shape[-1])
  if block and not checks['returns_last']:
    raise ValueError('block aggregation sums the paths inside the last weight layer: the member '
                     "must return that layer's output unchanged, but it applies further ops")
  return _Plan(tuple(calls), tuple(y.shape))


def _classify(inputs, call: _Call, m: int) -> bool:
  """True if the ensemble input of ``call`` is the shared member input, False if concatenated."""
  shape = tuple(inputs.shape)
  if shape == call.in_shape:
    return True
  if shape == call.in_shape[:-1] + (m * call.in_shape[-1],):
    return False
  raise ValueError(f'weight layer {_name(call.path)} got an input of shape {shape} in the '
                   f'ensemble, expected {call.in_shape} (shared) or '
                   f'{call.in_shape[:-1] + (m * call.in_shape[-1],)} (members concatenated): '
                   f'the member mixes or moves the channel axis')


# ---------------------------------------------------------------------------------------------
# m-fold layers.


def _stacked_init(init: Callable, m: int) -> Callable:
  """``init`` applied to the member ``shape`` with ``m`` keys -> ``(m, *shape)``."""
  def fn(key, shape, dtype):
    return jax.vmap(lambda k: init(k, shape, dtype))(jax.random.split(key, m))
  return fn


def _concat_init(init: Callable, m: int) -> Callable:
  """``init`` applied to the member ``shape`` with ``m`` keys, concatenated on the last axis."""
  def fn(key, shape, dtype):
    w = jax.vmap(lambda k: init(k, shape, dtype))(jax.random.split(key, m))
    return jnp.moveaxis(w, 0, -2).reshape(tuple(shape[:-1]) + (m * shape[-1],))
  return fn


def _ntk_promote(*arrays, dtype=None):
  """``NTKDense``/``NTKConv``'s promotion: the result type of the (non-None) arrays."""
  del dtype
  dt = jnp.result_type(*[a for a in arrays if a is not None])
  return tuple(None if a is None else jnp.asarray(a, dt) for a in arrays)


def _scale_and_bias(y, scale, bias, m: int, features: int, last: bool):
  """``scale * y + bias`` of an m-fold layer; the last layer sums the members' biases."""
  if scale is not None:
    y = scale * y
  if bias is not None:
    b = jnp.sum(bias.reshape(m, features), axis=0) if last else bias
    y = y + b.reshape((1,) * (y.ndim - 1) + (-1,))
  return y


def _dense(mod, x, call: _Call, m: int, shared: bool, last: bool):
  """m-fold ``nn.Dense`` / ``NTKDense`` on a shared or concatenated input."""
  n_in, n_out = call.in_shape[-1], mod.features
  if isinstance(mod, nn.Dense):
    if mod.dot_general is not None or mod.dot_general_cls is not None:
      raise ValueError(f'nn.Dense {_name(call.path)} has a custom dot_general: ensemble() cannot '
                       f'group it')
    promote, dtype, precision, scale = mod.promote_dtype, mod.dtype, mod.precision, None
    kernel_init = mod.kernel_init
  else:
    promote, dtype, precision = _ntk_promote, None, None
    scale, kernel_init = math.sqrt(mod.gain / n_in), mod.kernel_init
  kernel = mod.param('kernel', _stacked_init(kernel_init, m), (n_in, n_out), mod.param_dtype)
  bias = (mod.param('bias', _concat_init(mod.bias_init, m), (n_out,), mod.param_dtype)
          if mod.use_bias else None)
  x, kernel, bias = promote(x, kernel, bias, dtype=dtype)
  lead = x.shape[:-1]
  if shared and not last:        # (..., i) x (m, i, o) -> (..., m, o)
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (1,)), ((), ())), precision=precision)
    y = y.reshape(lead + (m * n_out,))
  elif shared:                   # sum_j x W_j = x (sum_j W_j)
    y = lax.dot_general(x, jnp.sum(kernel, axis=0), (((x.ndim - 1,), (0,)), ((), ())),
                        precision=precision)
  elif not last:                 # block-diagonal: (..., m, i) x (m, i, o) -> (m, ..., o)
    xs = x.reshape(lead + (m, n_in))
    nb = len(lead)
    y = lax.dot_general(xs, kernel, (((nb + 1,), (1,)), ((nb,), (0,))), precision=precision)
    y = jnp.moveaxis(y, 0, -2).reshape(lead + (m * n_out,))
  else:                          # sum_j x_j W_j: one matmul with (m*i, o)
    y = lax.dot_general(x, kernel.reshape(m * n_in, n_out), (((x.ndim - 1,), (0,)), ((), ())),
                        precision=precision)
  return _scale_and_bias(y, scale, bias, m, n_out, last)


def _conv(mod, x, call: _Call, m: int, shared: bool, last: bool, conv_impl: str | None):
  """m-fold ``nn.Conv`` / ``GroupedConv`` / ``NTKConv`` via ``GroupedConv``'s computation."""
  n_in = call.in_shape[-1]
  if isinstance(mod, NTKConv):
    ks = (mod.kernel_size, mod.kernel_size)
    g, features = mod.feature_group_count, mod.features
    fields = dict(strides=1, padding='SAME', promote_dtype=_ntk_promote,
                  impl=conv_impl or 'auto')
    kernel_init, use_bias, bias_init, dtype = _STD_NORMAL, False, None, None
    scale = math.sqrt(mod.gain / (ks[0] * ks[1] * (n_in // g)))
  else:
    if isinstance(mod, nn.Conv) and (mod.mask is not None or mod.conv_general_dilated is not None
                                     or mod.conv_general_dilated_cls is not None):
      raise ValueError(f'nn.Conv {_name(call.path)} has a mask or a custom conv_general_dilated: '
                       f'ensemble() cannot group it')
    ks = (mod.kernel_size,) if isinstance(mod.kernel_size, int) else tuple(mod.kernel_size)
    g, features = mod.feature_group_count, mod.features
    impl = conv_impl or (mod.impl if isinstance(mod, _layers.GroupedConv) else 'auto')
    fields = dict(strides=mod.strides, padding=mod.padding, input_dilation=mod.input_dilation,
                  kernel_dilation=mod.kernel_dilation, precision=mod.precision,
                  promote_dtype=mod.promote_dtype, impl=impl)
    if isinstance(mod, _layers.GroupedConv):
      fields['chunk'] = mod.chunk
    kernel_init, use_bias, bias_init = mod.kernel_init, mod.use_bias, mod.bias_init
    dtype, scale = mod.dtype, None
  if n_in % g or features % g:
    raise ValueError(f'weight layer {_name(call.path)}: feature_group_count {g} must divide the '
                     f'input features {n_in} and features {features}')
  kshape = ks + (n_in // g, features)
  kernel = mod.param('kernel', _stacked_init(kernel_init, m), kshape, mod.param_dtype)
  bias = (mod.param('bias', _concat_init(bias_init, m), (features,), mod.param_dtype)
          if use_bias else None)
  x, kernel, bias = fields['promote_dtype'](x, kernel, bias, dtype=dtype)
  nk = len(ks)
  if last and g == 1:
    if shared:                   # sum_j conv(x, K_j) = conv(x, sum_j K_j)
      w, groups = jnp.sum(kernel, axis=0), 1
    else:                        # (m, *k, C, O) -> (*k, m*C, O): one conv over all channels
      w = jnp.moveaxis(kernel, 0, nk).reshape(ks + (m * n_in, features))
      groups = 1
    out = features
  else:                          # (m, *k, C/g, O) -> (*k, C/g, m*O), m*g groups
    w = jnp.moveaxis(kernel, 0, nk + 1).reshape(ks + (n_in // g, m * features))
    if shared and g > 1:
      x = jnp.concatenate([x] * m, axis=-1)
    groups = 1 if (shared and g == 1) else m * g
    out = m * features
  layer = _layers.GroupedConv(out, ks, feature_group_count=groups, use_bias=False, dtype=dtype,
                              param_dtype=w.dtype, **fields)
  y = layer.apply({'params': {'kernel': w}}, x)
  if last and g > 1:
    y = jnp.sum(y.reshape(y.shape[:-1] + (m, features)), axis=-2)
  return _scale_and_bias(y, scale, bias, m, features, last)


# ---------------------------------------------------------------------------------------------
# Parameter mapping.


def _leaf_name(kpath) -> str:
  k = kpath[-1]
  return str(getattr(k, 'key', getattr(k, 'name', k)))


def _check_ensemble(ens_module) -> int:
  if not isinstance(ens_module, Ensemble):
    raise ValueError(f'ens_module must be an Ensemble (from ensemble()), got '
                     f'{type(ens_module).__name__}')
  return ens_module.m


def ensemble_variables(ens_module: Ensemble, member_variables_list: Sequence[Any]):
  """The ensemble's variables from ``m`` member variable trees (all collections).

  ``kernel`` leaves are stacked on a new leading axis, ``(m, *shape)``; every other leaf
  (biases, BatchNorm parameters and statistics) is concatenated on its last axis,
  ``(*shape[:-1], m * shape[-1])``. ``member_variables_list[j]`` becomes member ``j``.
  """
  m = _check_ensemble(ens_module)
  members = list(member_variables_list)
  if len(members) != m:
    raise ValueError(f'member_variables_list must hold m = {m} variable trees, got {len(members)}')
  structs = {jax.tree_util.tree_structure(v) for v in members}
  if len(structs) != 1:
    raise ValueError(f'member variable trees must share one structure, got {len(structs)}')

  def combine(kpath, *leaves):
    if _leaf_name(kpath) == 'kernel':
      return jnp.stack(leaves)
    if jnp.ndim(leaves[0]) == 0:
      raise ValueError(f'member variable {jax.tree_util.keystr(kpath)} is a scalar: it has no '
                       f'channel axis to concatenate')
    return jnp.concatenate(leaves, axis=-1)

  return jax.tree_util.tree_map_with_path(combine, *members)


def member_variables(ens_module: Ensemble, ens_variables: Any, j: int):
  """Member ``j``'s variables (the member module's tree) from the ensemble's (all collections).

  The inverse of :func:`ensemble_variables`: ``kernel[j]``, and the ``j``-th of ``m`` equal
  slices of every other leaf's last axis.
  """
  m = _check_ensemble(ens_module)
  j = _validate.positive_int('j', j, minimum=0)
  if j >= m:
    raise ValueError(f'j must be an integer in [0, {m - 1}], got {j}')

  def pick(kpath, a):
    if _leaf_name(kpath) == 'kernel':
      if jnp.ndim(a) < 1 or jnp.shape(a)[0] != m:
        raise ValueError(f'ensemble kernel {jax.tree_util.keystr(kpath)} of shape '
                         f'{jnp.shape(a)} has no leading member axis of size {m}')
      return a[j]
    if jnp.ndim(a) == 0 or jnp.shape(a)[-1] % m:
      raise ValueError(f'ensemble variable {jax.tree_util.keystr(kpath)} of shape '
                       f'{jnp.shape(a)}: its last axis is not m = {m} members concatenated')
    c = jnp.shape(a)[-1] // m
    return a[..., j * c:(j + 1) * c]

  return jax.tree_util.tree_map_with_path(pick, ens_variables)
