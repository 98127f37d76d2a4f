"""Figures of ce_jax (matplotlib, Agg backend): Fig. 3 search curves, alpha fits, demo results.

Imported lazily by the binaries and notebooks; every function writes one file and closes its
figure.
"""

from __future__ import annotations

from ce_jax import cli


def _pyplot():
  import matplotlib
  if matplotlib.get_backend().lower() not in ('agg', 'module://matplotlib_inline.backend_inline'):
    matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_search(r, path: str) -> None:
  """Fig. 3: (a) the primal objective and m_p(n), (b) the dual efficiency and m_d(n), optima marked.

  ``r``: a :class:`ce_jax.solver.SearchResult`; ``path``: PNG/PDF file.
  """
  plt = _pyplot()
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
