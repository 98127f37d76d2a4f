"""The pure-JAX ReLU recursion equals neural-tangents' stax kernel (nt marker: make test-nt)."""


import numpy as np
import pytest

from ce_jax.theory import infinite
from conftest import enable_x64


@pytest.mark.nt
@pytest.mark.parametrize('depth', [2, 3, 4, 6])
def test_jax_equals_stax(depth):
  rng = np.random.default_rng(depth)
  x1 = rng.normal(size=(6, 5))
  x2 = np.concatenate([rng.normal(size=(3, 5)), -x1[:1], 2 * x1[1:2]])
  with enable_x64():
    a = infinite.infinite_kernels(x1, x2, depth=depth, backend='jax')
    b = infinite.infinite_kernels(x1, x2, depth=depth, backend='nt')
    np.testing.assert_allclose(np.asarray(a.ntk), np.asarray(b.ntk), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.asarray(a.nngp), np.asarray(b.nngp), rtol=1e-6, atol=1e-9)


@pytest.mark.nt
def test_auto_is_jax_and_fig2_inputs_agree_with_stax():
  g = np.linspace(-np.pi, np.pi, 21)
  xg = np.stack([np.cos(g), np.sin(g)], 1)
  x0 = np.array([[1.0, 0.0]])
  assert infinite._resolve_backend('auto') == 'jax'  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(infinite.infinite_ntk(x0, xg, depth=4)),
                             np.asarray(infinite.infinite_ntk(x0, xg, depth=4, backend='nt')),
                             rtol=1e-5, atol=1e-6)


def test_stax_member_validates():
  with pytest.raises(ValueError, match='depth must be an integer >= 2'):
    infinite.stax_member(1)
  with pytest.raises(ValueError, match='width must be an integer >= 1'):
    infinite.stax_member(3, width=0)
