"""Writes the notebooks of this folder from the cell lists below (outputs stripped).

    .venv/bin/python notebooks/make_notebooks.py

The notebooks call the library only; tests/test_notebooks.py executes every one of them.
"""

import os

import nbformat
from nbformat import v4

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Colab set-up: installs ce_jax unless it is already importable (as in its repository's .venv).
# Set CE_JAX_SOURCE to a pip requirement for ce_jax: the repository's git URL or a local path.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec('ce_jax') is None:
  subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q',
                         os.environ.get('CE_JAX_SOURCE', 'git+https://github.com/ce-jax/ce_jax')])
'''

COMMON = '''\
import os, tempfile
import jax
import numpy as np
from IPython.display import Image, display
OUT = tempfile.mkdtemp(prefix='ce_jax_nb_')  # figures are written here and shown inline

def show(path):
  display(Image(filename=path))
'''

NOTEBOOKS = {}

NOTEBOOKS['01_ensemble_ntk'] = [
    ('md', '''\
# 01 · The ensemble NTK converges to the Neural Mean Kernel (paper Fig. 2)

A collegial ensemble of m members aggregates their outputs with 1/sqrt(m). Its NTK is the mean
of the members' NTKs (Eq. 4), so it converges to the **Neural Mean Kernel**
NMK = E_theta[K(theta)] (Eq. 5) as m grows, and the NMK is close to the infinite-width NTK.
Small settings (width 64, a few hundred initializations) run in about a minute on 2 CPU cores;
the paper's setting is `width=1000, nmk_samples=1000`.'''),
    ('code', INSTALL),
    ('code', COMMON + '''\
from ce_jax import ntk, plotting, variance
from ce_jax.models.dense import DenseEnsemble, DenseMember, unstack_member_params
'''),
    ('md', '''\
**Eq. 4 as an identity.** The NTK of the aggregated model over its concatenated parameters equals
the mean of the member NTKs (computed with `jax.vmap` over stacked members).'''),
    ('code', '''\
m, widths = 8, (32, 32, 32)
x = jax.random.normal(jax.random.PRNGKey(0), (12, 2))
ensemble = DenseEnsemble(m=m, widths=widths)
params = ensemble.init(jax.random.PRNGKey(1), x)
k_aggregated = ntk.empirical_ntk_fn(ensemble.apply)(x, x, params)

# The ensemble's parameter tree IS the members' trees stacked on a leading axis of size m.
member = DenseMember(widths)
k_mean = ntk.ensemble_ntk_fn(member.apply)(x, x, params)
k_loop = np.mean([ntk.empirical_ntk_fn(member.apply)(x, x, p)
                  for p in unstack_member_params(params)], axis=0)
assert np.allclose(k_mean, k_loop, rtol=1e-4, atol=1e-4)
print('max |K_aggregated - mean_j K_j| =', float(np.max(np.abs(k_aggregated - k_mean))))
assert np.allclose(k_aggregated, k_mean, rtol=1e-4, atol=1e-4)
'''),
    ('md', '''\
**Fig. 2.** K(x_0, x_gamma) with x_0 = (1, 0) and x_gamma = (cos gamma, sin gamma) for ensembles
of growing m, against the Monte-Carlo NMK (+- 2 standard errors) and the infinite-width NTK.'''),
    ('code', '''\
conv = variance.ntk_convergence(jax.random.PRNGKey(0), depth=4, width=64,
                                multiplicities=(1, 4, 16, 64), num_angles=41, nmk_samples=256)
for m, k in conv.ensemble_ntk.items():
  print(f'm = {m:>3}: rms(K_e - NMK) = {np.sqrt(np.mean((k - conv.nmk) ** 2)):.4f}')
print(f'NMK vs infinite width: rms {np.sqrt(np.mean((conv.nmk - conv.infinite_ntk) ** 2)):.4f} '
      f'(mean standard error {conv.nmk_stderr.mean():.4f})')
path = os.path.join(OUT, 'fig2.png')
plotting.plot_ntk_convergence(conv, path)
show(path)
'''),
    ('code', '''\
# K_e with many members is much closer to the NMK than a single member is.
rms = {m: np.sqrt(np.mean((k - conv.nmk) ** 2)) for m, k in conv.ensemble_ntk.items()}
assert rms['16'] < 0.5 * rms['1'], rms
'''),
]

