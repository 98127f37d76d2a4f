"""The neural-tangents and pure-JAX backends of ce_jax.theory.ntk agree (reference stack: make test-nt)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.theory import ntk
from ce_jax.models import dense
from conftest import enable_x64


x64 = enable_x64

pytestmark = pytest.mark.nt   # skipped (with the reason) where neural-tangents does not import

IMPLS = ('jacobian_contraction', 'ntk_vector_products')


class _SmallConv(nn.Module):
  """Conv -> ReLU -> grouped conv -> ReLU -> global average -> dense (2 outputs)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), param_dtype=jnp.float64)(x))
    x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=2, param_dtype=jnp.float64)(x))
    return nn.Dense(2, param_dtype=jnp.float64)(jnp.mean(x, axis=(1, 2)))


def _rel(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _models():
  member = dense.DenseMember((6, 5), num_outputs=2, param_dtype=jnp.float64)
  conv = _SmallConv()
  return [('dense', member, (4, 5), (3, 5)), ('conv', conv, (3, 5, 5, 2), (2, 5, 5, 2))]


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('vmap_axes', [None, 0])
def test_nt_and_jax_agree_float64(impl, vmap_axes):
  with x64():
    for name, model, s1, s2 in _models():
      x1 = jax.random.normal(jax.random.PRNGKey(0), s1, jnp.float64)
      x2 = jax.random.normal(jax.random.PRNGKey(1), s2, jnp.float64)
      params = model.init(jax.random.PRNGKey(2), x1)
      apply_fn = lambda p, x, model=model: model.apply(p, x)  # generic (not the structured path)
      for trace_axes in ((-1,), ()) if vmap_axes == 0 else ((-1,),):
        got = {b: ntk.empirical_ntk_fn(apply_fn, backend=b, implementation=impl,
                                       vmap_axes=vmap_axes, trace_axes=trace_axes)(x1, x2, params)
               for b in ('nt', 'jax')}
        assert got['nt'].shape == got['jax'].shape
        assert _rel(got['jax'], got['nt']) < 1e-5, (name, trace_axes)
      diag_nt = ntk.ntk_diagonal_fn(apply_fn, backend='nt')(x1, params)
      diag_jax = ntk.ntk_diagonal_fn(apply_fn, backend='jax')(x1, params)
      assert _rel(diag_jax, diag_nt) < 1e-5, name


def test_structured_equals_nt_for_dense_models():
  with x64():
    x1 = jax.random.normal(jax.random.PRNGKey(0), (5, 6), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (4, 6), jnp.float64)
    ens = dense.DenseEnsemble(3, (8, 8, 8), param_dtype=jnp.float64)
    params = ens.init(jax.random.PRNGKey(2), x1)
    ref = ntk.empirical_ntk_fn(ens.apply, backend='nt', vmap_axes=0)(x1, x2, params)
    assert ntk.resolve_backend(ens.apply) == 'structured'
    assert _rel(ntk.empirical_ntk_fn(ens.apply)(x1, x2, params), ref) < 1e-10
    member = ens.member()
    assert _rel(ntk.ensemble_ntk_fn(member.apply)(x1, x2, params), ref) < 1e-10
    assert _rel(ntk.ensemble_ntk_fn(member.apply, backend='nt', vmap_axes=0)(x1, x2, params),
                ref) < 1e-10
    diag = ntk.ntk_diagonal_fn(ens.apply, backend='nt')(x1, params)
    assert _rel(ntk.ntk_diagonal_fn(ens.apply)(x1, params), diag) < 1e-10
    assert _rel(diag, np.diag(ntk.empirical_ntk_fn(ens.apply, backend='nt')(x1, None, params))
                ) < 1e-10
