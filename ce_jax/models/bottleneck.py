"""NTK-parameterized ResNet/ResNeXt bottleneck block, the object of Algorithm 1 (alpha fit).

One block with ``cardinality`` paths (``m``) of ``width`` channels (``n``), NHWC::

    h_1 = sqrt(2 / in)       conv1x1(x,  W_1)      in -> D,  D = cardinality * width
    h_2 = sqrt(2 / (9 n))    conv3x3(phi(h_1), W_2)  D -> D, feature_group_count = cardinality
    y   = sqrt(2 / D)        conv1x1(phi(h_2), W_3)  D -> out

All weights i.i.d. N(0, 1) (the NTK parameterization: the scale is applied in the forward pass
with the TRUE fan-in of each convolution, ``kh * kw * in_channels_per_group``, so
pre-activations have O(1) variance at any width); ReLU between convolutions; stride 1, SAME
padding; no biases and no BatchNorm (the NTK scaling already keeps activations O(1), and the
fan-in sum S of Assumption 1 only counts the convolutions).

Design decisions (the recipe they serve: ``docs/ALPHA.md``, section "Bottleneck"):

* **No residual.** The identity shortcut of an ``in == out`` block has no parameters, so it adds
  ``x`` to ``y`` and leaves the NTK (gradients w.r.t. parameters) unchanged; the path is what the
  variance law of Assumption 1 is about. (The post-addition ReLU of a real ResNet block is left
  out for the same reason: with it the entry would depend on the input through the shortcut.)
* **The last convolution is scaled by sqrt(2/D)**, like the others. A constant factor c on the
  output multiplies every NTK entry by c^2 and cancels in E[K^2]/E[K]^2, so it does not change
  alpha; with it ``Var(y) = Var(x)`` per unit, as in the hidden layers.
* **Scalar readout** (needed for one NTK entry): ``readout='center'`` (default) returns the
  output unit at channel 0 of the centre pixel, ``(batch, 1)``; its NTK diagonal entry
  ``K(x, x) = |d y_c(x) / d theta|^2`` is "one diagonal entry of the NTK matrix" of the block
  (paper Sec. 4.2). No extra readout weights are added, so the fan-in sum S counts exactly the
  block's three convolutions. ``readout='none'`` returns the whole map ``(batch, H, W, out)``.
* ``cardinality * width`` paths aggregate through ``conv3``: its ``sqrt(2/D)`` scale equals the
  collegial ``1/sqrt(m)`` times each path's own ``sqrt(2/n)``, so the block IS the ensemble of
  Eq. 4 at block level (paths share ``conv1``/``conv3`` input/output spaces but not weights).

Parameters: ``{'params': {'conv1': {'kernel': (1, 1, in, D)}, 'conv2': {'kernel': (3, 3, n, D)},
'conv3': {'kernel': (1, 1, D, out)}}}``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from ce_jax import _validate

READOUTS = ('center', 'none')

_STD_NORMAL = nn.initializers.normal(stddev=1.0)


class NTKConv(nn.Module):
  """Convolution with N(0, 1) kernel scaled by ``sqrt(gain / fan_in)`` in the forward pass."""
  features: int
  kernel_size: int = 1
  feature_group_count: int = 1
  gain: float = 2.0
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_ch = x.shape[-1]
    if in_ch % self.feature_group_count:
      raise ValueError(f'input channels must be divisible by feature_group_count='
                       f'{self.feature_group_count}, got {in_ch}')
    per_group = in_ch // self.feature_group_count
    k = self.kernel_size
    kernel = self.param('kernel', _STD_NORMAL, (k, k, per_group, self.features), self.param_dtype)
    dtype = jnp.result_type(x, kernel)
    x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
    scale = math.sqrt(self.gain / (k * k * per_group))
    y = lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding='SAME',
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                 feature_group_count=self.feature_group_count)
    return scale * y


class NTKBottleneck(nn.Module):
  """NTK-parameterized bottleneck: 1x1 -> grouped 3x3 (``cardinality`` groups) -> 1x1.

  Attributes:
    cardinality: number of paths ``m`` (>= 1).
    width: channels per path ``n`` (>= 1); the inner width is ``D = cardinality * width``.
    in_channels: input channels (256 for the paper's alpha fit).
    out_channels: output channels (256).
    readout: ``'center'`` -> ``(batch, 1)``, channel 0 at the centre pixel; ``'none'`` -> the
      map ``(batch, H, W, out_channels)``.
    param_dtype: kernel dtype (float32; ``jnp.float64`` under x64).
  """
  cardinality: int
  width: int
  in_channels: int = 256
  out_channels: int = 256
  readout: str = 'center'
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    object.__setattr__(self, 'cardinality', _validate.positive_int('cardinality', self.cardinality))
    object.__setattr__(self, 'width', _validate.positive_int('width', self.width))
    object.__setattr__(self, 'in_channels', _validate.positive_int('in_channels', self.in_channels))
    object.__setattr__(self, 'out_channels',
                       _validate.positive_int('out_channels', self.out_channels))
    _validate.choice('readout', self.readout, READOUTS)
    super().__post_init__()

  @property
  def inner_channels(self) -> int:
    return self.cardinality * self.width

  @nn.compact
  def __call__(self, x):
    """``x``: ``(batch, H, W, in_channels)`` -> ``(batch, 1)`` or ``(batch, H, W, out)``."""
    _validate.finite_array('x', x, ndim=4)
    if x.shape[-1] != self.in_channels:
      raise ValueError(f'x must have {self.in_channels} channels (in_channels), got shape '
                       f'{tuple(x.shape)}')
    d = self.inner_channels
    h = NTKConv(d, 1, param_dtype=self.param_dtype, name='conv1')(x)
    h = NTKConv(d, 3, feature_group_count=self.cardinality, param_dtype=self.param_dtype,
                name='conv2')(nn.relu(h))
    y = NTKConv(self.out_channels, 1, param_dtype=self.param_dtype, name='conv3')(nn.relu(h))
    if self.readout == 'none':
      return y
    return y[:, y.shape[1] // 2, y.shape[2] // 2, :1]
