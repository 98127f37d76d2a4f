"""The paper's families (and a few more) as :class:`ce_jax.design.member.Member` presets.

Each preset is an ordinary member of the generic pipeline (accounting read from the module,
Algorithm 1 on the module, the solver on the counts): nothing here is a closed form.

* :func:`dense`: the paper's dense member (Eq. 3, NTK parameterization, no biases; Fig. 3),
  with the hand-written :class:`~ce_jax.models.dense.DenseEnsemble` as its network. It reads the
  data, so its first layer does not count in S: ``S = (depth - 1) / n``.
* :func:`bottleneck`: one path of the ResNet/ResNeXt bottleneck (1x1 in->n, 3x3 n->n, 1x1
  n->out, NTK parameterization, :class:`~ce_jax.models.bottleneck.NTKBottleneck` with one path),
  whose network is a registry ResNeXt of cardinality m and base width n (Algorithm 2).
* ``parameterization='standard'`` variants (flax's default initializers, no forward scaling)
  of both, to measure what the parameterization does to alpha (``docs/ALPHA.md``).

Three families the paper does not treat, as blocks in the standard parameterization (results in
``docs/RESULTS.md``, "Beyond the paper"), with ``C`` channels, ``d`` model features, width n:

* :func:`wrn_basic`: a Wide-ResNet basic-block path, 3x3 conv C->n, ReLU, 3x3 conv n->C;
  ``beta = 18 C n``, ``S = 1/C + 1/n`` (channels) or ``1/(9C) + 1/(9n)`` (kernel).
* :func:`transformer_mlp`: d -> n -> d with GELU and biases; ``beta = (2d + 1) n + d``,
  ``S = 1/d + 1/n``.
* :func:`inverted_residual`: MobileNetV2's 1x1 C->n, ReLU6, depthwise 3x3, ReLU6, 1x1 n->C;
  ``beta = (2C + 9) n``, ``S = 1/C + 1 + 1/n`` (channels) or ``1/C + 1/9 + 1/n`` (kernel).

``get(name, **kwargs)`` returns a preset by name; ``NAMES`` lists them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ce_jax import _validate
from ce_jax.design.member import Member
from ce_jax.models import dense as dense_lib
from ce_jax.models import ensemble as ensemble_lib
from ce_jax.models import resnext
from ce_jax.models.bottleneck import NTKBottleneck

PARAMETERIZATIONS = ('ntk', 'standard')


@dataclasses.dataclass(frozen=True)
class _Call:
  """``fn`` with keyword arguments bound, compared by value (so equal presets share caches)."""
  fn: Any
  kwargs: tuple

  def __call__(self, *args):
    return self.fn(*args, **dict(self.kwargs))


def _bind(fn, **kwargs) -> _Call:
  return _Call(fn, tuple(sorted(kwargs.items())))
RESNEXT_NETWORKS = ('resnext29', 'resnext38', 'resnext50', 'resnext101')


def default_num_classes(network: str) -> int:
  """Classes of a registry ResNeXt by default (``resnext.default_num_classes``)."""
  return resnext.default_num_classes(network)


def default_image_size(network: str) -> int:
  """Input resolution of each family: 32 (ResNeXt-29), 64 (ResNeXt-38), 224 (50/101)."""
  return {'resnext29': 32, 'resnext38': 64, 'resnext50': 224, 'resnext101': 224}[network]


# --------------------------------------------------------------------------------------------
# Dense member.


class StandardDenseMember(nn.Module):
  """The dense member in the standard parameterization: ``nn.Dense`` layers, no biases.

  flax's default initializer (LeCun normal, variance 1 / fan_in), ReLU between layers.
  """
  widths: tuple
  num_outputs: int = 1

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Dense(w, use_bias=False, name=f'layer_{i}')(x))
    return nn.Dense(self.num_outputs, use_bias=False, name=f'layer_{len(self.widths)}')(x)


def _dense_widths(width, depth: int) -> tuple:
  if isinstance(width, tuple):
    if len(width) != depth - 1:
      raise ValueError(f'per-layer width must have depth - 1 = {depth - 1} entries, got {width}')
    return width
  return (int(width),) * (depth - 1)


def _dense_factory(width, *, depth, num_outputs, parameterization):
  widths = _dense_widths(width, depth)
  if parameterization == 'standard':
    return StandardDenseMember(widths, num_outputs)
  return dense_lib.DenseMember(widths, num_outputs)


def _dense_network(m, width, *, depth, num_outputs, parameterization):
  widths = _dense_widths(width, depth)
  if parameterization == 'standard':
    return ensemble_lib.ensemble(StandardDenseMember(widths, num_outputs), m)
  return dense_lib.DenseEnsemble(m, widths, num_outputs)


def dense(depth: int = 6, input_dim: int = 748, num_outputs: int = 1,
          parameterization: str = 'ntk') -> Member:
  """The dense member of ``depth`` weight matrices on ``input_dim``-d inputs (Fig. 3)."""
  depth = _validate.positive_int('depth', depth, minimum=2)
  input_dim = _validate.positive_int('input_dim', input_dim)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  _validate.choice('parameterization', parameterization, PARAMETERIZATIONS)
  kw = dict(depth=depth, num_outputs=num_outputs, parameterization=parameterization)
  return Member(_bind(_dense_factory, **kw), (input_dim,),
                network=_bind(_dense_network, **kw),
                name=f'dense{depth}' + ('' if parameterization == 'ntk' else '_standard'),
                reads_data=True)


# --------------------------------------------------------------------------------------------
# Bottleneck path.


class StandardBottleneckPath(nn.Module):
  """One bottleneck path in the standard parameterization: ``nn.Conv`` 1x1, 3x3, 1x1, no bias."""
  width: int
  out_channels: int = 256

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.width, (1, 1), use_bias=False, name='conv1')(x))
    h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False, name='conv2')(h))
    return nn.Conv(self.out_channels, (1, 1), use_bias=False, name='conv3')(h)


def _bottleneck_factory(width, *, in_channels, out_channels, parameterization):
  width = width[0] if isinstance(width, tuple) and len(width) == 1 else width
  if parameterization == 'standard':
    return StandardBottleneckPath(int(width), out_channels)
  return NTKBottleneck(1, int(width), in_channels, out_channels, readout='none')


def _resnext_network(m, width, *, network, num_classes):
  width = width[0] if isinstance(width, tuple) and len(width) == 1 else width
  return resnext.resnext(network, cardinality=int(m), base_width=int(width),
                         num_classes=num_classes)


def _resnext_label(m, width):
  width = width[0] if isinstance(width, tuple) else width
  return f'{int(m)}x{int(width)}d'


def bottleneck(network: str = 'resnext29', *, num_classes: int | None = None,
               image_size: int | None = None, in_channels: int = 256,
               out_channels: int = 256, parameterization: str = 'ntk') -> Member:
  """One path of width n of the canonical bottleneck (``in -> n -> n -> out``, Algorithm 2).

  The member's input is ONE 3x3 window of ``in_channels`` features (the central output unit of
  the block sees exactly that window); its network is the registry ResNeXt ``network`` with
  cardinality m and base width n, counted at ``image_size`` (default per family) with
  ``num_classes`` (default 10 for ResNeXt-29, else 1000).
  """
  _validate.choice('network', network, RESNEXT_NETWORKS)
  _validate.choice('parameterization', parameterization, PARAMETERIZATIONS)
  num_classes = default_num_classes(network) if num_classes is None else num_classes
  num_classes = _validate.positive_int('num_classes', num_classes)
  image_size = default_image_size(network) if image_size is None else image_size
  image_size = _validate.positive_int('image_size', image_size)
  in_channels = _validate.positive_int('in_channels', in_channels)
  out_channels = _validate.positive_int('out_channels', out_channels)
  factory = _bind(_bottleneck_factory, in_channels=in_channels,
                              out_channels=out_channels, parameterization=parameterization)
  net = _bind(_resnext_network, network=network, num_classes=num_classes)
  return Member(factory, (3, 3, in_channels), network=net,
                name=f'bottleneck_{network}' + ('' if parameterization == 'ntk' else '_standard'),
                reads_data=False, network_apply_kwargs=(('train', False),),
                label=_resnext_label, network_input_shape=(image_size, image_size, 3))


# --------------------------------------------------------------------------------------------
# Three families beyond the paper: a Wide-ResNet basic-block path, a Transformer MLP block and
# a MobileNetV2 inverted-residual path. Standard parameterization (flax's default initializers,
# LeCun normal, no forward scaling): the modules a user would write. All three are blocks
# (``reads_data=False``): every weight layer counts in S, the first one included.


class WRNBasicPath(nn.Module):
  """One path of width n of the Wide-ResNet basic block: 3x3 conv C->n, ReLU, 3x3 conv n->C.

  ``nn.Conv`` without biases (as in WRN, where BatchNorm follows every convolution), ``'SAME'``
  padding. Input ``(B, H, W, C)`` -> output ``(B, H, W, C)``. No BatchNorm (see :func:`wrn_basic`).
  """
  width: int
  channels: int = 64

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False, name='conv1')(x))
    return nn.Conv(self.channels, (3, 3), padding='SAME', use_bias=False, name='conv2')(h)


class TransformerMLP(nn.Module):
  """The position-wise MLP of a Transformer block: Dense d->n, GELU, Dense n->d (with biases).

  Input ``(..., d_model)`` -> output ``(..., d_model)``.
  """
  width: int
  d_model: int = 256

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(nn.Dense(self.width, name='fc1')(x))
    return nn.Dense(self.d_model, name='fc2')(h)


class InvertedResidualPath(nn.Module):
  """One MobileNetV2 inverted-residual path of expanded width n (no shortcut, no BatchNorm).

  1x1 conv C->n, ReLU6, depthwise 3x3 conv n->n (``feature_group_count=n``), ReLU6, linear 1x1
  conv n->C; ``nn.Conv`` without biases, ``'SAME'`` padding. ``(B, H, W, C)`` -> ``(B, H, W, C)``.
  """
  width: int
  channels: int = 32

  @nn.compact
  def __call__(self, x):
    h = nn.relu6(nn.Conv(self.width, (1, 1), use_bias=False, name='expand')(x))
    h = nn.relu6(nn.Conv(self.width, (3, 3), padding='SAME', feature_group_count=self.width,
                         use_bias=False, name='depthwise')(h))
    return nn.Conv(self.channels, (1, 1), use_bias=False, name='project')(h)


def _scalar_width(width) -> int:
  if isinstance(width, tuple):
    if len(width) != 1:
      raise ValueError(f'this member takes one width, got per-layer widths {width}')
    width = width[0]
  return int(width)


def _wrn_basic_factory(width, *, channels):
  return WRNBasicPath(_scalar_width(width), channels)


def _transformer_mlp_factory(width, *, d_model):
  return TransformerMLP(_scalar_width(width), d_model)


def _inverted_residual_factory(width, *, channels):
  return InvertedResidualPath(_scalar_width(width), channels)


def wrn_basic(channels: int = 64) -> Member:
  """One path of width n of the Wide-ResNet basic block (:class:`WRNBasicPath`).

  The input is ONE 5x5 window of ``channels`` features: the central output unit of two stacked
  3x3 convolutions sees exactly that window (with ``'SAME'`` padding the centre never reads the
  padding, and FLOPs are those of 25 output positions, proportional to the parameters).

  Accounting (both layers count, the block reads features)::

      beta(n) = 9 C n + 9 n C = 18 C n
      S_channels(n) = 1/C + 1/n            S_kernel(n) = 1/(9 C) + 1/(9 n)

  A WRN-28-10 baseline path of its first stage is ``channels=160``, ``n~ = 160``.

  BatchNorm is left out, as in the :func:`bottleneck` preset: the member is the chain of weight
  layers between the block's input and its sum. Applied with ``train=False`` at initialization
  (running mean 0, variance 1) a BatchNorm is the identity in the forward pass; it would only
  add the gradients of its 2n affine parameters to K (normalization parameters are not layers,
  so S would not change), and the pre-activation BN on the block's input acts on the shared
  input, outside the paths.
  """
  channels = _validate.positive_int('channels', channels)
  return Member(_bind(_wrn_basic_factory, channels=channels), (5, 5, channels),
                name=f'wrn_basic_c{channels}', reads_data=False)


def transformer_mlp(d_model: int = 256) -> Member:
  """The Transformer MLP block d -> n -> d with GELU and biases (:class:`TransformerMLP`).

  Input one token of ``d_model`` features; the usual baseline width is ``n~ = 4 d``::

      beta(n) = d n + n + n d + d = (2 d + 1) n + d
      S(n) = 1/d + 1/n   (both conventions: dense layers have no kernel taps)
  """
  d_model = _validate.positive_int('d_model', d_model)
  return Member(_bind(_transformer_mlp_factory, d_model=d_model), (d_model,),
                name=f'transformer_mlp_d{d_model}', reads_data=False)


def inverted_residual(channels: int = 32) -> Member:
  """One MobileNetV2 inverted-residual path of expanded width n (:class:`InvertedResidualPath`).

  Input ONE 3x3 window of ``channels`` features (the centre output sees the depthwise 3x3 of
  1x1 expansions). The usual baseline width is ``n~ = 6 C`` (expansion factor 6)::

      beta(n) = C n + 9 n + n C = (2 C + 9) n
      S_channels(n) = 1/C + 1 + 1/n        S_kernel(n) = 1/C + 1/9 + 1/n

  The depthwise convolution has ONE input channel per group whatever n, so its fan-in (1, or 9
  taps) is a constant of S: it shifts S but does not change with the width.
  """
  channels = _validate.positive_int('channels', channels)
  return Member(_bind(_inverted_residual_factory, channels=channels), (3, 3, channels),
                name=f'inverted_residual_c{channels}', reads_data=False)


# The baselines of docs/RESULTS.md ("Beyond the paper") as Member objects, so that
# ``experiments/design.py --member=ce_jax.design.presets:WRN28_10_PATH`` designs them directly.
WRN28_10_PATH = wrn_basic(160)              # WRN-28-10, first stage: 160 channels, n~ = 160
TRANSFORMER_MLP_256 = transformer_mlp(256)  # d = 256, n~ = 4 d = 1024
MOBILENETV2_PATH = inverted_residual(32)    # 32 channels, expansion 6: n~ = 192


NAMES = ('dense', 'bottleneck', 'wrn_basic', 'transformer_mlp', 'inverted_residual')
_BUILDERS = {'dense': dense, 'bottleneck': bottleneck, 'wrn_basic': wrn_basic,
             'transformer_mlp': transformer_mlp, 'inverted_residual': inverted_residual}


def get(name: str, **kwargs: Any) -> Member:
  """The preset ``name`` (one of ``NAMES``) built with ``kwargs``."""
  _validate.choice('preset', name, _BUILDERS)
  return _BUILDERS[name](**kwargs)

