"""Tests of ce_jax.theory.ntk with the pure-JAX and structured backends (no neural-tangents needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.theory import ntk
from ce_jax.models import dense
from conftest import enable_x64


x64 = enable_x64

IMPLS = ('jacobian_contraction', 'ntk_vector_products')


# Inputs and parameters come from numpy: jax.random outside jit compiles one program per
# shape and dtype (most of these tests' time went there); the identities hold for any values.

def _x(n, d=5, seed=0, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((n, d)), dtype)


def _init(model, x, seed):
  """Parameters of ``model``'s tree (and dtypes) with N(0, 1) entries, the law of its kernels."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)   # traced, not compiled
  return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype),
                                shapes)


def _rel(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_linear_model_analytic():
  """f(w, x) = x w with w (d, k): K(x, x') = x . x' (traced over k, normalized by k)."""
  def apply_fn(w, x):
    return x @ w
  w = jnp.ones((5, 3))
  x1, x2 = _x(4), _x(3, seed=1)
  expected = np.asarray(x1) @ np.asarray(x2).T
  for impl in IMPLS:
    for vmap_axes in (None, 0):
      k = ntk.empirical_ntk_fn(apply_fn, backend='jax', implementation=impl,
                               vmap_axes=vmap_axes)(x1, x2, w)
      np.testing.assert_allclose(k, expected, rtol=1e-5, atol=1e-5)
    full = ntk.empirical_ntk_fn(apply_fn, backend='jax', implementation=impl,
                                trace_axes=())(x1, x2, w)
    np.testing.assert_allclose(full, expected[:, :, None, None] * np.eye(3), rtol=1e-5,
                               atol=1e-5)
  np.testing.assert_allclose(ntk.ntk_diagonal_fn(apply_fn, backend='jax')(x1, w),
                             np.sum(np.asarray(x1) ** 2, 1), rtol=1e-5)


def test_one_hidden_layer_analytic():
  """Depth-2 member, scalar output, by hand: K = c0^2 (x.x') sum_j c1^2 w_j^2 1[h_j>0]1[h'_j>0]
  + c1^2 phi(h).phi(h')."""
  with x64():
    model = dense.DenseMember((7,), param_dtype=jnp.float64)
    x = _x(4, dtype=jnp.float64)
    params = _init(model, x, 2)
    w0 = np.asarray(params['params']['layer_0']['kernel'])
    w1 = np.asarray(params['params']['layer_1']['kernel'])[:, 0]
    xn = np.asarray(x)
    c0, c1 = np.sqrt(2 / 5), np.sqrt(1 / 7)
    h = c0 * xn @ w0
    a, on = np.maximum(h, 0), (h > 0).astype(float)
    expected = c0 ** 2 * (xn @ xn.T) * ((on * c1 ** 2 * w1 ** 2) @ on.T) + c1 ** 2 * a @ a.T
    for backend in ('jax', 'structured'):
      for impl in IMPLS:
        k = ntk.empirical_ntk_fn(model.apply, backend=backend, implementation=impl)(x, None,
                                                                                   params)
        np.testing.assert_allclose(k, expected, rtol=1e-10)


def test_ensemble_ntk_equals_aggregated_model_ntk():
  """Eq. 4: vmap-mean of member NTKs == NTK of (1/sqrt m) sum_j f_j over concatenated params.

  Two outputs (the trace over them and its 1/k). One output runs the same code: k is only an
  array dimension there, with no branch on it (its kernels meet closed forms in
  test_one_hidden_layer_analytic)."""
  with x64():
    m, widths, k_out = 3, (6, 4), 2
    x1, x2 = _x(5, dtype=jnp.float64), _x(4, seed=1, dtype=jnp.float64)
    member = dense.DenseMember(widths, k_out, param_dtype=jnp.float64)
    ens = dense.DenseEnsemble(m, widths, k_out, param_dtype=jnp.float64)
    stacked = dense.stack_member_params(
        [_init(member, x1, 10 + j) for j in range(m)])
    aggregated = ntk.empirical_ntk_fn(ens.apply, backend='jax', vmap_axes=0)(x1, x2, stacked)
    for backend in ('jax', 'structured'):
      for impl in IMPLS:
        k_e = ntk.ensemble_ntk_fn(member.apply, backend=backend, implementation=impl)(
            x1, x2, stacked)
        assert _rel(k_e, aggregated) < 1e-10, (backend, impl)
    chunked = ntk.ensemble_ntk_fn(member.apply, backend='jax', vmap_axes=0,
                                  member_batch_size=2)(x1, x2, stacked)
    assert _rel(chunked, aggregated) < 1e-10
    # The mean of separately computed member NTKs, and the structured ensemble model.
    single = ntk.empirical_ntk_fn(member.apply, backend='jax')
    loop = sum(single(x1, x2, dense.member_params(stacked, j)) for j in range(m)) / m
    assert _rel(loop, aggregated) < 1e-10
    structured = ntk.empirical_ntk_fn(ens.apply, backend='structured')(x1, x2, stacked)
    assert _rel(structured, aggregated) < 1e-10


def test_backends_and_implementations_agree_float64():
  with x64():
    model = dense.DenseMember((6, 3, 5), num_outputs=3, param_dtype=jnp.float64)
    x1, x2 = _x(5, dtype=jnp.float64), _x(3, seed=1, dtype=jnp.float64)
    params = _init(model, x1, 0)
    for trace_axes in ((-1,), ()):
      ref = ntk.empirical_ntk_fn(model.apply, backend='jax', trace_axes=trace_axes)(x1, x2,
                                                                                   params)
      assert ref.shape == ((5, 3) if trace_axes else (5, 3, 3, 3))
      variants = [('structured', 'jacobian_contraction', None), ('jax', 'jacobian_contraction', 0),
                  ('jax', 'ntk_vector_products', None)]
      if trace_axes:
        variants.append(('jax', 'ntk_vector_products', 0))
      for backend, impl, vmap_axes in variants:
        k = ntk.empirical_ntk_fn(model.apply, backend=backend, implementation=impl,
                                 vmap_axes=vmap_axes, trace_axes=trace_axes)(x1, x2, params)
        assert _rel(k, ref) < 1e-10, (backend, impl, vmap_axes, trace_axes)


def test_symmetric_psd():
  model = dense.DenseEnsemble(2, (16, 16))
  x = _x(10)
  params = _init(model, x, 0)
  for backend in ('jax', 'structured'):
    k = np.asarray(ntk.empirical_ntk_fn(model.apply, backend=backend, vmap_axes=0)(x, None,
                                                                                  params),
                   np.float64)
    assert k.shape == (10, 10)
    np.testing.assert_allclose(k, k.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh((k + k.T) / 2).min() > -1e-4 * np.abs(k).max()


def test_diagonal_equals_diag_of_full():
  """Both backends against the diagonal of the full NTK (computed once for both)."""
  with x64():
    m, widths = 3, (5, 4)
    x = _x(6, dtype=jnp.float64)
    member = dense.DenseMember(widths, 2, param_dtype=jnp.float64)
    params = _init(member, x, 0)
    full_fn = ntk.empirical_ntk_fn(member.apply, backend='jax')
    full = full_fn(x, None, params)
    full_k = ntk.empirical_ntk_fn(member.apply, backend='jax', trace_axes=())(x, None, params)
    # Many initializations at once (Monte Carlo), with and without chunking.
    stacked = dense.stack_member_params([_init(member, x, j) for j in range(m)])
    expected = np.stack([np.diag(full_fn(x, None, dense.member_params(stacked, j)))
                         for j in range(m)])
    for backend in ('jax', 'structured'):
      diag = ntk.ntk_diagonal_fn(member.apply, backend=backend)(x, params)
      assert diag.shape == (6,)
      assert _rel(diag, np.diag(full)) < 1e-12, backend
      chunked = ntk.ntk_diagonal_fn(member.apply, backend=backend, batch_size=4)(x, params)
      assert _rel(chunked, np.diag(full)) < 1e-12, backend
      diag_k = ntk.ntk_diagonal_fn(member.apply, backend=backend, trace_axes=())(x, params)
      assert _rel(diag_k, np.stack([full_k[i, i] for i in range(6)])) < 1e-12, backend
      for batch_size in (None, 2):
        got = ntk.ntk_diagonal_fn(member.apply, backend=backend, stacked=True,
                                  batch_size=batch_size)(x, stacked)
        assert got.shape == (m, 6)
        assert _rel(got, expected) < 1e-12, (backend, batch_size)
      ens = ntk.ensemble_ntk_diagonal_fn(member.apply, backend=backend)(x, stacked)
      assert _rel(ens, expected.mean(0)) < 1e-12, backend


def test_auto_backend_resolution():
  model = dense.DenseMember((4,))
  assert ntk.resolve_backend(model.apply) == 'structured'
  assert ntk.structured_applies(dense.DenseEnsemble(2, (4,)).apply)
  other = ntk.resolve_backend(lambda p, x: model.apply(p, x))
  assert other == 'jax'   # 'nt' only when asked for, even where neural-tangents imports
  assert {'jax', 'structured'} <= set(ntk.available_backends())


def test_errors():
  model = dense.DenseMember((4,))
  x = _x(3)
  params = _init(model, x, 0)
  with pytest.raises(ValueError, match='backend must be one of'):
    ntk.empirical_ntk_fn(model.apply, backend='torch')
  with pytest.raises(ValueError, match='implementation must be one of'):
    ntk.empirical_ntk_fn(model.apply, backend='jax', implementation='magic')
  with pytest.raises(ValueError, match='structured'):
    ntk.empirical_ntk_fn(lambda p, x: model.apply(p, x), backend='structured')
  with pytest.raises(ValueError, match='vmap_axes'):
    ntk.empirical_ntk_fn(model.apply, backend='jax', vmap_axes='batch')
  with pytest.raises(ValueError, match='trace_axes'):
    ntk.empirical_ntk_fn(model.apply, backend='jax', trace_axes=(1, 2))
  fn = ntk.empirical_ntk_fn(model.apply, backend='jax')
  with pytest.raises(ValueError, match='x1 and x2 must match'):
    fn(x, jnp.ones((3, 6)), params)
  with pytest.raises(ValueError, match='x2 must be finite'):
    fn(x, x.at[0, 0].set(jnp.inf), params)
  with pytest.raises(ValueError, match='x1 must be finite'):
    ntk.ntk_diagonal_fn(model.apply, backend='jax')(x.at[1, 1].set(jnp.nan), params)
  with pytest.raises(ValueError, match='leading member axis'):
    ntk.ensemble_ntk_fn(model.apply, backend='jax')(x, None, {'a': jnp.ones(3), 'b': 1.0})
  with pytest.raises(ValueError, match='batch_size'):
    ntk.ntk_diagonal_fn(model.apply, batch_size=0)
  if 'nt' not in ntk.available_backends():
    with pytest.raises(ValueError, match='neural-tangents'):
      ntk.empirical_ntk_fn(model.apply, backend='nt')


def test_auto_chunking_paths_are_exact(monkeypatch):
  """With a tiny memory budget 'auto' maps over chunks (jax.lax.map): same numbers."""
  with x64():
    member = dense.DenseMember((4, 3), param_dtype=jnp.float64)
    x = _x(5, dtype=jnp.float64)
    stacked = dense.stack_member_params([_init(member, x, j) for j in range(3)])
    generic = lambda p, xx: member.apply(p, xx)
    ens_ref = ntk.ensemble_ntk_fn(generic, backend='jax', member_batch_size=None)(x, None, stacked)
    first = dense.member_params(stacked, 0)
    diag_ref = ntk.ntk_diagonal_fn(generic, backend='jax', batch_size=None)(x, first)
    mc_ref = ntk.ntk_diagonal_fn(generic, backend='jax', stacked=True, batch_size=None)(x, stacked)
    monkeypatch.setattr(ntk, '_AUTO_GRADIENT_FLOATS', 1)
    monkeypatch.setattr(ntk, '_AUTO_JACOBIAN_FLOATS', 1)
    assert _rel(ntk.ensemble_ntk_fn(generic, backend='jax')(x, None, stacked), ens_ref) < 1e-12
    assert _rel(ntk.ntk_diagonal_fn(generic, backend='jax')(x, first), diag_ref) < 1e-12
    assert _rel(ntk.ntk_diagonal_fn(generic, backend='jax', stacked=True)(x, stacked),
                mc_ref) < 1e-12