NOTEBOOKS['02_alpha_and_search'] = [
    ('md', '''\
# 02 · Fitting alpha and deriving ResNeXt from ResNet without training (Algorithm 1, Fig. 3)

1. **Algorithm 1**: by Monte Carlo over random initializations, the normalized second moment
   of a diagonal NTK entry follows E[K^2]/E[K]^2 = exp(alpha S), where S is the fan-in sum.
   A weighted log-linear fit gives alpha (appendix Fig. 2; paper: 1.60 for the ResNet bottleneck,
   see `docs/ALPHA.md` for ours).
2. **Algorithm 2**: with alpha and exact parameter counts, the primal problem (smoothest
   ensemble at the baseline's budget) and the dual (smallest ensemble as smooth as the baseline)
   give ResNeXt-29 37x10d / 12x10d from 1x128d, and ResNet-50 -> ResNeXt-50 12x10d.'''),
    ('code', INSTALL),
    ('code', COMMON + '''\
from ce_jax import accounting, alpha, models, plotting, solver
'''),
    ('md', '**Algorithm 1 on the bottleneck block** (256 -> n -> n -> 256; few trials: a quick look).'),
    ('code', '''\
est = alpha.estimate_alpha('bottleneck', widths=(4, 8, 16, 32, 64), trials=64,
                           key=jax.random.PRNGKey(0))
for p in est.points:
  print(f'n = {p.width:>3}  S = {p.fan_in_sum:.4f}  E[K^2]/E[K]^2 = {p.ratio:.4f} +- {p.ratio_stderr:.4f}')
print(f'alpha = {est.fit.alpha:.2f} +- {est.fit.alpha_stderr:.2f} (R^2 {est.fit.r2:.3f}); paper: 1.60')
path = os.path.join(OUT, 'alpha.png')
plotting.plot_alpha_fit(est, path)
show(path)
assert 0.3 < est.fit.alpha < 4.0
'''),
    ('md', '**Fig. 3: the dense baseline** (depth 6, width 500, 748 inputs, alpha 3.65).'),
    ('code', '''\
fig3 = solver.search('dense', alpha=3.65, depth=6, width=500, input_dim=748)
print(solver.format_result(fig3))
path = os.path.join(OUT, 'fig3.png')
plotting.plot_search(fig3, path)
show(path)
assert fig3.primal.n == 48 and abs(fig3.primal.m - 30.4) < 0.1 and abs(fig3.dual.m - 12.4) < 0.1
'''),
    ('md', '''\
**ResNeXt-29 from 1x128d and ResNeXt-50 from ResNet-50** (alpha 1.6). The integer m is chosen
on the whole network: the primal m has the parameter count closest to the baseline's.'''),
    ('code', '''\
r29 = solver.search('resnext29', alpha=1.6, cardinality=1, base_width=128)
r50 = solver.search('resnext50', alpha=1.6, cardinality=1, base_width=64)
print(solver.format_result(r29)); print()
print(solver.format_result(r50))
assert r29.primal.label == '37x10d' and r29.dual.n == 10 and r50.primal.label == '12x10d'
'''),
    ('md', 'The derived designs are real Flax models; their sizes are counted with `jax.eval_shape` (no memory).'),
    ('code', '''\
for c, d in ((1, 128), (37, 10), (r29.dual.m_int, 10)):
  model = models.get('resnext29', cardinality=c, base_width=d, num_classes=10)
  count = accounting.count_params(model, jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  print(f'ResNeXt-29 {c}x{d}d: {count.params / 1e6:.2f}M parameters')
'''),
]

