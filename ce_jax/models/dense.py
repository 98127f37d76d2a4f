"""NTK-parameterized dense layer and member, and the dense collegial ensemble (Eq. 4).

Member network with hidden widths ``widths = (n_1, ..., n_L)`` (``depth = L + 1`` weight
matrices), input dimension ``n_0`` taken from the input, all weights i.i.d. N(0, 1), no biases,
phi = ReLU::

    h_1     = sqrt(2/n_0) W_1 x
    h_{l+1} = sqrt(2/n_l) W_{l+1} phi(h_l)
    f(x)    = sqrt(1/n_L) W_out phi(h_L)

Every weight matrix is an :class:`NTKDense` layer ``z = sqrt(gain / fan_in) x W (+ b)`` with
``W ~ N(0, 1)`` and the scale applied in the forward pass (gain 2 for the hidden layers, 1 for the
readout; :func:`layer_scales`), named ``layer_{i}``. Parameters: ``{'params': {'layer_0':
{'kernel': (n_0, n_1)}, ..., 'layer_L': {'kernel': (n_L, num_outputs)}}}``.

The collegial ensemble of ``m`` members is ONE module whose kernels are stacked block-diagonal
weights ``(m, n_in, n_out)`` applied with a batched contraction (einsum); its output is
``F_e(x) = (1/sqrt(m)) sum_j f(x; theta_j)``. Its parameter tree is exactly the member tree with
a leading member axis, so :func:`member_params` / :func:`stack_member_params` convert between
the two.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ce_jax import _validate

__all__ = ['NTKDense', 'DenseMember', 'DenseEnsemble', 'member_params', 'stack_member_params',
           'unstack_member_params', 'num_members', 'layer_scales']

_STD_NORMAL = nn.initializers.normal(stddev=1.0)


def _check_widths(widths: Any) -> tuple[int, ...]:
  return _validate.int_list('widths', widths, minimum=1)


def layer_scales(n0: int, widths: Sequence[int]) -> tuple[float, ...]:
  """NTK scaling factor of each weight matrix: ``sqrt(2/n_0), sqrt(2/n_1), ..., sqrt(1/n_L)``.

  ``len(result) == len(widths) + 1`` (the last entry is the readout's ``sqrt(1/n_L)``).
  """
  fan_ins = (int(n0),) + tuple(int(w) for w in widths)
  return tuple(math.sqrt(2.0 / n) for n in fan_ins[:-1]) + (math.sqrt(1.0 / fan_ins[-1]),)


class NTKDense(nn.Module):
  """Dense layer in the NTK parameterization: ``y = sqrt(gain / fan_in) x W + b``.

  ``W`` of shape ``(fan_in, features)`` (``fan_in = x.shape[-1]``) is drawn from
  ``kernel_init`` (N(0, 1) by default) and the ``sqrt(gain / fan_in)`` scale is applied in the
  forward pass, so pre-activations are O(1) at any width. The optional bias (``use_bias``, off by
  default, ``bias_init`` zeros) is added unscaled.

  Input ``(..., fan_in)`` -> output ``(..., features)``; computed in the promoted dtype of ``x``
  and the kernel.
  """
  features: int
  gain: float = 2.0
  use_bias: bool = False
  param_dtype: Any = jnp.float32
  kernel_init: Any = _STD_NORMAL
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    n_in = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (n_in, self.features), self.param_dtype)
    x, kernel = _promote(x, kernel)
    y = math.sqrt(self.gain / n_in) * (x @ kernel)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, y.dtype)
    return y


class _MemberShape:
  """What :class:`DenseMember` and :class:`DenseEnsemble` share: the member's hidden ``widths``
  and ``num_outputs`` (checked and normalized by :meth:`_check_member`) and its ``depth``."""

  def _check_member(self) -> None:
    object.__setattr__(self, 'widths', _check_widths(self.widths))
    object.__setattr__(self, 'num_outputs',
                       _validate.positive_int('num_outputs', self.num_outputs))

  @property
  def depth(self) -> int:
    return len(self.widths) + 1


class DenseMember(_MemberShape, nn.Module):
  """One NTK-parameterized ReLU MLP member: ``NTKDense`` layers ``layer_0 .. layer_L``.

  Attributes:
    widths: hidden widths ``(n_1, ..., n_L)``; ``depth = len(widths) + 1`` >= 2. Widths may
      differ from layer to layer.
    num_outputs: ``k``, the readout dimension.
    param_dtype: dtype of the N(0, 1) kernels (float32 by default; pass ``jnp.float64`` under
      x64 for float64 studies).
  """
  widths: Sequence[int]
  num_outputs: int = 1
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    self._check_member()
    super().__post_init__()

  @nn.compact
  def __call__(self, x):
    """``x``: ``(batch, n_0)`` -> ``(batch, num_outputs)``."""
    _validate.finite_array('x', x, ndim=2)
    outs = tuple(self.widths) + (self.num_outputs,)
    h = x
    for i, n_out in enumerate(outs):
      hidden = i < len(self.widths)
      # Gains 2 (hidden) and 1 (readout): the scales of layer_scales(n_0, widths).
      h = NTKDense(n_out, gain=2.0 if hidden else 1.0, param_dtype=self.param_dtype,
                   name=f'layer_{i}')(h)
      if hidden:
        h = nn.relu(h)
    return h


class DenseEnsemble(_MemberShape, nn.Module):
  """A dense collegial ensemble of ``m`` members as ONE module (Eq. 4).

  Every layer holds block-diagonal weights ``(m, n_in, n_out)`` (member ``j``'s kernel at index
  ``j``) and is applied with one batched contraction; the output is
  ``(1/sqrt(m)) sum_j f(x; theta_j)``, shape ``(batch, num_outputs)``.
  """
  m: int
  widths: Sequence[int]
  num_outputs: int = 1
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, 'm', _validate.positive_int('m', self.m))
    self._check_member()
    super().__post_init__()

  def member(self) -> DenseMember:
    """The member architecture (same widths, outputs and dtype)."""
    return DenseMember(self.widths, self.num_outputs, self.param_dtype, parent=None)

  @nn.compact
  def __call__(self, x, *, per_member: bool = False):
    """``x``: ``(batch, n_0)`` -> ``(batch, num_outputs)``.

    With ``per_member=True`` returns the member outputs ``f(x; theta_j)``, shape
    ``(m, batch, num_outputs)`` (unscaled, not summed).
    """
    _validate.finite_array('x', x, ndim=2)
    m = self.m
    outs = tuple(self.widths) + (self.num_outputs,)
    scales = layer_scales(x.shape[-1], self.widths)
    h = x
    for i, (n_out, c) in enumerate(zip(outs, scales)):
      n_in = h.shape[-1]
      kernel = self.param(f'layer_{i}',
                          lambda k, s: {'kernel': _stacked_normal(k, s, self.param_dtype)},
                          (m, n_in, n_out))['kernel']
      h, kernel = _promote(h, kernel)
      if i == 0:
        h = c * jnp.einsum('bi,mio->mbo', h, kernel)
      else:
        h = c * jnp.einsum('mbi,mio->mbo', h, kernel)
      if i < len(self.widths):
        h = nn.relu(h)
    if per_member:
      return h
    return jnp.sum(h, axis=0) / jnp.sqrt(jnp.asarray(m, h.dtype))


def _stacked_normal(key, shape, dtype):
  """N(0, 1) kernels ``(m, n_in, n_out)`` drawn as one array: members are independent."""
  return _STD_NORMAL(key, shape, dtype)


def _promote(x, kernel):
  dtype = jnp.result_type(x, kernel)
  return jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)


def num_members(ensemble_params) -> int:
  """Number of members ``m`` of stacked (ensemble) parameters: the leading axis of every leaf."""
  leaves = jax.tree_util.tree_leaves(ensemble_params)
  if not leaves:
    raise ValueError('ensemble_params must contain at least one array, got an empty tree')
  sizes = {int(jnp.shape(l)[0]) if jnp.ndim(l) else -1 for l in leaves}
  if len(sizes) != 1 or -1 in sizes:
    raise ValueError(f'ensemble_params leaves must share one leading member axis, got sizes '
                     f'{sorted(sizes)}')
  return sizes.pop()


def member_params(ensemble_params, j: int):
  """Parameters of member ``j`` (same tree as :class:`DenseMember`'s) from ensemble params.

  Works on ``{'params': ...}`` variables or bare parameter trees; any pytree whose leaves have
  a leading member axis (so also on :func:`stack_member_params` output).
  """
  m = num_members(ensemble_params)
  j = _validate.positive_int('j', j, minimum=0)
  if j >= m:
    raise ValueError(f'j must be an integer in [0, {m - 1}], got {j}')
  return jax.tree_util.tree_map(lambda a: a[j], ensemble_params)


def stack_member_params(members: Sequence[Any]):
  """Stacks a list of member parameter trees along a new leading axis (-> ensemble params)."""
  members = list(members)
  if not members:
    raise ValueError('members must be a non-empty list of parameter trees, got []')
  structs = {jax.tree_util.tree_structure(p) for p in members}
  if len(structs) != 1:
    raise ValueError(f'members must share one tree structure, got {len(structs)} different ones')
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *members)


def unstack_member_params(ensemble_params) -> list:
  """Inverse of :func:`stack_member_params`: a list of ``m`` member parameter trees."""
  return [member_params(ensemble_params, j) for j in range(num_members(ensemble_params))]
