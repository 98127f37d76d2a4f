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

JSON: baseline {name, params, flops}, alpha, efficiency, primal / dual {n, m, m_int, params,
flops, rho, variance_ratio, label}, strong_duality, curves {n, primal_objective, dual_m,
dual_rho}. See docs/SEARCH.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from ce_jax import _validate, cli, solver  # noqa: E402

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
flags.DEFINE_string('alpha_from', None, 'JSON of experiments/fit_alpha.py (key "alpha")')
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


def resolve_alpha() -> float:
  if FLAGS.alpha is not None and FLAGS.alpha_from:
    raise ValueError('conflicting flags: give --alpha or --alpha_from, not both')
  if FLAGS.alpha is None and not FLAGS.alpha_from:
    raise ValueError('one of --alpha or --alpha_from is required')
  if FLAGS.alpha_from:
    try:
      with open(FLAGS.alpha_from) as f:
        payload = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f'cannot read --alpha_from {FLAGS.alpha_from!r}: '
                       f'{str(e).splitlines()[0]}') from None
    if not isinstance(payload, dict) or 'alpha' not in payload:
      raise ValueError(f'--alpha_from {FLAGS.alpha_from!r} has no key "alpha"')
    return _validate.finite_positive('alpha (from --alpha_from)', payload['alpha'])
  return _validate.finite_positive('alpha', FLAGS.alpha)


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


def _design_json(d: solver.Design) -> dict:
  return {'n': d.n, 'm': d.m, 'm_int': d.m_int, 'params': d.params, 'flops': d.flops,
          'rho': d.rho, 'variance_ratio': d.variance_ratio, 'label': d.label,
          'widths': list(d.widths)}


def result_json(r: solver.SearchResult) -> dict:
  return {
      'baseline': {'name': r.baseline.name, 'params': r.baseline.params,
                   'flops': r.baseline.flops, 'label': r.baseline.label,
                   'widths': list(r.baseline.widths)},
      'alpha': r.alpha,
      'efficiency': r.efficiency,
      'fan_in_convention': r.fan_in_convention,
      'primal': _design_json(r.primal),
      'dual': _design_json(r.dual),
      'strong_duality': r.strong_duality,
      'curves': {'n': r.curves.n, 'primal_objective': r.curves.primal_objective,
                 'primal_m': r.curves.primal_m, 'dual_m': r.curves.dual_m,
                 'dual_rho': r.curves.dual_rho},
  }


def format_table(r: solver.SearchResult) -> str:
  b = r.baseline
  conv = f', fan-in convention {r.fan_in_convention}' if r.fan_in_convention else ''
  lines = [f'baseline {b.name} {b.label}: {b.params / 1e6:.2f}M params, '
           f'{b.flops / 1e9:.3f} GFLOPs; alpha {r.alpha:.4g}; efficiency {r.efficiency}{conv}',
           f'{"design":<7} {"n":>5} {"m (real)":>9} {"m_int":>6} {"label":>14} {"params":>9} '
           f'{"GFLOPs":>8} {"rho":>6} {"rho@curve":>9} {"Var(K_e)/Var(K_s)":>18}']
  for name, d in (('primal', r.primal), ('dual', r.dual)):
    i = int(list(r.curves.n).index(d.n)) if d.n in list(r.curves.n) else None
    rc = (r.curves.primal_m[i] / r.curves.dual_m[i] if name == 'dual' else 1.0) if i is not None \
        else float('nan')
    lines.append(f'{name:<7} {d.n:>5} {d.m:>9.2f} {d.m_int:>6} {d.label:>14} '
                 f'{d.params / 1e6:>8.2f}M {d.flops / 1e9:>8.3f} {d.rho:>6.2f} {rc:>9.2f} '
                 f'{d.variance_ratio:>18.3f}')
  lines.append(f'strong duality (n_d == n_p): {"yes" if r.strong_duality else "no"}')
  return '\n'.join(lines)


def plot(r: solver.SearchResult, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  cli.ensure_parent(path)
  c = r.curves
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  ax1.loglog(c.n, c.primal_objective, color='C0', label='(exp(alpha S) - 1) / m_p')
  ax1.plot([r.primal.n], [c.primal_objective[list(c.n).index(r.primal.n)]], 'r*', ms=14,
           label=f'primal optimum n={r.primal.n}, m={r.primal.m:.1f} ({r.primal.label})')
  ax1.set_xlabel('width n')
  ax1.set_ylabel('primal objective (Var / C)')
  t1 = ax1.twinx()
  t1.loglog(c.n, c.primal_m, color='C1', alpha=0.6)
  t1.set_ylabel('m_p(n)', color='C1')
  ax1.set_zorder(t1.get_zorder() + 1)
  ax1.patch.set_visible(False)
  ax1.legend(loc='upper right', fontsize=8)
  ax1.set_title('(a) primal: same budget, minimal variance')
  ax2.semilogx(c.n, c.dual_rho, color='C0', label='rho(m_d(n), n)')
  i = list(c.n).index(r.dual.n)
  ax2.plot([r.dual.n], [c.dual_rho[i]], 'r*', ms=14,
           label=f'dual optimum n={r.dual.n}, m={r.dual.m:.1f}, rho={c.dual_rho[i]:.2f}')
  ax2.set_xlabel('width n')
  ax2.set_ylabel(f'efficiency rho ({r.efficiency})')
  t2 = ax2.twinx()
  t2.loglog(c.n, c.dual_m, color='C1', alpha=0.6)
  t2.set_ylabel('m_d(n)', color='C1')
  ax2.set_zorder(t2.get_zorder() + 1)
  ax2.patch.set_visible(False)
  ax2.legend(loc='lower center', fontsize=8)
  ax2.set_title('(b) dual: same variance, maximal efficiency')
  fig.suptitle(f'{r.baseline.name} {r.baseline.label}, alpha={r.alpha:.3g}')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  alpha = resolve_alpha()
  result = solver.solve(build_problem(), alpha)
  print(format_table(result))
  cli.write_json(FLAGS.json_out, result_json(result))
  if FLAGS.plot_out:
    plot(result, FLAGS.plot_out)
    print(f'plot: {FLAGS.plot_out}')


if __name__ == '__main__':
  cli.run_main(main)
