"""ResNeXt / ResNet in Flax linen: ResNeXt-29/38 (downsampled images) and ResNeXt-50/101 (ImageNet).

Architecture (the paper and the official ResNeXt code):

* Bottleneck block ``in -> out`` with cardinality ``C`` and base width ``d``::

      D = C * floor(d * out / 256)                         (total width of the grouped 3x3)
      1x1 conv in->D, BN, ReLU
      3x3 conv D->D, C groups (feature_group_count=C), stride s, BN, ReLU
      1x1 conv D->out, BN
      shortcut: 1x1 conv (stride s) + BN when in != out or s != 1, else identity
      add, ReLU

  A block with ``C`` paths of width ``n = D / C`` is the paper's collegial ensemble of ``C``
  bottleneck paths (Algorithm 2).
* ResNeXt-29 (stem ``'cifar'``): 3x3 conv 3->64, BN, ReLU; stages of 3 blocks with outputs
  256, 512, 1024; the first block of stages 2 and 3 has stride 2 (on the 3x3 conv).
  ResNeXt-38: the same plus a fourth stage (out 2048, stride 2).
* ResNeXt-50/101 (stem ``'imagenet'``): 7x7/2 conv 3->64, BN, ReLU, 3x3/2 max pool; stages of
  3-4-6-3 / 3-4-23-3 blocks with outputs 256..2048 (stride 2 at the first block of stages 2-4).
  Cardinality 1 with base width 64 is ResNet-50/101.
* Global average pooling (the 8x8 pool of the CIFAR models at 32x32 input), dense classifier with
  bias. Convolutions have no bias and He-normal fan-in init (``variance_scaling(2, 'fan_in')``;
  for a grouped conv the fan-in is ``9 * D / C``). BatchNorm has scale and bias and keeps running
  statistics in the ``batch_stats`` collection (``train=True`` uses batch statistics and updates
  them: ``apply(..., mutable=['batch_stats'])``).

By default (``layers='fast'``) the convolutions are :class:`ce_jax.models.layers.GroupedConv` and
the BatchNorms :class:`ce_jax.models.layers.FastBatchNorm`: the same parameter layout (``kernel``
of shape ``(kh, kw, in/groups, out)``), names, initialization and numerics (to float32 rounding)
as ``nn.Conv(feature_group_count=C)`` / ``nn.BatchNorm``, which ``layers='stock'`` selects, but
with grouped kernel gradients that avoid XLA:CPU's slow path (docs/PERFORMANCE.md). Checkpoints
and parameter counts are interchangeable between the two.

Inputs: ``x`` of shape ``(batch, H, W, 3)`` (NHWC); output logits ``(batch, num_classes)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ce_jax import _validate

ModuleDef = Any

conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

LAYERS = ('fast', 'stock')


def layer_modules(layers: Any = 'fast') -> tuple[ModuleDef, ModuleDef]:
  """``(conv, batch_norm)`` module classes a model family builds with (ResNeXt, WRN).

  ``layers``: ``'fast'`` (:class:`ce_jax.models.layers.GroupedConv`,
  :class:`~ce_jax.models.layers.FastBatchNorm`), ``'stock'`` (``nn.Conv``, ``nn.BatchNorm``), or
  a ``(conv, batch_norm)`` pair of your own, called with ``nn.Conv`` / ``nn.BatchNorm``'s fields.
  One-line ValueError for anything else.
  """
  if isinstance(layers, tuple) and len(layers) == 2 and all(map(callable, layers)):
    return layers
  if not isinstance(layers, str) or layers not in LAYERS:
    raise ValueError(f'layers must be one of {", ".join(LAYERS)} or a (conv, batch_norm) pair '
                     f'of module classes; got {layers!r}')
  if layers == 'stock':
    return nn.Conv, nn.BatchNorm
  from ce_jax.models import layers as fast  # pylint: disable=g-import-not-at-top
  return fast.GroupedConv, fast.FastBatchNorm


def network_layers(layers: Any, conv: ModuleDef | None, train: bool,
                   dtype: Any) -> tuple[ModuleDef, ModuleDef]:
  """``(conv, norm)`` a network (ResNeXt, WRN) builds its layers with: ``layers``' modules
  (:func:`layer_modules`), ``conv`` (if given) instead of their convolution, and their
  BatchNorm in training or evaluation mode (momentum 0.9, epsilon 1e-5, computed in ``dtype``)."""
  default_conv, batch_norm = layer_modules(layers)
  norm = functools.partial(batch_norm, use_running_average=not train, momentum=0.9,
                           use_fast_variance=False, epsilon=1e-5, dtype=dtype)
  return conv or default_conv, norm


# name -> (blocks per stage, stage outputs, stem)
ARCHITECTURES = {
    'resnext29': ((3, 3, 3), (256, 512, 1024), 'cifar'),
    'resnext38': ((3, 3, 3, 3), (256, 512, 1024, 2048), 'cifar'),
    'resnext50': ((3, 4, 6, 3), (256, 512, 1024, 2048), 'imagenet'),
    'resnext101': ((3, 4, 23, 3), (256, 512, 1024, 2048), 'imagenet'),
}
STEMS = ('cifar', 'imagenet')


def stage_width(cardinality: int, base_width: int, out_channels: int) -> int:
  """Total grouped-conv width D = C * floor(d * out / 256) of a stage with ``out`` channels."""
  return cardinality * ((base_width * out_channels) // 256)


def validate_config(stage_sizes, stage_outputs, cardinality, base_width, num_classes,
                    stem='cifar', stem_channels=64):
  """Validates a ResNeXt configuration; returns the normalized tuple. One-line ValueErrors."""
  stage_sizes = _validate.int_list('stage_sizes', stage_sizes)
  stage_outputs = _validate.int_list('stage_outputs', stage_outputs)
  if len(stage_sizes) != len(stage_outputs):
    raise ValueError(f'stage_sizes and stage_outputs must have the same length, got '
                     f'{len(stage_sizes)} and {len(stage_outputs)}')
  cardinality = _validate.positive_int('cardinality', cardinality)
  base_width = _validate.positive_int('base_width', base_width)
  num_classes = _validate.positive_int('num_classes', num_classes)
  stem_channels = _validate.positive_int('stem_channels', stem_channels)
  _validate.choice('stem', stem, STEMS)
  for i, out in enumerate(stage_outputs):
    if (base_width * out) // 256 < 1:
      raise ValueError(f'base_width {base_width} is too small for stage {i + 1} with {out} output '
                       f'channels: each group needs floor(base_width * {out} / 256) >= 1 channels, '
                       f'use base_width >= {-(-256 // out)}')
  return stage_sizes, stage_outputs, cardinality, base_width, num_classes, stem_channels


class ConvBlock(nn.Module):
  """The layers of a residual block (:class:`Bottleneck`, ``wrn.WideBasicBlock``): the ``conv``
  and ``norm`` module classes and the computation ``dtype``, keyword-only fields."""
  _: dataclasses.KW_ONLY
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm
  dtype: Any = jnp.float32

  @property
  def block_conv(self) -> Callable[..., nn.Module]:
    """``conv`` as every block convolution is built: no bias, He-normal fan-in init, ``dtype``."""
    return functools.partial(self.conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)


class Bottleneck(ConvBlock):
  """ResNeXt bottleneck ``in -> out`` with ``cardinality`` groups of total width ``width`` (=D)."""
  width: int
  out_channels: int
  cardinality: int = 1
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    conv = self.block_conv
    residual = x
    y = conv(self.width, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = conv(self.width, (3, 3), strides=(self.strides, self.strides), padding=((1, 1), (1, 1)),
             feature_group_count=self.cardinality, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = conv(self.out_channels, (1, 1), name='conv3')(y)
    y = self.norm(name='bn3')(y)
    if x.shape[-1] != self.out_channels or self.strides != 1:
      residual = conv(self.out_channels, (1, 1), strides=(self.strides, self.strides),
                      name='shortcut_conv')(x)
      residual = self.norm(name='shortcut_bn')(residual)
    return nn.relu(y + residual)


class ResNeXt(nn.Module):
  """ResNeXt with ``cardinality`` x ``base_width``d bottlenecks (see module docstring).

  Attributes:
    stage_sizes: bottlenecks per stage, e.g. (3, 3, 3) for ResNeXt-29.
    stage_outputs: output channels per stage, e.g. (256, 512, 1024).
    cardinality: C, groups of the 3x3 convolutions (paths of the block ensemble).
    base_width: d; stage width D = C * floor(d * out / 256).
    num_classes: classifier outputs.
    stem: 'cifar' (3x3 conv, no pooling) or 'imagenet' (7x7/2 conv + 3x3/2 max pool).
    stem_channels: output channels of the stem conv (64).
    dtype: computation dtype (parameters stay float32).
    conv: convolution module (``nn.Conv`` layout) overriding ``layers``' choice.
    layers: 'fast' (default: :class:`ce_jax.models.layers.GroupedConv` and
      :class:`~ce_jax.models.layers.FastBatchNorm`, same parameters and numerics as flax's,
      fast grouped kernel gradients on XLA:CPU, docs/PERFORMANCE.md), 'stock'
      (``nn.Conv(feature_group_count=C)`` and ``nn.BatchNorm``), or a ``(conv, batch_norm)``
      pair of module classes (:func:`layer_modules`).
  """
  stage_sizes: Sequence[int]
  stage_outputs: Sequence[int]
  cardinality: int = 1
  base_width: int = 64
  num_classes: int = 10
  stem: str = 'cifar'
  stem_channels: int = 64
  dtype: Any = jnp.float32
  conv: ModuleDef | None = None
  layers: Any = 'fast'

  def __post_init__(self):
    layer_modules(self.layers)
    validate_config(self.stage_sizes, self.stage_outputs, self.cardinality, self.base_width,
                    self.num_classes, self.stem, self.stem_channels)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = network_layers(self.layers, self.conv, train, self.dtype)
    x = jnp.asarray(x, self.dtype)
    if self.stem == 'cifar':
      x = conv(self.stem_channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    else:
      x = conv(self.stem_channels, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                    use_bias=False, kernel_init=conv_init, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, (num_blocks, out) in enumerate(zip(self.stage_sizes, self.stage_outputs)):
      width = stage_width(self.cardinality, self.base_width, out)
      for j in range(num_blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        x = Bottleneck(width=width, out_channels=out, cardinality=self.cardinality,
                       strides=strides, conv=conv, norm=norm, dtype=self.dtype,
                       name=f'stage{i + 1}_block{j + 1}')(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
    return jnp.asarray(x, jnp.float32)


def default_num_classes(name: str) -> int:
  """The one rule for a registry ResNeXt's classes: 10 for ResNeXt-29 (CIFAR-10), else 1000."""
  return 10 if name == 'resnext29' else 1000


