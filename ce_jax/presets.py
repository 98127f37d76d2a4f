"""The paper's families (and a few more) as :class:`ce_jax.member.Member` presets.

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

``get(name, **kwargs)`` returns a preset by name; ``NAMES`` lists them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from ce_jax import _validate
from ce_jax.member import Member

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
  """Classes of a registry ResNeXt by default: 10 for ResNeXt-29 (CIFAR-10), else 1000."""
  return 10 if network == 'resnext29' else 1000


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
  from ce_jax.models import dense as dense_lib
  widths = _dense_widths(width, depth)
  if parameterization == 'standard':
    return StandardDenseMember(widths, num_outputs)
  return dense_lib.DenseMember(widths, num_outputs)


def _dense_network(m, width, *, depth, num_outputs, parameterization):
  from ce_jax.models import dense as dense_lib
  widths = _dense_widths(width, depth)
  if parameterization == 'standard':
    from ce_jax.models import ensemble as ensemble_lib
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
  from ce_jax.models.bottleneck import NTKBottleneck
  width = width[0] if isinstance(width, tuple) and len(width) == 1 else width
  if parameterization == 'standard':
    return StandardBottleneckPath(int(width), out_channels)
  return NTKBottleneck(1, int(width), in_channels, out_channels, readout='none')


def _resnext_network(m, width, *, network, num_classes):
  from ce_jax.models import resnext
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


NAMES = ('dense', 'bottleneck')
_BUILDERS = {'dense': dense, 'bottleneck': bottleneck}


def get(name: str, **kwargs: Any) -> Member:
  """The preset ``name`` (one of ``NAMES``) built with ``kwargs``."""
  _validate.choice('preset', name, _BUILDERS)
  return _BUILDERS[name](**kwargs)

