r"""Primal/dual Collegial Ensemble search from a baseline (paper Sec. 3-4.2, Algorithm 2).

Examples:
  # Fig. 3 of the paper (dense, alpha 3.65): primal 30x48, dual 12x48
  python experiments/search.py --baseline=dense --depth=6 --width=500 --input_dim=748 \
      --alpha=3.65 --json_out=/tmp/search.json --plot_out=/tmp/fig3.png
  # ResNeXt-29 1x128d, alpha from a fit (experiments/fit_alpha.py): primal 37x10d
  python experiments/search.py --baseline=resnext29 --cardinality=1 --base_width=128 \
      --alpha_from=/tmp/alpha.json
  # FLOPs efficiency (appendix Sec. 3)
  python experiments/search.py --baseline=resnext29 --base_width=128 --alpha=1.6 \
      --efficiency=flops

JSON: baseline {name, params, flops}, alpha, alpha_stderr, alpha_interval, efficiency, primal /
dual {n, m, m_int, params, flops, rho, variance_ratio, label, n_interval, m_interval},
strong_duality, curves {n, primal_objective, dual_m, dual_rho}. With alpha's standard error
(``--alpha_from`` of a fit, or ``--alpha_stderr``) the intervals are the optimal n and integer
m across alpha's 95% interval. See docs/SEARCH.md.

The default chain gives the paper's designs:
  python experiments/fit_alpha.py --block=bottleneck --trials=1000 --json_out=a.json
  python experiments/search.py --baseline=resnext29 --base_width=128 --alpha_from=a.json  # 37x10d
  python experiments/search.py --baseline=resnext50 --base_width=64 --alpha_from=a.json   # 12x10d
"""

from __future__ import annotations

import logging

from absl import flags

from ce_jax import _validate
from ce_jax.design import solver
from ce_jax.tools import cli
from ce_jax.studies import plotting

FLAGS = flags.FLAGS
flags.DEFINE_string('baseline', 'dense', f'baseline: {"|".join(solver.BASELINES)}')
flags.DEFINE_integer('depth', 6, 'dense: number of weight matrices of the baseline member')
flags.DEFINE_integer('width', 500, 'dense: hidden width of the baseline member')
flags.DEFINE_list('widths', None, 'dense: heterogeneous hidden widths of the baseline member '
                  '(instead of --depth/--width); candidates scale this profile')
flags.DEFINE_integer('input_dim', 748, 'dense: input dimension n_0')
flags.DEFINE_integer('num_outputs', 1, 'dense: outputs of the member')
flags.DEFINE_integer('cardinality', 1, 'convolutional baseline: cardinality C')
flags.DEFINE_integer('base_width', None, 'convolutional baseline: base width d '
                     '(default 128 for resnext29/38, 64 for resnext50/101)')
flags.DEFINE_integer('num_classes', None, 'convolutional baseline: classes (default 10 for '
                     'resnext29, 1000 otherwise)')
flags.DEFINE_integer('image_size', None, 'convolutional baseline: input resolution for FLOPs '
                     '(default 32 / 64 / 224)')
flags.DEFINE_float('alpha', None, 'variance exponent alpha (Assumption 1)')
flags.DEFINE_float('alpha_stderr', None, 'with --alpha: its standard error (n/m intervals)')
flags.DEFINE_string('alpha_from', None, 'JSON of experiments/fit_alpha.py or design.py (keys '
                    '"alpha", "alpha_stderr")')
flags.DEFINE_string('efficiency', 'params', 'params|flops')
flags.DEFINE_string('fan_in_convention', 'channels', 'bottleneck S(n): channels|kernel')
flags.DEFINE_string('cost_model', 'block', 'convolutional per-path cost: block (Algorithm 2, '
                    'one canonical bottleneck) | network (per path of the whole network)')
flags.DEFINE_integer('max_width', None, 'search widths 1..max_width (default 1024 dense, '
                     '256 convolutional)')