def resnext(name: str, cardinality: int = 1, base_width: int = 64, num_classes: int | None = None,
            dtype: Any = jnp.float32, conv: ModuleDef | None = None, stage_outputs=None,
            stem_channels: int = 64, layers: Any = 'fast') -> ResNeXt:
  """Builds one of ``ARCHITECTURES`` (``num_classes`` default: 10 for 29, 1000 otherwise)."""
  _validate.choice('model', name, ARCHITECTURES)
  sizes, outputs, stem = ARCHITECTURES[name]
  if num_classes is None:
    num_classes = default_num_classes(name)
  if stage_outputs is not None:
    outputs = _validate.int_list('stage_outputs', stage_outputs)
  return ResNeXt(stage_sizes=sizes, stage_outputs=outputs, cardinality=cardinality,
                 base_width=base_width, num_classes=num_classes, stem=stem,
                 stem_channels=stem_channels, dtype=dtype, conv=conv, layers=layers)


ResNeXt29: Callable[..., ResNeXt] = functools.partial(resnext, 'resnext29')
ResNeXt38: Callable[..., ResNeXt] = functools.partial(resnext, 'resnext38')
ResNeXt50: Callable[..., ResNeXt] = functools.partial(resnext, 'resnext50')
ResNeXt101: Callable[..., ResNeXt] = functools.partial(resnext, 'resnext101')
