"""Exact parameter and FLOP accounting of Flax modules, and closed forms for the paper's networks.

Module-derived counts (no weights are allocated; works at 88M parameters in well under a second
of tracing):

* :func:`count_params` runs ``jax.eval_shape(module.init, ...)`` and counts the ``params``
  collection (``batch_stats`` and other collections are reported separately).
* :func:`count_flops` traces ``module.apply`` with ``jax.make_jaxpr`` on abstract inputs and
  sums, over the equations of the jaxpr (sub-jaxprs included) that have a FLOP rule, 2 FLOPs per
  multiply-add. The built-in rules::

      conv_general_dilated:  2 * prod(out.shape) * prod(kernel.shape) / out_features
                             (kernel (kh, kw, in/G, out))
      dot_general:           2 * prod(out.shape) * prod(contracted lhs dims)

  Other primitives and custom calls register theirs with :func:`register_flop_rule` (the
  oneDNN convolutions of :mod:`ce_jax.models.native.onednn` do, when that module is imported).
  Elementwise work (BatchNorm, ReLU, adds, pooling) has no rule and is not counted, as is
  customary. FLOPs are for the inputs given: pass a batch of 1 for per-example FLOPs.

Closed forms (checked against the module-derived counts in ``tests/design/test_accounting.py``):

* :func:`bottleneck_path_flops`: FLOPs of ONE bottleneck path of width n (1x1 in->n at the input
  resolution, 3x3 n->n and 1x1 n->out at the output resolution)::

      flops = 2 (in n H W + 9 n^2 H' W' + n out H' W'),  H' = ceil(H / stride)

  For a stride-1 block it is ``2 H W beta(n)`` with beta of :mod:`ce_jax.design.blocks`.
* :func:`resnext_params` / :func:`resnext_flops`: whole ResNeXt networks for any (C, d); these
  are affine in the cardinality C at fixed d (``shared + C * per_path``), which the solver uses
  to choose the integer m on the full network.
* :func:`dense_params` / :func:`dense_flops`: dense member / ensemble with per-layer widths.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from ce_jax import _validate
from ce_jax.design import blocks
from ce_jax.models import resnext


class ParamCount(NamedTuple):
  """Parameter counts of a module (number of scalars).

  params: total of the 'params' collection (what the paper counts).
  batch_stats: total of the 'batch_stats' collection (BatchNorm running mean/var; not trained).
  other: totals of any other collections, by name.
  by_scope: 'params' per top-level submodule (e.g. 'stage1_block1'), insertion ordered.
  """
  params: int
  batch_stats: int
  other: dict
  by_scope: dict


class FlopCount(NamedTuple):
  """FLOPs (2 per multiply-add) of one application of a module to the given inputs.

  total: conv + dense FLOPs.  conv / dense: split by primitive.
  by_scope: FLOPs per module path (e.g. 'stage1_block1/conv2'), from the jaxpr name stacks.
  """
  total: int
  conv: int
  dense: int
  by_scope: dict


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
  return x


def _size(shape) -> int:
  return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def abstract_variables(module, *example_args, rng=None, **kwargs):
  """``jax.eval_shape`` of ``module.init``: the variable pytree as ShapeDtypeStructs (no memory)."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  args = tuple(_abstract(a) for a in example_args)
  return jax.eval_shape(lambda r, *a: module.init(r, *a, **kwargs), rng, *args)