NOTEBOOKS['03_ablation'] = [
    ('md', '''\
# 03 · Capacity or kernel variance? The Fig. 4 ablation (small)

Dense collegial ensembles on scikit-learn's handwritten digits (real data, offline). Along the
**primal curve** every design has the baseline's parameter count and Var(K_e) varies; along the
**dual curve** every design has the baseline's Var(K) and the parameter count varies. The paper
(MNIST, 100 repetitions, 70 epochs) finds that test error tracks Var(K), not parameters. Here
every design trains R repetitions at once: `jax.vmap` over seeds inside one compiled program.
Tiny settings (baseline width 64, 3 repetitions, 3 epochs); `experiments/ablation.py` runs the
real ones and `docs/ABLATION.md` reports them.'''),
    ('code', INSTALL),
    ('code', COMMON + '''\
from ce_jax import ablation
'''),
    ('code', '''\
data = ablation.load_dataset('digits')
base, depth, alpha = 64, 6, 3.65
primal = ablation.primal_designs([8, 16, 32, 64], baseline_width=base, depth=depth, alpha=alpha)
dual = ablation.dual_designs([1, 3, 9], baseline_width=base, depth=depth, alpha=alpha)
for d in primal + dual:
  print(f'm = {d.m:>3}  n = {d.n:>3}  params = {d.params:>7,}  Var(K_e)/Var(K_s) = {d.variance_ratio:.3f}')
# The primal designs spend the baseline's budget (within one member).
assert all(abs(d.params - primal[-1].params) <= d.params / d.m for d in primal)
'''),
    ('code', '''\
result = ablation.run_ablation(data, primal, dual, depth=depth, repetitions=3, epochs=3,
                               progress=None)
for name, curve in (('primal', result.primal), ('dual', result.dual)):
  for d in curve:
    print(f'{name:<6} {d.m:>3}x{d.n:<3} Var ratio {d.variance_ratio:6.3f}  '
          f'test error {100 * d.test_error_mean:5.2f} +- {100 * d.test_error_stderr:.2f} %')
print('Spearman(error, Var(K)) along the primal curve:', result.spearman_primal)
path = os.path.join(OUT, 'fig4.png')
ablation.plot_ablation(result, path)
show(path)
assert all(d.test_error_mean < 0.5 for d in result.primal + result.dual)  # far better than chance
'''),
]

NOTEBOOKS['04_ntk_dynamics'] = [
    ('md', '''\
# 04 · Theorem 1: the NTK moves less when m·n is large

Under gradient flow with the L2 loss, K_e(t) - K_e(0) = O_p(1/(m n)). Raising m is the cheap
way to make m n large (parameters grow like m n^2). We train depth-4 ensembles by full-batch
gradient descent on a digits subset and measure how far the NTK on a probe set moves, for the
appendix figure's panels: (a) m = 1, n = d^2; (b) m = n = d; (c) a fixed n with the parameters
of (a). The log-log slope against m n should be near -1 (`docs/ABLATION.md` reports the full run).'''),
    ('code', INSTALL),
    ('code', COMMON + '''\
from ce_jax import dynamics, plotting
'''),
    ('code', '''\
x, y, x_probe = dynamics.regression_data(num_train=64, num_probe=6)
grid = dynamics.design_grid((3, 4, 6, 8), fixed_width=8, input_dim=x.shape[1], depth=4)
result = dynamics.run_dynamics(grid, x, y, x_probe, depth=4, steps=100, seeds=2, progress=None)
for p in result.points:
  print(f'panel {p.panel:<3} m = {p.m:>3} n = {p.n:>3} m*n = {p.mn:>5}  '
        f'|dK[0,1]| = {p.delta_offdiag:.2e}  ||dK||/||K|| = {p.delta_frob_rel:.2e}')
f = result.fit_frob
print(f'log-log slope of the relative change vs m*n: {f.slope:.2f} +- {f.slope_stderr:.2f} (theory -1)')
path = os.path.join(OUT, 'theorem1.png')
plotting.plot_dynamics(result, path)
show(path)
assert f.slope < -0.4
'''),
]


def build(name, cells):
  nb = v4.new_notebook()
  nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
  nb.metadata['language_info'] = {'name': 'python'}
  nb.metadata['colab'] = {'name': f'{name}.ipynb', 'provenance': []}
  for kind, src in cells:
    nb.cells.append(v4.new_markdown_cell(src) if kind == 'md' else v4.new_code_cell(src))
  path = os.path.join(HERE, f'{name}.ipynb')
  nbformat.write(nb, path)
  return path


if __name__ == '__main__':
  for n, c in NOTEBOOKS.items():
    print(build(n, c))
