"""Writes the notebooks of this folder from the cell lists below (outputs stripped).

    .venv/bin/python notebooks/make_notebooks.py

The notebooks call the library only; tests/experiments/test_notebooks.py executes every one of them.
"""

import os

import nbformat
from nbformat import v4

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Set-up: makes ce_jax importable; does nothing where it already is (the repository's .venv).
# Otherwise installs it with the experiments extra from CE_JAX_SOURCE (a path or a pip URL, e.g.
# git+https://<host>/<owner>/ce_jax.git) or else from the checkout this notebook lives in. A
# checkout's lock file for this Python (requirements/py311.txt, py312.txt) pins the stack.
import importlib, importlib.util, os, pathlib, subprocess, sys
if importlib.util.find_spec('ce_jax') is None:
  source = os.environ.get('CE_JAX_SOURCE', '')
  root = pathlib.Path(source) if source and os.path.isdir(source) else None
  if not source:
    here = pathlib.Path.cwd().resolve()  # Jupyter runs a notebook in its own folder
    root = next((p for p in (here, *here.parents)
                 if (p / 'setup.cfg').is_file() and (p / 'ce_jax' / '__init__.py').is_file()), None)
    if root is None:
      raise RuntimeError('ce_jax is not installed and this notebook is not in a ce_jax checkout: '
                         'set CE_JAX_SOURCE to its path or pip URL (README, "Notebooks")')
  cmd = [sys.executable, '-m', 'pip', 'install', '-q']
  if root is not None:
    lock = root / 'requirements' / f'py{sys.version_info[0]}{sys.version_info[1]}.txt'
    cmd += (['-c', str(lock)] if lock.is_file() else []) + [f'{root}[experiments]']
  else:
    cmd += [f'ce_jax[experiments] @ {source}']
  subprocess.check_call(cmd)
  importlib.invalidate_caches()
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
from ce_jax.theory import ntk, variance
from ce_jax.studies import convergence, plotting
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
conv = convergence.ntk_convergence(jax.random.PRNGKey(0), depth=4, width=64,
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
from ce_jax.design import accounting, solver
from ce_jax.theory import alpha
from ce_jax import models
from ce_jax.studies import plotting
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
from ce_jax.studies import ablation, plotting
from ce_jax.training import input_pipeline
'''),
    ('code', '''\
data = input_pipeline.load_arrays('digits')
base, depth, alpha = 64, 6, 3.65
primal = ablation.primal_designs([8, 16, 32, 64], baseline_width=base, depth=depth, alpha=alpha)
dual = ablation.dual_designs([1, 3, 9], baseline_width=base, depth=depth, alpha=alpha)
for d in primal + dual:
  print(f'm = {d.m_int:>3}  n = {d.n:>3}  params = {d.params:>7,}  Var(K_e)/Var(K_s) = {d.variance_ratio:.3f}')
# The primal designs spend the baseline's budget (within one member).
assert all(abs(d.params - primal[-1].params) <= d.params / d.m_int for d in primal)
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
plotting.plot_ablation(result, path)
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
from ce_jax.studies import dynamics, plotting
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

NOTEBOOKS['05_your_own_block'] = [
    ('md', '''\
# 05 · Your own block: from a Flax module to a trained collegial ensemble

Any Flax module factory `width -> Module` can be an ensemble member. This notebook writes a
small convolutional block, lets the library read its weight layers and fan-ins from the module,
fits its alpha with Algorithm 1, solves the primal and dual designs for a baseline width
(Algorithm 2), and trains the primal design, built as ONE Flax module by `ensemble()`, on the
digits data set. Tiny settings (4 widths, 64 initializations each): about a minute on 2 CPU
cores; a real fit uses the default widths 4..256 and ~2000 trials (`docs/ALPHA.md`).'''),
    ('code', INSTALL),
    ('code', COMMON + '''\
import flax.linen as nn
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax
from ce_jax.theory import alpha
from ce_jax.training import input_pipeline
from ce_jax.design import solver
from ce_jax.design import member as member_lib
from ce_jax.design.member import Member
from ce_jax.models.ensemble import ensemble
'''),
    ('md', '''\
**The block.** `C` channels in and out, width n inside: 3x3 conv C -> n, ReLU, 3x3 conv n -> n,
ReLU, 1x1 conv n -> C (flax's own `nn.Conv` and initializers). The `Member` gives the shape of
ONE input: the 5x5 window of C features that the central output unit sees through the two 3x3
convolutions (Algorithm 1 measures the NTK entry of channel 0 at the centre). `member.layers`
lists what the library found in the module's jaxpr: every weight layer with its fan-in under
both conventions (input channels per group; times the kernel taps), the fan-in sum
S(n) = sum_l 1 / fan_in_l of Assumption 1, and the parameter count beta(n).'''),
    ('code', '''\
C = 16

class MyBlock(nn.Module):
  """3x3 conv C -> n, ReLU, 3x3 conv n -> n, ReLU, 1x1 conv n -> C."""
  width: int
  channels: int = C

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME', name='conv1')(x))
    h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME', name='conv2')(h))
    return nn.Conv(self.channels, (1, 1), name='conv3')(h)

member = Member(MyBlock, input_shape=(5, 5, C), name='my_block')
member_lib.validate(member, 8)  # one-line errors if the module cannot be designed with
for layer in member_lib.layers(member, 8):
  print(f'{layer.scope:<14} weight {str(layer.weight_shape):<15} fan-in: channels '
        f'{layer.fan_in_channels:>3}, kernel {layer.fan_in_kernel:>4}')
prof = member_lib.profile(member, [4, 8, 16, 32])
for n, b, s_c, s_k in zip(prof.widths[:, 0], prof.params, prof.fan_in_sum['channels'],
                          prof.fan_in_sum['kernel']):
  print(f'n = {n:>2}: beta = {b:>5} parameters, S = {s_c:.4f} (channels), {s_k:.4f} (kernel)')
# The counts are read from the module; for this block they are the closed forms below.
assert list(prof.params) == [9 * C * n + n + 9 * n * n + n + n * C + C for n in (4, 8, 16, 32)]
assert np.allclose(prof.fan_in_sum['channels'], [1 / C + 2 / n for n in (4, 8, 16, 32)])
'''),
    ('md', '''\
**Algorithm 1.** For each width, 64 random initializations (the module's own initializers) give
the normalized second moment E[K^2]/E[K]^2 of the diagonal NTK entry; a weighted fit of its log
against S gives alpha (with its standard error).'''),
    ('code', '''\
est = alpha.estimate_alpha(member, widths=(4, 8, 16, 32), trials=64, key=jax.random.PRNGKey(0))
for p in est.points:
  print(f'n = {p.width:>2}  S = {p.fan_in_sum:.4f}  E[K^2]/E[K]^2 = {p.ratio:.4f} '
        f'+- {p.ratio_stderr:.4f}')
a, se = est.fit.alpha, est.fit.alpha_stderr
print(f'alpha = {a:.2f} +- {se:.2f} (R^2 {est.fit.r2:.3f}); kernel convention: '
      f'{est.fits["kernel"].alpha:.2f}')
assert a > 0 and se > 0
'''),
    ('md', '''\
**Algorithm 2.** The baseline is ONE block of width 32. The primal design is the smoothest
ensemble (lowest NTK variance) with the baseline's parameters, the dual the cheapest ensemble as
smooth as the baseline. Passing alpha's standard error gives, for each design, the range of the
optimal n and of m over alpha's 95% interval.'''),
    ('code', '''\
problem = solver.member_problem(member, baseline_width=32, max_width=64)
result = solver.solve(problem, a, se)
print(solver.format_result(result))
primal = result.primal
assert result.primal.n_interval[0] <= primal.n <= result.primal.n_interval[1]
'''),
    ('md', '''\
**Training the primal design.** `ensemble(MyBlock, m, n, aggregation='block')` is ONE Flax
module: the m paths run as grouped convolutions and are summed inside the last 1x1 convolution
(a ResNeXt-style block). Here it sits in a tiny network (stem conv -> x + block(x) -> pooled
dense head) trained with Adam on scikit-learn's 8x8 digits (offline).'''),
    ('code', '''\
class Net(nn.Module):
  m: int
  width: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(C, (3, 3), padding='SAME', name='stem')(x))
    x = nn.relu(x + ensemble(MyBlock, self.m, self.width, aggregation='block', name='block')(x))
    return nn.Dense(10, name='head')(x.mean(axis=(1, 2)))

digits = input_pipeline.digits_arrays()
(x_train, y_train), (x_test, y_test) = digits['train'], digits['test']
net = Net(primal.m_int, primal.n)
params = net.init(jax.random.PRNGKey(1), x_train[:1])['params']
block_params = sum(np.size(l) for l in jax.tree_util.tree_leaves(params['block']))
print(f'primal {primal.label}: {block_params} block parameters '
      f'(baseline 1x32: {result.baseline.params})')
assert block_params == primal.params   # the module holds exactly the designed members

opt = optax.adam(1e-2)
opt_state = opt.init(params)

def loss_fn(p, x, y):
  logits = net.apply({'params': p}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

@jax.jit
def step(p, s, x, y):
  loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
  updates, s = opt.update(grads, s, p)
  return optax.apply_updates(p, updates), s, loss

rng = np.random.RandomState(0)
losses = []
for t in range(100):
  idx = rng.randint(0, len(y_train), 128)
  params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
  losses.append(float(loss))
test_acc = float(jnp.mean(jnp.argmax(net.apply({'params': params}, x_test), -1) == y_test))
print(f'loss: step 1 {losses[0]:.3f}, steps 91-100 {np.mean(losses[-10:]):.3f}; '
      f'test accuracy {test_acc:.3f}')

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
s = np.array([p.fan_in_sum for p in est.points])
r = np.array([p.ratio for p in est.points])
axes[0].errorbar(s, np.log(r), yerr=[p.ratio_stderr / p.ratio for p in est.points], fmt='o',
                 capsize=3, label='Monte Carlo')
grid = np.linspace(0, s.max() * 1.05, 50)
axes[0].plot(grid, est.fit.intercept + a * grid, '-', label=f'fit, alpha = {a:.2f}')
axes[0].set_xlabel('S(n)'); axes[0].set_ylabel('log E[K^2]/E[K]^2'); axes[0].legend()
axes[0].set_title('Algorithm 1 on MyBlock')
axes[1].plot(np.arange(1, len(losses) + 1), losses)
axes[1].set_xlabel('step'); axes[1].set_ylabel('cross-entropy')
axes[1].set_title(f'training the primal design {primal.label}')
fig.tight_layout()
path = os.path.join(OUT, 'own_block.png')
fig.savefig(path, dpi=80)
plt.close(fig)
show(path)
assert np.mean(losses[-10:]) < 0.5 * losses[0]
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
