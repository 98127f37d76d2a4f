"""Infinite-width NTK of the dense member: closed forms, quadrature and wide-network Monte Carlo."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.theory import infinite
from ce_jax.models import dense
from conftest import enable_x64


@pytest.fixture
def x64():
  with enable_x64():
    yield


def _circle(num):
  g = np.linspace(-np.pi, np.pi, num)
  return np.stack([np.cos(g), np.sin(g)], axis=1)


def _quadrature_kernels(x1, x2, depth, num_phi=200_001):
  """Reference recursion whose Gaussian expectations are angular quadratures (~1e-5 accurate).

  For a centred 2-D Gaussian (u, v) = (a.z, b.z), z ~ N(0, I_2), in polar coordinates
  E[relu(u) relu(v)] = (1/pi) int_0^{2pi} relu(a.e) relu(b.e) dphi and
  E[step(u) step(v)] = (1/2pi) |{phi : a.e > 0, b.e > 0}| -- no arc-cosine formula involved.
  """
  phi = np.linspace(0, 2 * np.pi, num_phi, endpoint=False)
  e = np.stack([np.cos(phi), np.sin(phi)])
  n0 = x1.shape[1]
  out_ntk = np.zeros((len(x1), len(x2)))
  for i, a in enumerate(x1):
    for j, b in enumerate(x2):
      q1, q2, s = 2 * a @ a / n0, 2 * b @ b / n0, 2 * a @ b / n0
      theta = s
      for layer in range(1, depth):
        w2 = 1.0 if layer == depth - 1 else 2.0
        # Cholesky factors of [[q1, s], [s, q2]].
        va = np.array([np.sqrt(q1), 0.0])
        c2 = s / np.sqrt(q1)
        vb = np.array([c2, np.sqrt(max(q2 - c2 ** 2, 0.0))])
        u, v = va @ e, vb @ e
        e_phi = np.mean(np.maximum(u, 0) * np.maximum(v, 0)) * 2.0   # (1/pi) int = 2 * mean
        e_dphi = np.mean((u > 0) & (v > 0))
        s = w2 * e_phi
        theta = s + w2 * e_dphi * theta
        q1, q2 = w2 * q1 / 2, w2 * q2 / 2
      out_ntk[i, j] = theta
  return out_ntk


@pytest.mark.parametrize('depth', [2, 3, 5])
def test_diagonal_closed_form(x64, depth):
  x = np.random.default_rng(0).normal(size=(5, 7))
  k = np.asarray(infinite.infinite_ntk(x, depth=depth, backend='jax'))
  np.testing.assert_allclose(np.diag(k), depth * np.sum(x * x, 1) / 7, rtol=1e-12)
  np.testing.assert_allclose(k, k.T, rtol=1e-12)
  assert np.all(np.linalg.eigvalsh(k) > -1e-10)


@pytest.mark.parametrize('depth', [2, 4])
def test_against_angular_quadrature(x64, depth):
  x = _circle(9) * np.array([1.0, 1.3])
  x0 = np.array([[1.0, 0.0], [0.3, -0.8]])
  k = np.asarray(infinite.infinite_ntk(x0, x, depth=depth, backend='jax'))
  np.testing.assert_allclose(k, _quadrature_kernels(x0, x, depth), rtol=1e-4, atol=1e-6)


def test_against_wide_network_monte_carlo(x64):
  """Mean empirical NTK of wide members (own jax.grad, no ce_jax.theory.ntk) ~ infinite-width NTK."""
  # An entry's variance over initializations is O(1/n): 24 trials at n = 512 have the standard
  # error of 12 at n = 1024 (2.5% of the kernel's largest entry) for half the work (n^2 per
  # trial), and the O(1/n) finite-width bias (~0.6% here) stays within the 1% allowed below.
  depth, width, trials = 3, 512, 24
  x = _circle(7)
  module = dense.DenseMember((width,) * (depth - 1), param_dtype=jnp.float64)

  @jax.jit
  def ntk(key):
    params = module.init(key, x[:1])
    jac = jax.jacrev(lambda p: module.apply(p, x)[:, 0])(params)
    flat = jnp.concatenate([j.reshape(len(x), -1) for j in jax.tree_util.tree_leaves(jac)], 1)
    return flat @ flat.T

  ks = np.stack([np.asarray(ntk(k)) for k in jax.random.split(jax.random.PRNGKey(0), trials)])
  mean, se = ks.mean(0), ks.std(0, ddof=1) / np.sqrt(trials)
  ref = np.asarray(infinite.infinite_ntk(x, depth=depth, backend='jax'))
  # Allow 4 standard errors plus 1% (the finite-width bias).
  assert np.all(np.abs(mean - ref) <= 4 * se + 0.01 * np.abs(ref).max()), (mean, ref, se)


def test_nngp_and_float32():
  x = _circle(5).astype(np.float32)
  kern = infinite.infinite_kernels(x, depth=3, backend='jax')
  assert kern.ntk.shape == kern.nngp.shape == (5, 5)
  assert kern.ntk.dtype == jnp.float32
  np.testing.assert_allclose(np.diag(kern.nngp), 0.5, rtol=1e-6)  # readout: q/2, q = 2|x|^2/n0
  assert np.all(np.isfinite(np.asarray(kern.ntk)))


def test_zero_input_gives_zero_kernel(x64):
  x = np.array([[0.0, 0.0], [1.0, 0.0]])
  k = np.asarray(infinite.infinite_ntk(x, depth=3, backend='jax'))
  assert np.all(np.isfinite(k)) and np.allclose(k[0], 0.0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(depth=1), 'depth must be an integer >= 2'),
    (dict(depth=3, backend='torch'), 'backend must be one of'),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    infinite.infinite_ntk(np.ones((2, 3)), **kwargs)


def test_bad_inputs():
  with pytest.raises(ValueError, match='x1 must be finite'):
    infinite.infinite_ntk(np.array([[np.nan, 1.0]]), depth=2, backend='jax')
  with pytest.raises(ValueError, match='same input dimension'):
    infinite.infinite_ntk(np.ones((2, 3)), np.ones((2, 4)), depth=2, backend='jax')
  with pytest.raises(ValueError, match='x1 must have 2 dimensions'):
    infinite.infinite_ntk(np.ones(3), depth=2, backend='jax')
