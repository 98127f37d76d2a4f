r"""Parameters and FLOPs of a registry model, per stage, without allocating its weights.

Examples:
  python experiments/model_info.py --model=resnext101 --cardinality=32 --base_width=8
  python experiments/model_info.py --model=resnext29 --cardinality=37 --base_width=10 \
      --num_classes=10 --json_out=/tmp/info.json
  python experiments/model_info.py --model=wrn --depth=36 --widen_factor=5 --image_size=64
  python experiments/model_info.py --model=dense --widths=48,48,48,48,48 --input_dim=748

Parameters come from ``jax.eval_shape(model.init)`` and FLOPs (2 per multiply-add of
convolutions and dense layers, one example) from the jaxpr of ``model.apply`` on abstract inputs
(``ce_jax.design.accounting``). JSON keys: model, params, flops (and hyperparameters, image_size,
batch_stats, stages).
"""

from __future__ import annotations

import logging
import re

from absl import flags

from ce_jax import _validate
from ce_jax.tools import cli
from ce_jax.design import accounting
from ce_jax.models import registry

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'registry name (see ce_jax.models.registry.names())')
flags.DEFINE_integer('cardinality', None, 'resnext*: cardinality C (default 1)')
flags.DEFINE_integer('base_width', None, 'resnext*: base width d (default 64)')
flags.DEFINE_integer('num_classes', None, 'classes (default 10 for resnext29, 1000 otherwise)')
flags.DEFINE_integer('depth', None, 'wrn: depth (default 28)')
flags.DEFINE_integer('widen_factor', None, 'wrn: widen factor k (default 10)')
flags.DEFINE_integer('image_size', None, 'input resolution (default 32; 64 for resnext38 and '
                     '4-stage wrn; 224 for resnext50/101)')
flags.DEFINE_list('widths', None, 'dense / dense_ensemble: hidden widths')
flags.DEFINE_integer('input_dim', None, 'dense / dense_ensemble: input dimension (default 748)')
flags.DEFINE_integer('num_outputs', None, 'dense / dense_ensemble: outputs (default 1)')
flags.DEFINE_integer('m', None, 'dense_ensemble: members')
flags.DEFINE_string('json_out', None, 'write results here (JSON)')

_FAMILY_FLAGS = {
    'resnext': ('cardinality', 'base_width', 'num_classes', 'image_size'),
    'wrn': ('depth', 'widen_factor', 'num_classes', 'image_size'),
    'dense': ('widths', 'input_dim', 'num_outputs'),
    'dense_ensemble': ('widths', 'input_dim', 'num_outputs', 'm'),
}
_ALL_FLAGS = ('cardinality', 'base_width', 'num_classes', 'depth', 'widen_factor', 'image_size',
              'widths', 'input_dim', 'num_outputs', 'm')


def _family(name: str) -> str:
  return 'resnext' if name.startswith('resnext') else name


def _given(flag: str, default):
  """``--flag``'s value, or ``default`` where it is not given."""
  value = FLAGS[flag].value
  return default if value is None else value


def build(name: str):
  """Returns (module, example input ShapeDtypeStruct, call kwargs, hyperparameters, image_size)."""
  import jax
  import jax.numpy as jnp
  if name not in registry.names():
    raise ValueError(f'unknown model {name!r}; valid names: {", ".join(registry.names())}')
  fam = _family(name)
  bad = [f'--{f}' for f in _ALL_FLAGS if FLAGS[f].value is not None and f not in _FAMILY_FLAGS[fam]]
  if bad:
    raise ValueError(f'conflicting flags: {", ".join(bad)} do not apply to --model={name}')
  if fam in ('dense', 'dense_ensemble'):
    if not FLAGS.widths:
      raise ValueError(f'--widths is required for --model={name}')
    hp = {'widths': _validate.int_list('widths', ','.join(FLAGS.widths)),
          'num_outputs': _given('num_outputs', 1)}
    if fam == 'dense_ensemble':
      hp['m'] = _given('m', 1)
    model = registry.get(name, **hp)
    input_dim = _validate.positive_int('input_dim', _given('input_dim', 748))
    return model, jax.ShapeDtypeStruct((1, input_dim), jnp.float32), {}, hp, None
  if fam == 'resnext':
    hp = {'cardinality': _given('cardinality', 1), 'base_width': _given('base_width', 64)}
    size = accounting.default_image_size(name)
  else:
    from ce_jax.models import wrn
    hp = {'depth': _given('depth', 28), 'widen_factor': _given('widen_factor', 10)}
    size = 32 if wrn.wrn_stages(hp['depth'])[0] == 3 else 64
  if FLAGS.num_classes is not None:
    hp['num_classes'] = FLAGS.num_classes
  model = registry.get(name, **hp)
  size = _validate.positive_int('image_size', _given('image_size', size))
  return model, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32), {'train': False}, hp, size


def _group(scope: str) -> str:
  top = scope.split('/')[0]
  if top.startswith('stem'):
    return 'stem'
  return re.sub(r'_block\d+$', '', top)


def main(argv):
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  del argv  # positional arguments are a usage error (cli.run_main)
  if not FLAGS.model:
    raise ValueError(f'--model is required; valid names: {", ".join(registry.names())}')
  model, x, kw, hp, size = build(FLAGS.model)
  variables = accounting.abstract_variables(model, x, **kw)  # shapes only, nothing allocated
  pc = accounting.count_params(model, x, variables=variables, **kw)
  fc = accounting.count_flops(model, x, variables=variables, **kw)
  stages = {}
  for scope, p in pc.by_scope.items():
    stages.setdefault(_group(scope), {'params': 0, 'flops': 0})['params'] += p
  for scope, f in fc.by_scope.items():
    g = _group(scope)
    stages.setdefault(g if g in stages else '(unscoped)', {'params': 0, 'flops': 0})['flops'] += f
  def order(item):
    k = item[0]
    if k == 'stem':
      return (0, 0, k)
    m = re.match(r'(stage|layer_)(\d+)$', k)
    return (1, int(m.group(2)), k) if m else (2, 0, k)
  stages = dict(sorted(stages.items(), key=order))
  desc = ', '.join(f'{k}={v}' for k, v in hp.items())
  print(f'{FLAGS.model} ({desc}), input {tuple(x.shape)}')
  print(f'{"stage":<14} {"params":>14} {"MFLOPs":>12}')
  for name, s in stages.items():
    print(f'{name:<14} {s["params"]:>14,d} {s["flops"] / 1e6:>12.2f}')
  print(f'{"total":<14} {pc.params:>14,d} {fc.total / 1e6:>12.2f}')
  print(f'params {pc.params / 1e6:.2f}M (+ {pc.batch_stats:,d} batch_stats), '
        + (f'{fc.total / 1e9:.3f} GFLOPs per example' if fc.total >= 1e8
         else f'{fc.total / 1e6:.3f} MFLOPs per example'))
  cli.write_json(FLAGS.json_out, {
      'model': FLAGS.model, 'params': pc.params, 'flops': fc.total,
      'hyperparameters': {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
      'image_size': size, 'batch_stats': pc.batch_stats, 'stages': stages})


if __name__ == '__main__':
  cli.run_main(main)
