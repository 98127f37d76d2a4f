"""float32 accuracy of BatchNorm in training mode: ce_jax vs torch, each against float64.

The same random weights and random BatchNorm statistics (scale, bias, running mean and
variance) are loaded into a ce_jax ResNeXt and into the same architecture in torch
(``ce_jax.tools.benchmarking.torch_resnext``). Each framework computes the logits in float32 and in
float64; the error of a float32 run is ``max |y32 - y64| / max |y64|`` against its own
framework's float64 logits, in training mode (batch statistics: the one-pass variance
``E[x^2] - E[x]^2`` cancels after a ReLU, where the mean is large against the spread) and in
eval mode (running statistics). The two float64 computations must agree (``f64_agreement``,
about 1e-12): that checks the models and the weights are the same. ``ratio = ce_jax error /
torch error`` (target: at most 3 in training mode).

ce_jax variants: ``fast`` (the default layers: ``GroupedConv`` + ``FastBatchNorm``, shifted
one-pass variance) and ``stock`` (``nn.Conv`` + ``nn.BatchNorm(use_fast_variance=False)``, the
models' stock option).

  python experiments/benchmark_bn_accuracy.py --json_out=/tmp/bn_accuracy.json
  python experiments/benchmark_bn_accuracy.py --quick      # tiny models (tests)
"""

from __future__ import annotations

from absl import flags
from absl import logging
import jax
import numpy as np

from ce_jax import _validate
from ce_jax.tools import benchmarking
from ce_jax.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_list('models', ['resnext29:8x64d', 'resnext50:32x4d'],
                  'NAME:CARDINALITYxBASE_WIDTHd ResNeXt models')
flags.DEFINE_integer('batch', 8, 'images per batch')
flags.DEFINE_bool('no_torch', False, 'skip torch (the ce_jax errors only)')
flags.DEFINE_integer('seed', 0, 'PRNG seed of the weights, statistics and images')
cli.define_benchmark_flags('resnext29 2x16d with stage outputs 16,32,64 and stem 8, batch 4, '
                           '8x8 images')

IMAGE_SIZE = {'resnext29': 32, 'resnext38': 32, 'resnext50': 64, 'resnext101': 64}
VARIANTS = ('fast', 'stock')


def parse_model(text: str):
  """``'resnext50:32x4d'`` -> ``('resnext50', 32, 4)`` (one-line ValueError otherwise)."""
  from ce_jax.models import resnext  # pylint: disable=g-import-not-at-top
  name, _, design = text.partition(':')
  bits = design.lower().rstrip('d').split('x')
  if len(bits) != 2 or not all(b.isdigit() for b in bits):
    raise ValueError(f'models must look like resnext50:32x4d, got {text!r}')
  _validate.choice('models', name, tuple(resnext.ARCHITECTURES))
  return name, int(bits[0]), int(bits[1])


