"""Theorem 1 dynamics: the NTK change shrinks with m*n; slope fit; the binary."""

import math
import os

import jax
import numpy as np
import pytest

from ce_jax.design import blocks
from ce_jax.studies import dynamics

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

pytestmark = pytest.mark.slow


def test_design_grid_has_the_three_panels():
  grid = dynamics.design_grid((4, 8), fixed_width=16, input_dim=64, depth=4)
  by = {(g.m, g.n): g for g in grid}
  for d in (4, 8):
    a, b = by[(1, d * d)], by[(d, d)]
    assert 'a' in a.panel and 'b' in b.panel and a.m * a.n == b.m * b.n
  c = [g for g in grid if 'c' in g.panel and g.m > 1]
  assert c and all(g.n == 16 for g in c)
  a8 = by[(1, 64)]
  beta16 = blocks.dense_uniform_params(16, 64, 4, 1)
  assert abs(c[-1].params - a8.params) <= beta16 / 2  # panel (c) matches (a)'s parameters
  assert c[-1].m * c[-1].n > a8.m * a8.n


def test_fit_loglog_slope_against_linregress():
  from scipy import stats
  x = np.array([4., 9., 16., 64., 144., 500.])
  np.testing.assert_allclose(dynamics.fit_loglog_slope(x, 3.0 / x).slope, -1.0, atol=1e-12)
  y = 2.0 * x ** -0.8 * np.exp(np.random.RandomState(0).normal(0, 0.2, x.size))
  fit = dynamics.fit_loglog_slope(x, y)
  ref = stats.linregress(np.log(x), np.log(y))
  assert fit.slope == pytest.approx(ref.slope) and fit.slope_stderr == pytest.approx(ref.stderr)
  with pytest.raises(ValueError, match='> 0'):
    dynamics.fit_loglog_slope([1, 2, 3], [1, 0, 1])


def test_dynamics_kernels_are_the_library_ntk_before_and_after_training():
  from ce_jax.theory import ntk
  from ce_jax.models.dense import DenseEnsemble
  model = DenseEnsemble(3, (5, 7), 1)
  x, y, xp = dynamics.regression_data(num_train=16, num_probe=4)
  key = jax.random.PRNGKey(2)
  out = dynamics.make_dynamics_fn(model, x, y, xp, steps=3, learning_rate=0.5)(key)
  params = model.init(key, x[:1])['params']
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  # An independent reference: the Jacobian contraction K = J J^T over all parameters.
  jac = jax.jacrev(lambda p: apply_fn(p, xp)[:, 0])(params)
  ref = sum(j.reshape(4, -1) @ j.reshape(4, -1).T for j in jax.tree_util.tree_leaves(jac))
  np.testing.assert_allclose(np.asarray(out.k_init), np.asarray(ref), rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.k_init), np.asarray(
      ntk.empirical_ntk_fn(apply_fn, backend='jax')(xp, xp, params)), rtol=2e-4, atol=1e-5)
  assert not np.allclose(np.asarray(out.k_final), np.asarray(out.k_init))  # training moved the kernel


def test_ntk_change_shrinks_with_mn():
  x, y, xp = dynamics.regression_data(num_train=32, num_probe=4)
  pts = [dynamics.measure_point(dynamics.GridPoint(m, n, 0, ''), x, y, xp, depth=3, steps=30,
                                learning_rate=0.5, seeds=3)
         for m, n in ((1, 4), (4, 16), (16, 64))]
  frob = [p.delta_frob_rel for p in pts]
  assert frob[0] > frob[1] > frob[2] > 0
  assert all(p.loss_final < p.loss_init for p in pts)  # the models did train
  fit = dynamics.fit_loglog_slope([p.mn for p in pts], frob)
  assert fit.slope < -0.5


def test_binary(binary, tmp_path):
  out = tmp_path / 'dyn.json'
  png = tmp_path / 'dyn.png'
  # --depth=2 (the minimum, one hidden layer): the smallest programs to compile, one per design
  binary('ntk_dynamics', '--ds=2,3', '--depth=2', '--fixed_width=32', '--steps=5', '--seeds=2',
         '--num_train=16', '--num_probe=3', f'--json_out={out}', f'--plot_out={png}')
  res = load_json(out)
  assert {'points', 'slope', 'slope_stderr'} <= set(res)
  # panels (a) (1, d^2) and (b) (d, d) for d = 2, 3, sorted by m n; no (c): beta(d^2) < beta(32) / 2
  assert [(p['m'], p['n']) for p in res['points']] == [(1, 4), (2, 2), (1, 9), (3, 3)]
  for p in res['points']:
    assert {'m', 'n', 'delta_offdiag', 'delta_frob_rel'} <= set(p)
    assert p['delta_frob_rel'] > 0
  assert math.isfinite(res['slope']) and res['slope_stderr'] >= 0
  assert os.path.getsize(png) > 0


def test_binary_bad_input(binary):
  proc = binary('ntk_dynamics', '--ds=4,0', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('ntk_dynamics.py: error: --ds[1] must')
  assert 'Traceback' not in proc.stderr
