"""Figures of ce_jax.studies.plotting from library results: each writes one PNG of the figure's
size (figsize x 120 dpi) that is not blank, creates its parent directory and closes its figure.
(The binaries' tests check the same figures end to end: demo, search, fit_alpha, ablation,
ntk_dynamics, ntk_convergence.)"""

from __future__ import annotations

import numpy as np
import pytest

from ce_jax.design import blocks, solver
from ce_jax.studies import plotting
from ce_jax.theory import alpha

plt = pytest.importorskip('matplotlib.pyplot')
image = pytest.importorskip('matplotlib.image')


def _check_png(path, width_in, height_in):
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = image.imread(str(path))
  assert pixels.shape[:2] == (round(120 * height_in), round(120 * width_in))
  # Not blank: the figure draws curves, markers and text on a white background.
  assert np.mean(pixels[..., :3] < 0.5) > 0.005
  assert plt.get_fignums() == []   # the figure was closed


def test_alpha_fit_figure_from_an_exact_law(tmp_path):
  """Points on log ratio = 0.1 + 3.65 S (dense member, depth 6): the fit recovers the law and the
  figure draws it over the widths."""
  widths = np.array([8, 16, 32, 64, 128])
  s = blocks.dense_uniform_fan_in_sum(widths, 6)
  ratio = np.exp(0.1 + 3.65 * s)
  se = 0.01 * ratio
  fit = alpha.fit_alpha(s, ratio, se)
  assert fit.alpha == pytest.approx(3.65, rel=1e-9) and fit.intercept == pytest.approx(0.1)
  points = tuple(alpha.AlphaPoint(int(n), float(si), float(r), float(e), 1.0, float(r - 1))
                 for n, si, r, e in zip(widths, s, ratio, se))
  est = alpha.AlphaEstimate('dense', fit, points, trials=100)
  path = tmp_path / 'new_dir' / 'alpha.png'
  plotting.plot_alpha_fit(est, str(path), depth=6)
  _check_png(path, 10, 4)


def test_search_and_design_error_figures(tmp_path):
  r = solver.search('resnext29', 1.6, cardinality=1, base_width=128)
  path = tmp_path / 'fig3.png'
  plotting.plot_search(r, str(path))
  _check_png(path, 11, 4)
  models = [dict(name='baseline', m=1, n=64, params=12928, test_error_mean=0.27,
                 test_error_stderr=0.05),
            dict(name='primal', m=7, n=18, params=13860, test_error_mean=0.19,
                 test_error_stderr=0.01)]
  path = tmp_path / 'errors.png'
  plotting.plot_design_errors(models, str(path), title='two designs')
  _check_png(path, 9, 3.6)