flags.DEFINE_string('json_out', None, 'write results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write the two-panel Fig. 3 plot here (PNG/PDF)')

_DENSE_FLAGS = ('depth', 'width', 'widths', 'input_dim', 'num_outputs')
_CONV_FLAGS = ('cardinality', 'base_width', 'num_classes', 'image_size', 'fan_in_convention',
               'cost_model')


def _present(name):
  return FLAGS[name].present


def resolve_alpha() -> tuple:
  """(alpha, its standard error or None, intercept, Cov(intercept, alpha))."""
  if FLAGS.alpha_stderr is not None and FLAGS.alpha is None:
    raise ValueError('--alpha_stderr needs --alpha')
  if FLAGS.alpha is not None and FLAGS.alpha_from:
    raise ValueError('conflicting flags: give --alpha or --alpha_from, not both')
  if FLAGS.alpha is None and not FLAGS.alpha_from:
    raise ValueError('one of --alpha or --alpha_from is required')
  if FLAGS.alpha_from:
    from ce_jax.theory import alpha as alpha_lib  # pylint: disable=g-import-not-at-top
    return tuple(alpha_lib.load_fit(FLAGS.alpha_from, '--alpha_from', FLAGS.fan_in_convention))
  se = FLAGS.alpha_stderr
  if se is not None and not (se >= 0 and se < float('inf')):
    raise ValueError(f'--alpha_stderr must be a finite number >= 0, got {se!r}')
  return _validate.finite_positive('alpha', FLAGS.alpha), se, 0.0, 0.0


def build_problem() -> solver.Problem:
  baseline = _validate.choice('baseline', FLAGS.baseline, solver.BASELINES)
  if baseline == 'dense':
    bad = [f'--{n}' for n in _CONV_FLAGS if _present(n)]
    if bad:
      raise ValueError(f'conflicting flags: {", ".join(bad)} do not apply to --baseline=dense')
    if FLAGS.widths and (_present('depth') or _present('width')):
      raise ValueError('conflicting flags: give --widths or --depth/--width, not both')
    max_width = 1024 if FLAGS.max_width is None else FLAGS.max_width
    if FLAGS.widths:
      return solver.dense_problem(widths=','.join(FLAGS.widths), input_dim=FLAGS.input_dim,
                                  num_outputs=FLAGS.num_outputs, efficiency=FLAGS.efficiency,
                                  max_width=max_width)
    return solver.dense_problem(depth=FLAGS.depth, width=FLAGS.width, input_dim=FLAGS.input_dim,
                                num_outputs=FLAGS.num_outputs, efficiency=FLAGS.efficiency,
                                max_width=max_width)
  bad = [f'--{n}' for n in _DENSE_FLAGS if _present(n)]
  if bad:
    raise ValueError(f'conflicting flags: {", ".join(bad)} apply to --baseline=dense only, '
                     f'not {baseline}')
  base_width = FLAGS.base_width
  if base_width is None:
    base_width = 128 if baseline in ('resnext29', 'resnext38') else 64
  return solver.resnext_problem(baseline, cardinality=FLAGS.cardinality, base_width=base_width,
                                num_classes=FLAGS.num_classes, efficiency=FLAGS.efficiency,
                                fan_in_convention=FLAGS.fan_in_convention,
                                max_width=256 if FLAGS.max_width is None else FLAGS.max_width,
                                image_size=FLAGS.image_size, cost_model=FLAGS.cost_model)


def main(argv):
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  del argv  # positional arguments are a usage error (cli.run_main)
  alpha, alpha_stderr, intercept, covariance = resolve_alpha()
  result = solver.solve(build_problem(), alpha, alpha_stderr, intercept=intercept,
                        covariance=covariance)
  print(solver.format_result(result))
  cli.write_json(FLAGS.json_out, solver.result_to_json(result))
  if FLAGS.plot_out:
    plotting.plot_search(result, FLAGS.plot_out)
    print(f'plot: {FLAGS.plot_out}')


if __name__ == '__main__':
  cli.run_main(main)
