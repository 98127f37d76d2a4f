"""Model registry: name models by string in binaries and configs.

    from ce_jax.models import registry
    model = registry.get('resnext29', cardinality=37, base_width=10, num_classes=10)
    registry.names()  # ('dense', 'dense_ensemble', 'resnext101', ...)

Names and hyperparameters:

* ``resnext29`` / ``resnext38`` / ``resnext50`` / ``resnext101``: ``cardinality`` (1),
  ``base_width`` (64; 1 x 64d is ResNet), ``num_classes`` (10 for 29, else 1000), ``dtype``,
  ``conv``, ``stage_outputs`` (per-stage outputs, default 256, 512, ...), ``stem_channels``
  (64), ``layers`` ('fast', the default: ce_jax.models.layers; 'stock': flax's layers; or a
  ``(conv, batch_norm)`` pair of module classes).
* ``wrn``: ``depth`` (28), ``widen_factor`` (10), ``num_classes`` (1000), ``num_stages``
  (inferred from depth), ``dtype``, ``conv``, ``layers`` (as for ResNeXt).
* ``dense``: :class:`ce_jax.models.dense.DenseMember` (``widths``, ``num_outputs``).
* ``dense_ensemble``: :class:`ce_jax.models.dense.DenseEnsemble` (``m``, ``widths``,
  ``num_outputs``).

Modules are imported lazily. Unknown names or hyperparameters and invalid values raise a one-line
``ValueError``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

_RESNEXT_KEYS = ('cardinality', 'base_width', 'num_classes', 'dtype', 'conv', 'stage_outputs',
                 'stem_channels', 'layers')


def _resnext(name: str) -> Callable[..., Any]:
  def build(**kw):
    from ce_jax.models import resnext
    return resnext.resnext(name, **kw)
  build.keys = _RESNEXT_KEYS
  return build


def _wrn(**kw):
  from ce_jax.models import wrn
  return wrn.WideResNet(**kw)


_wrn.keys = ('depth', 'widen_factor', 'num_classes', 'num_stages', 'dtype', 'conv', 'layers')


def _dense(**kw):
  from ce_jax.models import dense
  return dense.DenseMember(**kw)


_dense.keys = None  # taken from the class signature


def _dense_ensemble(**kw):
  from ce_jax.models import dense
  return dense.DenseEnsemble(**kw)


_dense_ensemble.keys = None

_BUILDERS: dict[str, Callable[..., Any]] = {
    'resnext29': _resnext('resnext29'),
    'resnext38': _resnext('resnext38'),
    'resnext50': _resnext('resnext50'),
    'resnext101': _resnext('resnext101'),
    'wrn': _wrn,
    'dense': _dense,
    'dense_ensemble': _dense_ensemble,
}


def names() -> tuple[str, ...]:
  """Registered model names, sorted."""
  return tuple(sorted(_BUILDERS))


def _allowed_keys(name: str) -> tuple[str, ...]:
  keys = _BUILDERS[name].keys
  if keys is not None:
    return tuple(keys)
  from ce_jax.models import dense
  cls = dense.DenseMember if name == 'dense' else dense.DenseEnsemble
  return tuple(p for p in inspect.signature(cls).parameters if p not in ('parent', 'name'))


def get(name: str, **hyperparameters) -> Any:
  """Returns the flax module registered as ``name`` built with ``hyperparameters``.

  Raises:
    ValueError: unknown name (the message lists valid names), unknown hyperparameter, or an
      invalid value (cardinality < 1, base width too small for a stage, ...).
  """
  if name not in _BUILDERS:
    raise ValueError(f'unknown model {name!r}; valid names: {", ".join(names())}')
  allowed = _allowed_keys(name)
  unknown = sorted(set(hyperparameters) - set(allowed))
  if unknown:
    raise ValueError(f'unknown hyperparameter(s) {", ".join(unknown)} for model {name!r}; '
                     f'allowed: {", ".join(allowed)}')
  try:
    return _BUILDERS[name](**hyperparameters)
  except TypeError as e:  # e.g. a wrong type deep in a dataclass: keep it one line
    raise ValueError(f'invalid hyperparameters for model {name!r}: {e}') from None