def count_params(module, *example_args, variables=None, **kwargs) -> ParamCount:
  """Counts the variables of ``module`` for inputs like ``example_args`` without allocating them.

  Args:
    module: a flax.linen Module.
    *example_args: arrays or ``jax.ShapeDtypeStruct``s, as passed to ``module.init``.
    variables: the (abstract) variables if already at hand (skips ``eval_shape``).
    **kwargs: keyword arguments of ``__call__`` (e.g. ``train=False``).
  """
  if variables is None:
    variables = abstract_variables(module, *example_args, **kwargs)
  totals = {}
  for col, tree in variables.items():
    totals[col] = sum(_size(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
  by_scope = {}
  for scope, tree in variables.get('params', {}).items():
    by_scope[scope] = sum(_size(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
  other = {k: v for k, v in totals.items() if k not in ('params', 'batch_stats')}
  return ParamCount(int(totals.get('params', 0)), int(totals.get('batch_stats', 0)), other,
                    by_scope)


def _sub_jaxprs(eqn):
  for p in eqn.params.values():
    vals = p if isinstance(p, (tuple, list)) else (p,)
    for v in vals:
      if hasattr(v, 'eqns'):
        yield v
      elif hasattr(v, 'jaxpr') and hasattr(v.jaxpr, 'eqns'):
        yield v.jaxpr


# --------------------------------------------------------------------------------------------
# FLOP rules: (primitive name, custom-call target or None) -> (kind, rule).

FLOP_KINDS = ('conv', 'dense')
FlopRule = Callable[[Any], int]   # a jaxpr equation -> its FLOPs (2 per multiply-add)
_FLOP_RULES: dict[tuple[str, str | None], tuple[str, FlopRule]] = {}


def _eqn_target(eqn) -> str | None:
  """The call target of a custom-call equation (``ffi_call``'s ``target_name``), else None."""
  target = eqn.params.get('target_name')
  return target if isinstance(target, str) else None


def register_flop_rule(primitive: str, rule: FlopRule, *, target: str | None = None,
                       kind: str = 'conv') -> None:
  """Makes :func:`count_flops` / :func:`jaxpr_flops` count the equations of ``primitive``.

  Args:
    primitive: the jaxpr primitive's name (``eqn.primitive.name``), e.g. ``'ffi_call'``.
    rule: ``rule(eqn) -> int``, the FLOPs (2 per multiply-add) of one execution of the
      equation, from its avals (``eqn.invars[i].aval.shape``, ``eqn.outvars``) and ``params``.
    target: for custom calls, the call target (the equation's ``target_name`` parameter, e.g.
      ``'ce_onednn_conv_fwd'``): the rule counts only calls of that target. None: every equation
      of ``primitive`` without a rule for its own target.
    kind: which total of :class:`FlopCount` the FLOPs add to, ``'conv'`` or ``'dense'``.

  Registering the same ``(primitive, target)`` again replaces the rule.

  Raises:
    ValueError: an empty primitive or target, a rule that is not callable, an unknown kind.
  """
  if not isinstance(primitive, str) or not primitive:
    raise ValueError(f'primitive must be a primitive name (a non-empty string), got {primitive!r}')
  if target is not None and (not isinstance(target, str) or not target):
    raise ValueError(f'target must be None or a custom-call target name, got {target!r}')
  if not callable(rule):
    raise ValueError(f'rule must be a callable eqn -> FLOPs, got {type(rule).__name__}')
  _validate.choice('kind', kind, FLOP_KINDS)
  _FLOP_RULES[(primitive, target)] = (kind, rule)


def flop_rule(primitive: str, target: str | None = None) -> tuple[str, FlopRule] | None:
  """The ``(kind, rule)`` registered for ``(primitive, target)``, or None."""
  return _FLOP_RULES.get((primitive, target))


def flop_kind(eqn) -> str | None:
  """``'conv'`` / ``'dense'`` for an equation with a FLOP rule (by primitive and target), else None."""
  found = _rule_for(eqn)
  return None if found is None else found[0]


def _rule_for(eqn) -> tuple[str, FlopRule] | None:
  name = eqn.primitive.name
  target = _eqn_target(eqn)
  found = _FLOP_RULES.get((name, target)) if target is not None else None
  return found or _FLOP_RULES.get((name, None))


def _conv_flops(e) -> int:
  out = e.outvars[0].aval.shape
  rhs = e.invars[1].aval.shape
  out_feat = rhs[e.params['dimension_numbers'].rhs_spec[0]]
  return 2 * _size(out) * (_size(rhs) // out_feat)


def _dot_flops(e) -> int:
  (lc, _), _ = e.params['dimension_numbers']
  lhs = e.invars[0].aval.shape
  return 2 * _size(e.outvars[0].aval.shape) * _size([lhs[i] for i in lc])


register_flop_rule('conv_general_dilated', _conv_flops, kind='conv')
register_flop_rule('dot_general', _dot_flops, kind='dense')


def jaxpr_flops(jaxpr) -> FlopCount:
  """FLOPs of the equations of a (closed) jaxpr that have a FLOP rule, recursively.

  See :func:`register_flop_rule`; equations inside ``scan`` count ``length`` times.
  """
  totals = {k: 0 for k in FLOP_KINDS}
  by_scope = defaultdict(int)

  def walk(jx, mult=1, prefix=''):
    for e in jx.eqns:
      name = e.primitive.name
      stack = (prefix + str(e.source_info.name_stack)).rstrip('/')   # '' inside custom VJPs
      found = _rule_for(e)
      f = int(found[1](e)) if found else 0
      if f:
        totals[found[0]] += f * mult
        # Drop the top-level module's class name: 'ResNeXt/stage1_block1/conv2' -> 'stage1_...'.
        by_scope[stack.split('/', 1)[1] if '/' in stack else stack] += f * mult
      inner = mult * (e.params.get('length', 1) if name == 'scan' else 1)
      sub_prefix = (stack + '/') if stack else ''
      for sub in _sub_jaxprs(e):
        walk(sub, inner, sub_prefix)

  walk(jaxpr.jaxpr if hasattr(jaxpr, 'jaxpr') else jaxpr)
  return FlopCount(totals['conv'] + totals['dense'], totals['conv'], totals['dense'],
                   dict(by_scope))


def count_flops(module, *example_args, variables=None, **kwargs) -> FlopCount:
  """FLOPs (2 per multiply-add) of ``module.apply(variables, *example_args, **kwargs)``.

  Traced on abstract values (``jax.make_jaxpr``); nothing is allocated or run. Use a batch of 1
  for per-example FLOPs. ``variables``: the (abstract) variables if already at hand (e.g. from
  :func:`abstract_variables`), to skip a second ``eval_shape`` of ``init``.
  """
  args = tuple(_abstract(a) for a in example_args)
  if variables is None:
    variables = abstract_variables(module, *args, **kwargs)
  variables = jax.tree_util.tree_map(_abstract, variables)
  jaxpr = jax.make_jaxpr(lambda v, *a: module.apply(v, *a, **kwargs))(variables, *args)
  return jaxpr_flops(jaxpr)


# --------------------------------------------------------------------------------------------
# Closed forms.


def bottleneck_path_flops(n, in_channels: int = 256, out_channels: int = 256,
                          spatial: int | Sequence[int] = 32, stride: int = 1):
  """FLOPs of ONE bottleneck path of width ``n`` at input resolution ``spatial`` (vectorized in n).

  ``2 (in n H W + 9 n^2 H' W' + n out H' W')`` with ``H' = ceil(H / stride)``.
  """
  h, w = (spatial, spatial) if np.ndim(spatial) == 0 else tuple(spatial)
  ho, wo = -(-h // stride), -(-w // stride)
  return 2 * (in_channels * n * h * w + (9 * n * n + n * out_channels) * ho * wo)


class ResNeXtConfig(NamedTuple):
  """Static description of a ResNeXt network for the closed forms."""
  stage_sizes: tuple
  stage_outputs: tuple
  stem: str = 'cifar'
  stem_channels: int = 64


def resnext_config(name: str, stage_outputs=None, stem_channels: int = 64) -> ResNeXtConfig:
  """The :class:`ResNeXtConfig` of a registry name ('resnext29', ..., 'resnext101')."""
  _validate.choice('model', name, resnext.ARCHITECTURES)
  sizes, outputs, stem = resnext.ARCHITECTURES[name]
  if stage_outputs is not None:
    outputs = tuple(stage_outputs)
  return ResNeXtConfig(tuple(sizes), tuple(outputs), stem, stem_channels)


def _resnext_blocks(config: ResNeXtConfig, image_size: int):
  """Yields (stage, in, out, stride, input_spatial) per block, and the final spatial size."""
  s = image_size
  if config.stem == 'imagenet':
    s = -(-s // 2)
    s = -(-s // 2)
  c = config.stem_channels
  blocks = []
  for i, (num, out) in enumerate(zip(config.stage_sizes, config.stage_outputs)):
    for j in range(num):
      stride = 2 if (i > 0 and j == 0) else 1
      blocks.append((i, c, out, stride, s))
      s = -(-s // stride)
      c = out
  return blocks


def resnext_cost(config: ResNeXtConfig, cardinality, base_width: int, num_classes: int,
                 image_size: int = 32) -> dict:
  """Closed-form params, batch_stats and per-example FLOPs of a ResNeXt (numpy-vectorized in C).

  Returns a dict with 'params', 'batch_stats', 'flops' and per-stage 'stage_params',
  'stage_flops' (lists; the stem is stage 'stem', the classifier 'classifier').
  """
  C = np.asarray(cardinality)
  sc = config.stem_channels
  k = 3 if config.stem == 'cifar' else 7
  s0 = image_size if config.stem == 'cifar' else -(-image_size // 2)
  params = {'stem': k * k * 3 * sc + 2 * sc}
  flops = {'stem': 2 * k * k * 3 * sc * s0 * s0}
  stats = 2 * sc
  for (i, cin, out, stride, s) in _resnext_blocks(config, image_size):
    D = C * ((base_width * out) // 256)
    so = -(-s // stride)
    key = f'stage{i + 1}'
    p = cin * D + 9 * D * D // C + D * out + 2 * (2 * D + out)
    f = 2 * (cin * D * s * s + (9 * D * D // C + D * out) * so * so)
    stats = stats + 2 * (2 * D + out)
    if cin != out or stride != 1:
      p = p + cin * out + 2 * out
      f = f + 2 * cin * out * so * so
      stats = stats + 2 * out
    params[key] = params.get(key, 0) + p
    flops[key] = flops.get(key, 0) + f
  last = config.stage_outputs[-1]
  params['classifier'] = last * num_classes + num_classes
  flops['classifier'] = 2 * last * num_classes
  return {'params': sum(params.values()), 'batch_stats': stats, 'flops': sum(flops.values()),
          'stage_params': params, 'stage_flops': flops}


def resnext_params(name: str, cardinality, base_width: int, num_classes: int | None = None):
  """Closed-form parameter count of a registry ResNeXt (vectorized in ``cardinality``)."""
  config = resnext_config(name)
  num_classes = resnext.default_num_classes(name) if num_classes is None else num_classes
  _validate.positive_values('cardinality', cardinality)
  base_width = _validate.positive_int('base_width', base_width)
  num_classes = _validate.positive_int('num_classes', num_classes)
  return resnext_cost(config, cardinality, base_width, num_classes)['params']


def default_image_size(name: str) -> int:
  """Input resolution of each family: 32 (ResNeXt-29, WRN), 64 (ResNeXt-38), 224 (50/101)."""
  from ce_jax.models import registry  # pylint: disable=g-import-not-at-top
  _validate.choice('model', name, registry.names())
  return {'resnext29': 32, 'resnext38': 64, 'resnext50': 224, 'resnext101': 224}.get(name, 32)


def resnext_flops(name: str, cardinality, base_width: int, num_classes: int | None = None,
                  image_size: int | None = None):
  """Closed-form per-example FLOPs of a registry ResNeXt (vectorized in ``cardinality``)."""
  config = resnext_config(name)
  num_classes = resnext.default_num_classes(name) if num_classes is None else num_classes
  image_size = default_image_size(name) if image_size is None else image_size
  _validate.positive_values('cardinality', cardinality)
  base_width = _validate.positive_int('base_width', base_width)
  num_classes = _validate.positive_int('num_classes', num_classes)
  image_size = _validate.positive_int('image_size', image_size)
  return resnext_cost(config, cardinality, base_width, num_classes, image_size)['flops']


def dense_params(input_dim: int, widths: Sequence[int], num_outputs: int = 1, m: int = 1) -> int:
  """Parameters of a dense collegial ensemble of ``m`` members with hidden ``widths`` (no bias)."""
  m = _validate.positive_int('m', m)
  return m * blocks.dense_member_params(input_dim, widths, num_outputs)


def dense_flops(input_dim: int, widths: Sequence[int], num_outputs: int = 1, m: int = 1) -> int:
  """Per-example FLOPs of the dense ensemble: 2 per weight (each weight is one multiply-add)."""
  return 2 * dense_params(input_dim, widths, num_outputs, m)
