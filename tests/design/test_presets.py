"""The three families beyond the paper (``wrn_basic``, ``transformer_mlp``, ``inverted_residual``):
counts read from the modules equal the closed forms, Algorithm 1 and the solver run on them, and
``ensemble()`` of each path (block aggregation) has m times the path's parameters."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from ce_jax.theory import alpha
from ce_jax.design import presets, solver
from ce_jax.design import member as member_lib
from ce_jax.models import ensemble as ensemble_lib
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

WIDTHS = (1, 3, 8, 17, 64)


def _closed_forms(name, size, n):
  """(params, flops, S channels, S kernel) of one path of width n (docstrings of presets)."""
  n = np.asarray(n, np.float64)
  c = size
  if name == 'wrn_basic':
    beta = 18 * c * n
    return beta, 25 * 2 * beta, 1 / c + 1 / n, 1 / (9 * c) + 1 / (9 * n)
  if name == 'transformer_mlp':
    d = size
    return (2 * d + 1) * n + d, 4 * d * n, 1 / d + 1 / n, 1 / d + 1 / n
  beta = (2 * c + 9) * n
  return beta, 9 * 2 * beta, 1 / c + 1 + 1 / n, 1 / c + 1 / 9 + 1 / n


FAMILIES = [('wrn_basic', {'channels': 6}, 6), ('transformer_mlp', {'d_model': 10}, 10),
            ('inverted_residual', {'channels': 5}, 5)]


@pytest.mark.parametrize('name,kwargs,size', FAMILIES)
def test_counts_equal_closed_forms(name, kwargs, size):
  mem = presets.get(name, **kwargs)
  prof = member_lib.profile(mem, WIDTHS)
  params, flops, s_ch, s_k = _closed_forms(name, size, WIDTHS)
  np.testing.assert_array_equal(prof.params, params.astype(np.int64))
  np.testing.assert_array_equal(prof.flops, flops.astype(np.int64))
  np.testing.assert_allclose(prof.fan_in_sum['channels'], s_ch, rtol=1e-12)
  np.testing.assert_allclose(prof.fan_in_sum['kernel'], s_k, rtol=1e-12)
  for n in (2, 9):   # one exact trace agrees with the affine model
    assert member_lib.fan_in_sum(mem, n, 'kernel') == pytest.approx(
        float(_closed_forms(name, size, n)[3]), rel=1e-12)


def test_layers_and_validation():
  layers = member_lib.layers(presets.inverted_residual(channels=4), 7)
  assert [l.scope.split('/')[-1] for l in layers] == ['expand', 'depthwise', 'project']
  assert [(l.fan_in_channels, l.fan_in_kernel) for l in layers] == [(4, 4), (1, 9), (7, 7)]
  assert [l.reads_data for l in layers] == [True, False, False]
  assert len(member_lib.validate(presets.wrn_basic(channels=3), 4)) == 2
  assert len(member_lib.validate(presets.transformer_mlp(d_model=3), 4)) == 2
  assert presets.wrn_basic(8) == presets.wrn_basic(8)        # value-comparable (shared caches)
  assert set(presets.NAMES) >= {'wrn_basic', 'transformer_mlp', 'inverted_residual'}


@pytest.mark.parametrize('bad', [
    (lambda: presets.wrn_basic(channels=0), 'channels must be an integer >= 1'),
    (lambda: presets.transformer_mlp(d_model=2.5), 'd_model must be an integer >= 1'),
    (lambda: presets.get('mobilenet'), 'preset must be one of'),
])
def test_bad_arguments(bad):
  fn, msg = bad
  with pytest.raises(ValueError, match=msg):
    fn()


@pytest.mark.parametrize('name,kwargs,size', FAMILIES)
def test_algorithm1_and_solver(name, kwargs, size):
  mem = presets.get(name, **kwargs)
  parameterization = 'ntk' if name == 'inverted_residual' else 'as_given'
  est = alpha.estimate_alpha(mem, widths=(2, 16), trials=6, key=jax.random.PRNGKey(1),
                             chunk_size=6, parameterization=parameterization)
  assert set(est.fits) == {'channels', 'kernel'}
  assert all(np.isfinite(p.ratio) and p.ratio > 0 for p in est.points)
  assert np.isfinite(est.fit.alpha)
  # S differs between the conventions by a constant here: with an intercept, the same alpha
  if name != 'wrn_basic':
    assert est.fits['kernel'].alpha == pytest.approx(est.fits['channels'].alpha, rel=1e-6)
  else:   # both layers 3x3: S_kernel = S_channels / 9
    assert est.fits['kernel'].alpha == pytest.approx(9 * est.fits['channels'].alpha, rel=1e-6)
  base = 4 * size
  for conv in ('channels', 'kernel'):
    problem = solver.member_problem(mem, base, fan_in_convention=conv, max_width=2 * base)
    r = solver.solve(problem, 1.5)
    assert r.strong_duality
    assert 1 <= r.primal.n <= 2 * base and r.primal.m_int >= 1 and r.dual.m_int >= 1
    # the primal design matches the baseline's parameters to within one path
    assert abs(r.primal.params - r.baseline.params) <= float(problem.cost[r.primal.n - 1])
    assert r.primal.variance_ratio <= 1.0 + 1e-12


@pytest.mark.parametrize('name,kwargs,size', FAMILIES)
def test_block_ensemble_has_m_times_the_path(name, kwargs, size):
  mem = presets.get(name, **kwargs)
  m, n = 3, 4
  ens = ensemble_lib.ensemble(mem.factory, m, n, aggregation='block')
  x = jax.random.normal(jax.random.PRNGKey(0), (2,) + mem.input_shape)
  variables = ens.init(jax.random.PRNGKey(1), x)
  y = ens.apply(variables, x)
  assert y.shape == x.shape
  count = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(variables['params']))
  assert count == m * int(member_lib.profile(mem, [n]).params[0])
  # block aggregation = the sum of the m paths, each with its own parameters
  path = mem.build(n)
  total = sum(path.apply(ensemble_lib.member_variables(ens, variables, j), x) for j in range(m))
  np.testing.assert_allclose(np.asarray(y), np.asarray(total), rtol=2e-4, atol=2e-4)


def test_family_digits_binary(binary, tmp_path):
  """experiments/family_digits.py --quick end to end with the default network (d = 32, two blocks,
  baseline 1x128); a rerun reuses every run."""
  out = tmp_path / 'summary.json'
  flags = (f'--workdir={tmp_path / "w"}', f'--json_out={out}', '--quick')
  binary('family_digits', *flags)
  summary = json.loads(out.read_text())
  assert [d['name'] for d in summary['models']][:3] == ['baseline', 'primal', 'dual']
  assert all(len(d['test_errors']) == 2 for d in summary['models'])
  base, primal = summary['models'][0], summary['models'][1]
  assert base['m'] == 1 and base['n'] == 128
  assert abs(primal['params'] - base['params']) <= base['params'] // 4
  # the fitted law exp(a + alpha S) - 1 by default, the fit's intercept passed to the solver
  assert summary['law'] == 'fitted' and summary['settings']['intercept_law'] is True
  assert summary['search']['intercept'] == pytest.approx(summary['alpha']['intercept'])
  assert primal['variance_ratio'] == pytest.approx(primal['variance_ratio_fitted'])
  assert base['variance_ratio_fitted'] == pytest.approx(1.0)
  assert base['variance_ratio_paper'] == pytest.approx(1.0)
  # the paper's law: the same designs (each law's primal / dual, the other's for comparison),
  # so every run is reused
  again = binary('family_digits', *flags, '--nointercept_law')
  assert 'trained seeds' not in again.stdout and 'reused' in again.stdout
  paper = json.loads(out.read_text())
  assert paper['law'] == 'paper' and paper['search']['intercept'] == 0.0
  assert ({(d['m'], d['n']) for d in paper['models']}
          == {(d['m'], d['n']) for d in summary['models']})
