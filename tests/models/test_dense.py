"""Tests of the NTK-parameterized dense member and the dense collegial ensemble."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.models import dense
from conftest import enable_x64


x64 = enable_x64


def _x(n=6, d=5, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def test_member_param_layout_and_shapes():
  model = dense.DenseMember((4, 3, 6), num_outputs=2)
  params = model.init(jax.random.PRNGKey(0), _x())
  shapes = jax.tree_util.tree_map(jnp.shape, params)
  assert shapes == {'params': {'layer_0': {'kernel': (5, 4)}, 'layer_1': {'kernel': (4, 3)},
                               'layer_2': {'kernel': (3, 6)}, 'layer_3': {'kernel': (6, 2)}}}
  assert model.apply(params, _x()).shape == (6, 2)
  assert model.depth == 4


def test_member_matches_spec_formula():
  """f = sqrt(1/n_L) W_out phi(h_L), h_{l+1} = sqrt(2/n_l) W phi(h_l), h_1 = sqrt(2/n_0) W_1 x."""
  model = dense.DenseMember((4, 3))
  x = _x()
  params = model.init(jax.random.PRNGKey(3), x)['params']
  w = [np.asarray(params[f'layer_{i}']['kernel'], np.float64) for i in range(3)]
  xn = np.asarray(x, np.float64)
  h1 = np.sqrt(2 / 5) * xn @ w[0]
  h2 = np.sqrt(2 / 4) * np.maximum(h1, 0) @ w[1]
  f = np.sqrt(1 / 3) * np.maximum(h2, 0) @ w[2]
  np.testing.assert_allclose(model.apply({'params': params}, x), f, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('widths,k', [((8, 8, 8), 1), ((5, 9, 3), 3)])
def test_ensemble_equals_separate_member_calls(widths, k):
  m = 4
  x = _x(7, 5)
  ens = dense.DenseEnsemble(m, widths, num_outputs=k)
  pe = ens.init(jax.random.PRNGKey(1), x)
  member = ens.member()
  assert member == dense.DenseMember(widths, num_outputs=k)
  outs = [member.apply(dense.member_params(pe, j), x) for j in range(m)]
  expected = sum(outs) / np.sqrt(m)
  np.testing.assert_allclose(ens.apply(pe, x), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ens.apply(pe, x, per_member=True), np.stack(outs), rtol=1e-5,
                             atol=1e-6)
  # A model assembled from independently initialized members.
  members = [member.init(jax.random.PRNGKey(10 + j), x) for j in range(m)]
  stacked = dense.stack_member_params(members)
  assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(pe)
  np.testing.assert_allclose(
      ens.apply(stacked, x), sum(member.apply(p, x) for p in members) / np.sqrt(m), rtol=1e-5,
      atol=1e-6)
  back = dense.unstack_member_params(stacked)
  assert len(back) == m
  for a, b in zip(back, members):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_init_statistics():
  """Kernels i.i.d. N(0, 1), members independent; output variance matches the NTK scaling."""
  ens = dense.DenseEnsemble(64, (64, 64))
  x = _x(3, 32)
  pe = ens.init(jax.random.PRNGKey(0), x)['params']
  w = np.asarray(pe['layer_1']['kernel'])  # (64, 64, 64)
  assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
  corr = np.corrcoef(w[0].ravel(), w[1].ravel())[0, 1]
  assert abs(corr) < 0.05
  # E[f(x)^2] = |x|^2 / n_0 for the ReLU NTK parameterization (He scaling preserves the norm).
  f = np.asarray(ens.apply({'params': pe}, x, per_member=True))[:, :, 0]  # (m, batch)
  expected = np.sum(np.asarray(x) ** 2, axis=1) / 32
  np.testing.assert_allclose(np.mean(f ** 2, axis=0), expected, rtol=0.35)


def test_float64_params():
  with x64():
    model = dense.DenseMember((3,), param_dtype=jnp.float64)
    x = jnp.ones((2, 4), jnp.float64)
    params = model.init(jax.random.PRNGKey(0), x)
    assert params['params']['layer_0']['kernel'].dtype == jnp.float64
    assert model.apply(params, x).dtype == jnp.float64


@pytest.mark.parametrize('build,match', [
    (lambda: dense.DenseMember(()), 'widths'),
    (lambda: dense.DenseMember((4, 0)), r'widths\[1\]'),
    (lambda: dense.DenseMember((4,), num_outputs=0), 'num_outputs'),
    (lambda: dense.DenseEnsemble(0, (4,)), 'm must be'),
    (lambda: dense.DenseEnsemble(2, (-1,)), 'widths'),
])
def test_validation_errors(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_input_validation():
  model = dense.DenseMember((3,))
  params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match='finite'):
    model.apply(params, jnp.array([[1.0, np.nan, 0, 0]]))
  with pytest.raises(ValueError, match='dimensions'):
    model.apply(params, jnp.ones((4,)))


def test_helper_validation():
  pe = dense.DenseEnsemble(3, (4,)).init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
  with pytest.raises(ValueError, match='j must be'):
    dense.member_params(pe, 3)
  with pytest.raises(ValueError, match='members'):
    dense.stack_member_params([])
  assert dense.num_members(pe) == 3