def randomize_statistics(variables, key):
  """BatchNorm scale ~ U(0.5, 1.5), bias ~ N(0, 0.2), running mean ~ N(0, 0.5), var ~ U(0.5, 2)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    names = [getattr(p, 'key', '') for p in path]
    k = jax.random.fold_in(key, i)
    if not any('bn' in n for n in names):
      out.append(leaf)
    elif names[-1] == 'scale':
      out.append(jax.random.uniform(k, leaf.shape, leaf.dtype, 0.5, 1.5))
    elif names[-1] == 'bias':
      out.append(0.2 * jax.random.normal(k, leaf.shape, leaf.dtype))
    elif names[-1] == 'mean':
      out.append(0.5 * jax.random.normal(k, leaf.shape, leaf.dtype))
    else:
      out.append(jax.random.uniform(k, leaf.shape, leaf.dtype, 0.5, 2.0))
  return jax.tree_util.tree_unflatten(treedef, out)


def _rel(a, ref):
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(a - ref)) / max(1e-300, np.max(np.abs(ref))))


def measure(name, cardinality, base_width, batch, size, key, torch, stage_outputs=None,
            stem_channels=64):
  """Errors of one model: ``{variant: {mode: error}}`` for ce_jax and torch, and checks."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ce_jax.models import resnext  # pylint: disable=g-import-not-at-top
  num_classes = resnext.default_num_classes(name)
  kw = dict(cardinality=cardinality, base_width=base_width, num_classes=num_classes,
            stage_outputs=stage_outputs, stem_channels=stem_channels)
  x = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (batch, size, size, 3)))
  model64 = resnext.resnext(name, dtype=jnp.float64, layers='stock', **kw)
  v = model64.init(jax.random.fold_in(key, 2), jnp.asarray(x, jnp.float64), train=False)
  v = randomize_statistics(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v),
                           jax.random.fold_in(key, 3))

  def logits(model, variables, xx, train):
    # The classifier's own output (the model casts its result to float32).
    _, inter = model.apply(variables, xx, train=train, mutable=['batch_stats', 'intermediates'],
                           capture_intermediates=lambda mdl, _: mdl.name == 'classifier')
    return np.asarray(inter['intermediates']['classifier']['__call__'][0], np.float64)

  ref = {mode: logits(model64, v, jnp.asarray(x, jnp.float64), mode == 'train')
         for mode in ('train', 'eval')}
  v32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), v)
  res = {'model': f'{name} {cardinality}x{base_width}d', 'batch': batch, 'image_size': size,
         'params': int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(v['params'])))}
  for variant in VARIANTS:
    m32 = resnext.resnext(name, layers=variant, **kw)
    res[f'ce_jax_{variant}'] = {mode: _rel(logits(m32, v32, jnp.asarray(x, jnp.float32),
                                                   mode == 'train'), ref[mode])
                                for mode in ('train', 'eval')}
  if torch is not None:
    net = benchmarking.torch_resnext(torch, name, cardinality, base_width, num_classes,
                                     stage_outputs, stem_channels)
    tx = torch.tensor(x.transpose(0, 3, 1, 2))
    out = {}
    for dt in (torch.float64, torch.float32):
      net = net.to(dt)
      for mode in ('train', 'eval'):   # fresh weights: a train-mode pass moves running stats
        net.load_state_dict(benchmarking.torch_state_from_flax(torch, net, v, dt))
        net.train(mode == 'train')
        with torch.no_grad():
          out[(dt, mode)] = net(tx.to(dt)).double().numpy()
    res['torch'] = {mode: _rel(out[(torch.float32, mode)], out[(torch.float64, mode)])
                    for mode in ('train', 'eval')}
    res['f64_agreement'] = max(_rel(out[(torch.float64, mode)], ref[mode])
                               for mode in ('train', 'eval'))
    if not res['f64_agreement'] < 1e-9:
      raise AssertionError(f'{res["model"]}: the float64 logits of ce_jax and torch differ by '
                           f'{res["f64_agreement"]:.1e}: not the same model or weights')
    for variant in VARIANTS:
      res[f'ratio_{variant}'] = {mode: res[f'ce_jax_{variant}'][mode] / res['torch'][mode]
                                 for mode in ('train', 'eval')}
  return res


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  models = [parse_model(m.strip()) for m in FLAGS.models if m.strip()]
  if not models:
    raise ValueError('models must name at least one model like resnext50:32x4d, got []')
  batch = _validate.positive_int('batch', FLAGS.batch, minimum=2)
  jax.config.update('jax_enable_x64', True)
  torch = None if FLAGS.no_torch else benchmarking.import_torch()
  key = jax.random.PRNGKey(FLAGS.seed)
  extra = {}
  if FLAGS.quick:
    models, batch, extra = [('resnext29', 2, 16)], 4, {'stage_outputs': (16, 32, 64),
                                                      'stem_channels': 8}
  results = []
  for name, card, width in models:
    size = 8 if FLAGS.quick else IMAGE_SIZE[name]
    logging.info('%s %dx%dd: batch %d, %dx%d', name, card, width, batch, size, size)
    results.append(measure(name, card, width, batch, size, key, torch, **extra))
  print('float32 logits vs float64 (max abs error / max abs logit), same weights and random '
        'BatchNorm statistics')
  print(f'{"model":<20} {"mode":<6} {"ce_jax fast":>12} {"ce_jax stock":>13} {"torch":>10} '
        f'{"ratio fast":>11} {"ratio stock":>12} {"f64 agree":>10}')
  for r in results:
    for mode in ('train', 'eval'):
      line = (f'{r["model"]:<20} {mode:<6} {r["ce_jax_fast"][mode]:12.2e} '
              f'{r["ce_jax_stock"][mode]:13.2e} ')
      if 'torch' in r:
        line += (f'{r["torch"][mode]:10.2e} {r["ratio_fast"][mode]:11.2f} '
                 f'{r["ratio_stock"][mode]:12.2f} {r["f64_agreement"]:10.1e}')
      print(line)
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'BatchNorm float32 accuracy vs float64: ce_jax and torch',
      'settings': {'models': [f'{n}:{c}x{w}d' for n, c, w in models], 'batch': batch,
                   'seed': FLAGS.seed, 'quick': FLAGS.quick},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(torch),
      'models': results})


if __name__ == '__main__':
  cli.run_main(main)
