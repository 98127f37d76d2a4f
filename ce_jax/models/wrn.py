"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis; the downsampled-ImageNet variant of
Chrabaszcz et al.).

The baselines of the appendix tables: WRN-28-10 (37.1M) and WRN-28-5 (9.5M) on ImageNet 32x32,
WRN-36-5 (37.6M) on ImageNet 64x64 (1000 classes).

Architecture (pre-activation basic blocks, no conv biases, He-normal fan-in init)::

    stem: 3x3 conv 3 -> 16
    num_stages stages of N = (depth - 4) / (2 num_stages) blocks, widths 16k, 32k, 64k (, 128k);
      the first block of every stage but the first has stride 2
    block in -> out, stride s:
      o = ReLU(BN(x)); y = conv3x3(o, out, s); y = conv3x3(ReLU(BN(y)), out, 1)
      shortcut = conv1x1(o, out, s) if in != out or s != 1 else x;   return y + shortcut
    BN, ReLU, global average pool, dense classifier with bias

``num_stages`` defaults to 3 when ``(depth - 4) % 6 == 0`` (WRN-28) and to 4 when
``(depth - 4) % 8 == 0`` otherwise (WRN-36: 4 stages of 4 blocks, the 64x64 network).
Inputs ``(batch, H, W, 3)``; logits ``(batch, num_classes)``. Layers are chosen as in
:mod:`ce_jax.models.resnext`: ``layers='fast'`` (default: :class:`ce_jax.models.layers.GroupedConv`
and :class:`~ce_jax.models.layers.FastBatchNorm`), ``'stock'`` (``nn.Conv``, ``nn.BatchNorm``) or
a ``(conv, batch_norm)`` pair; ``conv`` overrides the convolution of that choice. The variables
(names, shapes, initialization) are the same whichever layers build the network.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ce_jax import _validate
from ce_jax.models.resnext import ConvBlock, ModuleDef, conv_init, layer_modules, network_layers


def wrn_stages(depth: int, num_stages: int | None = None) -> tuple[int, int]:
  """Returns ``(num_stages, blocks_per_stage)`` of WRN-``depth``; one-line ValueError if invalid."""
  depth = _validate.positive_int('depth', depth)
  if num_stages is None:
    if depth >= 10 and (depth - 4) % 6 == 0:
      num_stages = 3
    elif depth >= 12 and (depth - 4) % 8 == 0:
      num_stages = 4
    else:
      raise ValueError(f'depth must be 6N+4 (3 stages) or 8N+4 (4 stages) with N >= 1, '
                       f'got {depth}')
  num_stages = _validate.positive_int('num_stages', num_stages)
  per = depth - 4
  if per < 2 * num_stages or per % (2 * num_stages):
    raise ValueError(f'depth must be {2 * num_stages}N+4 with N >= 1 for {num_stages} stages, '
                     f'got {depth}')
  return num_stages, per // (2 * num_stages)


class WideBasicBlock(ConvBlock):
  """Pre-activation basic block of Wide ResNet."""
  out_channels: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    conv = self.block_conv
    s = (self.strides, self.strides)
    o = nn.relu(self.norm(name='bn1')(x))
    y = conv(self.out_channels, (3, 3), strides=s, padding=((1, 1), (1, 1)), name='conv1')(o)
    y = nn.relu(self.norm(name='bn2')(y))
    y = conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)), name='conv2')(y)
    if x.shape[-1] != self.out_channels or self.strides != 1:
      x = conv(self.out_channels, (1, 1), strides=s, name='shortcut_conv')(o)
    return y + x


class WideResNet(nn.Module):
  """WRN-``depth``-``widen_factor``; see the module docstring.

  Attributes:
    depth, widen_factor, num_stages: the architecture (:func:`wrn_stages`).
    num_classes: classifier outputs.
    dtype: computation dtype (parameters stay float32).
    conv: convolution module (``nn.Conv`` layout) overriding ``layers``' choice.
    layers: 'fast' (default), 'stock' or a ``(conv, batch_norm)`` pair, as
      :func:`ce_jax.models.resnext.layer_modules`.
  """
  depth: int = 28
  widen_factor: int = 10
  num_classes: int = 1000
  num_stages: int | None = None
  dtype: Any = jnp.float32
  conv: ModuleDef | None = None
  layers: Any = 'fast'

  def __post_init__(self):
    layer_modules(self.layers)
    wrn_stages(self.depth, self.num_stages)
    _validate.positive_int('widen_factor', self.widen_factor)
    _validate.positive_int('num_classes', self.num_classes)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    num_stages, blocks = wrn_stages(self.depth, self.num_stages)
    conv, norm = network_layers(self.layers, self.conv, train, self.dtype)
    x = jnp.asarray(x, self.dtype)
    x = conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=conv_init,
             dtype=self.dtype, name='stem_conv')(x)
    for i in range(num_stages):
      out = 16 * (2 ** i) * self.widen_factor
      for j in range(blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        x = WideBasicBlock(out_channels=out, strides=strides, conv=conv, norm=norm,
                           dtype=self.dtype, name=f'stage{i + 1}_block{j + 1}')(x)
    x = nn.relu(norm(name='final_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
    return jnp.asarray(x, jnp.float32)
