"""Figures of ce_jax (matplotlib, Agg backend): Fig. 2 convergence, Fig. 3 search curves,
Fig. 4 ablation, alpha fits, Theorem 1 dynamics, demo results.

Imported lazily by the binaries and notebooks; every function writes one file and closes its
figure.
"""

from __future__ import annotations

import numpy as np

from ce_jax import _optional
from ce_jax.theory import alpha as alpha_lib
from ce_jax.tools import cli


def _pyplot():
  matplotlib = _optional.require('matplotlib', 'experiments', what='ce_jax.studies.plotting')
  if matplotlib.get_backend().lower() not in ('agg', 'module://matplotlib_inline.backend_inline'):
    matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _members_axis(ax, n, m, label: str, legend_loc: str) -> None:
  """m(n) on a twin log axis behind ``ax`` (whose legend stays on top)."""
  twin = ax.twinx()
  twin.loglog(n, m, color='C1', alpha=0.6)
  twin.set_ylabel(label, color='C1')
  ax.set_zorder(twin.get_zorder() + 1)
  ax.patch.set_visible(False)
  ax.legend(loc=legend_loc, fontsize=8)


def plot_search(r, path: str) -> None:
  """Fig. 3: (a) the primal objective and m_p(n), (b) the dual efficiency and m_d(n), optima marked.

  ``r``: a :class:`ce_jax.design.solver.SearchResult`; ``path``: PNG/PDF file.
  """
  plt = _pyplot()
  cli.ensure_parent(path)
  c = r.curves
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  ax1.loglog(c.n, c.primal_objective, color='C0', label='(exp(alpha S) - 1) / m_p')
  ax1.plot([r.primal.n], [c.primal_objective[list(c.n).index(r.primal.n)]], 'r*', ms=14,
           label=f'primal optimum n={r.primal.n}, m={r.primal.m:.1f} ({r.primal.label})')
  for ax, d in ((ax1, r.primal), (ax2, r.dual)):
    iv = getattr(d, 'n_interval', None)
    if iv is not None:   # optimal n across alpha's confidence interval
      ax.axvspan(iv[0] - 0.5 if iv[0] == iv[1] else iv[0], iv[1] + 0.5 if iv[0] == iv[1]
                 else iv[1], color='C2', alpha=0.2, label=f'n* over alpha 95% interval: '
                 f'{iv[0]}..{iv[1]}, m {d.m_interval[0]}..{d.m_interval[1]}')
  ax1.set_xlabel('width n')
  ax1.set_ylabel('primal objective (Var / C)')
  _members_axis(ax1, c.n, c.primal_m, 'm_p(n)', 'upper right')
  ax1.set_title('(a) primal: same budget, minimal variance')
  ax2.semilogx(c.n, c.dual_rho, color='C0', label='rho(m_d(n), n)')
  i = list(c.n).index(r.dual.n)
  ax2.plot([r.dual.n], [c.dual_rho[i]], 'r*', ms=14,
           label=f'dual optimum n={r.dual.n}, m={r.dual.m:.1f}, rho={c.dual_rho[i]:.2f}')
  ax2.set_xlabel('width n')
  ax2.set_ylabel(f'efficiency rho ({r.efficiency})')
  _members_axis(ax2, c.n, c.dual_m, 'm_d(n)', 'lower center')
  ax2.set_title('(b) dual: same variance, maximal efficiency')
  fig.suptitle(f'{r.baseline.name} {r.baseline.label}, alpha={r.alpha:.3g}')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_design_errors(models, path: str, title: str = '') -> None:
  """Bar chart of test error (mean +- standard error over seeds) next to parameters per design.

  ``models``: list of dicts with ``name``, ``m``, ``n``, ``params``, ``test_error_mean``,
  ``test_error_stderr`` (the ``models`` list of the demo's summary.json).
  """
  plt = _pyplot()
  cli.ensure_parent(path)
  names = [f'{d["name"]}\n{d["m"]}x{d["n"]}' for d in models]
  err = [100 * d['test_error_mean'] for d in models]
  se = [100 * d['test_error_stderr'] for d in models]
  params = [d['params'] for d in models]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
  ax1.bar(names, err, yerr=se, capsize=6, color=['C7', 'C0', 'C2'][:len(models)])
  ax1.set_ylabel('test error (%)')
  ax1.set_title('test error, mean +- s.e. over seeds')
  ax2.bar(names, params, color=['C7', 'C0', 'C2'][:len(models)])
  ax2.set_ylabel('parameters')
  ax2.set_title('parameters')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_alpha_fit(estimate, path: str, *, fan_in_convention: str = 'channels',
                   depth: int = 6) -> None:
  """Appendix Fig. 2: Monte-Carlo ``E[K^2]/E[K]^2`` against width and ``log`` of it against S.

  ``estimate``: a :class:`ce_jax.theory.alpha.AlphaEstimate` (block, fit, points); ``depth`` is the
  dense member's depth and ``fan_in_convention`` the bottleneck's S convention, used to draw
  the fitted curve over a dense width grid.
  """
  plt = _pyplot()
  block, points, fit = estimate.block, estimate.points, estimate.fit
  w = np.array([p.width for p in points])
  s = np.array([p.fan_in_sum for p in points])
  r = np.array([p.ratio for p in points])
  se = np.array([p.ratio_stderr for p in points])
  grid = np.unique(np.geomspace(w.min(), w.max(), 200).round().astype(int))
  s_grid = alpha_lib.fan_in_sums(block, grid, depth=depth, fan_in_convention=fan_in_convention)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  ax = axes[0]
  ax.errorbar(w, r, yerr=se, fmt='o', capsize=3, label='Monte Carlo')
  ax.plot(grid, np.exp(fit.intercept + fit.alpha * s_grid), '-',
          label=f'exp({fit.alpha:.2f} S(n))')
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('width n')
  ax.set_ylabel(r'$E[K^2] / E[K]^2$')
  ax.set_title(f'{block}: second moment of a diagonal NTK entry')
  ax.legend()
  ax = axes[1]
  ax.errorbar(s, np.log(r), yerr=se / r, fmt='o', capsize=3, label='Monte Carlo')
  ss = np.linspace(0, s.max(), 100)
  ax.plot(ss, fit.intercept + fit.alpha * ss, '-',
          label=rf'$\alpha$ = {fit.alpha:.3f} $\pm$ {fit.alpha_stderr:.3f}, $R^2$ = {fit.r2:.3f}')
  ax.set_xlabel(f'S (fan-in sum, {fan_in_convention})' if block == 'bottleneck'
                else 'S = sum 1/n_l')
  ax.set_ylabel(r'log($E[K^2] / E[K]^2$)')
  ax.legend()
  fig.tight_layout()
  cli.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_ntk_convergence(result, path: str) -> None:
  """Fig. 2b: K_e(x_0, x_gamma) for each m, the NMK (+- 2 s.e.) and the infinite-width NTK; and
  the rms deviation of K_e from the NMK against m with a 1/sqrt(m) guide.

  ``result``: a :class:`ce_jax.studies.convergence.Convergence` or its JSON dict.
  """
  if hasattr(result, '_asdict'):
    result = cli._to_jsonable(result)  # pylint: disable=protected-access
  plt = _pyplot()

  g = np.asarray(result['gamma'])
  nmk = np.asarray(result['nmk'])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  ms = list(result['ensemble_ntk'])
  colors = plt.cm.viridis(np.linspace(0.1, 0.9, len(ms)))
  for c, m in zip(colors, ms):
    ax.plot(g, result['ensemble_ntk'][m], color=c, lw=1, label=f'm = {m}')
  ax.plot(g, nmk, 'k-', lw=2, label=f'NMK ({result["nmk_samples"]} inits, n={result["nmk_width"]})')
  ax.fill_between(g, nmk - 2 * np.asarray(result['nmk_stderr']),
                  nmk + 2 * np.asarray(result['nmk_stderr']), color='k', alpha=0.2)
  ax.plot(g, result['infinite_ntk'], 'r--', lw=1, label='infinite width')
  ax.set_xlabel(r'$\gamma$')
  ax.set_ylabel(r'NTK$[x_0, x_\gamma]$')
  ax.set_title(f'depth {result["depth"]}, width {result["width"]}')
  ax.legend(fontsize=8)
  ax = axes[1]
  mv = np.array([int(m) for m in ms])
  rms = np.array([np.sqrt(np.mean((np.asarray(result['ensemble_ntk'][m]) - nmk) ** 2))
                  for m in ms])
  ax.loglog(mv, rms, 'o-', label=r'rms$(K_e - $NMK$)$')
  ax.loglog(mv, rms[0] / np.sqrt(mv / mv[0]), 'k:', label=r'$\propto 1/\sqrt{m}$')
  ax.set_xlabel('multiplicity m')
  ax.set_ylabel('rms deviation from the NMK')
  ax.legend(fontsize=8)
  fig.tight_layout()
  cli.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_dynamics(result, path: str, fit_on: str = 'frob') -> None:
  """Appendix Fig. 3: NTK change (off-diagonal entry, relative Frobenius) against m n per panel,
  with the log-log fit and the slope -1 of Theorem 1.

  ``result``: a :class:`ce_jax.studies.dynamics.DynamicsResult`; ``fit_on``: 'frob' | 'offdiag' (the
  quantity whose slope is reported).
  """
  plt = _pyplot()

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, key, fit, name in ((axes[0], 'delta_offdiag', result.fit_offdiag, '|dK[0,1]|'),
                             (axes[1], 'delta_frob_rel', result.fit_frob,
                              '||dK||_F / ||K(0)||_F')):
    for panel, color, label in (('a', 'tab:red', '(a) m=1, n=d^2'), ('b', 'tab:blue', '(b) m=n=d'),
                                ('c', 'tab:green', '(c) fixed n, params of (a)')):
      pts = [p for p in result.points if panel in p.panel]
      if pts:
        ax.errorbar([p.mn for p in pts], [getattr(p, key) for p in pts],
                    yerr=[getattr(p, key + '_stderr') for p in pts], fmt='o', color=color,
                    capsize=3, label=label, alpha=0.8)
    mn = np.array(sorted({p.mn for p in result.points}), float)
    ax.plot(mn, np.exp(fit.intercept) * mn ** fit.slope, 'k-',
            label=f'fit slope {fit.slope:.2f} +- {fit.slope_stderr:.2f}')
    ax.plot(mn, np.exp(fit.intercept) * mn[0] ** fit.slope * (mn / mn[0]) ** -1.0, 'k:',
            label='slope -1 (Theorem 1)')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('m n')
    reported = key == {'frob': 'delta_frob_rel', 'offdiag': 'delta_offdiag'}[fit_on]
    ax.set_ylabel(name + ('  (reported slope)' if reported else ''))
    ax.legend(fontsize=8)
  fig.suptitle('NTK change between initialization and end of training (depth-4 ensembles)')
  fig.tight_layout()
  cli.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_ablation(result, path: str, title: str = '') -> None:
  """Fig. 4: error (blue) with the Var(K) ratio (a, b) or parameters (c, d), per curve.

  ``result``: a :class:`ce_jax.studies.ablation.AblationResult`.
  """
  plt = _pyplot()

  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  panels = [('primal', 'variance_ratio', '(a) Primal', 'Var(K) / Var(K baseline)'),
            ('dual', 'variance_ratio', '(b) Dual', 'Var(K) / Var(K baseline)'),
            ('primal', 'params', '(c) Primal', 'parameters'),
            ('dual', 'params', '(d) Dual', 'parameters')]
  for ax, (curve, key, name, label) in zip(axes, panels):
    rows = sorted(getattr(result, curve), key=lambda r: r.n)
    n = [r.n for r in rows]
    err = np.array([r.test_error_mean for r in rows]) * 100
    se = np.array([r.test_error_stderr for r in rows]) * 100
    ax.errorbar(n, err, yerr=np.nan_to_num(se), color='tab:blue', marker='o', capsize=3)
    ax.set_xscale('log')
    ax.set_xlabel('member width n')
    ax.set_ylabel('test error (%)', color='tab:blue')
    ax2 = ax.twinx()
    ax2.plot(n, [getattr(r, key) for r in rows], color='tab:red', marker='s', ls='--')
    ax2.set_ylabel(label, color='tab:red')
    if key == 'variance_ratio' and curve == 'primal':
      ax2.set_yscale('log')
    elif key == 'variance_ratio':
      ax2.set_ylim(0, max(2.0, 1.2 * max(r.variance_ratio for r in rows)))
    else:
      ax2.set_ylim(0, 1.15 * max(r.params for r in rows))
    for r in rows:
      ax.annotate(f'm={r.m}', (r.n, r.test_error_mean * 100), fontsize=7,
                  textcoords='offset points', xytext=(0, 6), ha='center')
    ax.set_title(name)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
