"""The NTK-parameterized bottleneck block used by Algorithm 1."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.design import blocks
from ce_jax.models.bottleneck import NTKBottleneck
from conftest import enable_x64


def _numpy_block(params, x, cardinality):
  """Independent reference: explicit padding and per-group sums in numpy (float64)."""
  p = {k: np.asarray(v['kernel'], np.float64) for k, v in params['params'].items()}
  x = np.asarray(x, np.float64)
  relu = lambda a: np.maximum(a, 0)
  h = np.sqrt(2 / x.shape[-1]) * np.einsum('nhwc,cd->nhwd', x, p['conv1'][0, 0])
  h = relu(h)
  nb, hh, ww, d = h.shape
  gin = d // cardinality
  pad = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros_like(h)
  w2 = p['conv2']  # (3, 3, gin, d)
  gout = d // cardinality
  for g in range(cardinality):
    for i in range(3):
      for j in range(3):
        patch = pad[:, i:i + hh, j:j + ww, g * gin:(g + 1) * gin]
        out[..., g * gout:(g + 1) * gout] += np.einsum(
            'nhwc,cd->nhwd', patch, w2[i, j, :, g * gout:(g + 1) * gout])
  h = relu(np.sqrt(2 / (9 * gin)) * out)
  return np.sqrt(2 / d) * np.einsum('nhwc,cd->nhwd', h, p['conv3'][0, 0])


@pytest.mark.parametrize('cardinality, width', [(1, 4), (3, 2)])
def test_shapes_counts_and_forward(cardinality, width):
  x = np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32)
  mod = NTKBottleneck(cardinality, width, in_channels=6, out_channels=5, readout='none')
  params = mod.init(jax.random.PRNGKey(0), x)
  d = cardinality * width
  shapes = {k: v['kernel'].shape for k, v in params['params'].items()}
  assert shapes == {'conv1': (1, 1, 6, d), 'conv2': (3, 3, width, d), 'conv3': (1, 1, d, 5)}
  n_params = sum(v.size for v in jax.tree_util.tree_leaves(params))
  assert n_params == cardinality * blocks.bottleneck_path_params(width, 6, 5)
  y = mod.apply(params, x)
  assert y.shape == (2, 4, 5, 5)
  np.testing.assert_allclose(np.asarray(y), _numpy_block(params, x, cardinality),
                             rtol=2e-4, atol=2e-5)


def test_center_readout():
  x = np.random.default_rng(1).normal(size=(3, 5, 5, 8)).astype(np.float32)
  full = NTKBottleneck(1, 4, 8, 8, readout='none')
  centre = NTKBottleneck(1, 4, 8, 8)
  params = full.init(jax.random.PRNGKey(1), x)
  y = centre.apply(params, x)
  assert y.shape == (3, 1)
  np.testing.assert_allclose(np.asarray(y)[:, 0], np.asarray(full.apply(params, x))[:, 2, 2, 0])
  # The centre unit only sees the centre 3x3 window: a 3x3 crop gives the same value.
  np.testing.assert_allclose(np.asarray(centre.apply(params, x[:, 1:4, 1:4])), np.asarray(y),
                             rtol=1e-5, atol=1e-6)


def test_grouped_block_is_collegial_ensemble_of_paths():
  """m paths of width n == (1/sqrt(m)) sum of m single-path blocks with the sliced weights."""
  m, n, cin, cout = 3, 2, 4, 5
  x = np.random.default_rng(2).normal(size=(2, 3, 3, cin)).astype(np.float32)
  grouped = NTKBottleneck(m, n, cin, cout, readout='none')
  single = NTKBottleneck(1, n, cin, cout, readout='none')
  p = grouped.init(jax.random.PRNGKey(2), x)['params']
  total = 0
  for j in range(m):
    sl = slice(j * n, (j + 1) * n)
    pj = {'conv1': {'kernel': p['conv1']['kernel'][..., sl]},
          'conv2': {'kernel': p['conv2']['kernel'][..., sl]},
          'conv3': {'kernel': p['conv3']['kernel'][:, :, sl, :]}}
    total = total + single.apply({'params': pj}, x)
  np.testing.assert_allclose(np.asarray(grouped.apply({'params': p}, x)),
                             np.asarray(total) / np.sqrt(m), rtol=1e-5, atol=1e-6)


def test_activations_keep_unit_scale():
  x = np.random.default_rng(3).normal(size=(4, 3, 3, 64)).astype(np.float32)
  mod = NTKBottleneck(1, 256, 64, 64, readout='none')
  y = mod.apply(mod.init(jax.random.PRNGKey(3), x), x)
  # ReLU nets with gain 2 preserve the second moment: E[y^2] ~ 2 E[relu(h)^2] ~ E[x^2] ~ 1.
  assert 0.5 < float(jnp.mean(y ** 2)) < 2.0


def test_float64():
  with enable_x64():
    x = np.ones((1, 3, 3, 4))
    mod = NTKBottleneck(2, 2, 4, 4, param_dtype=jnp.float64)
    y = mod.apply(mod.init(jax.random.PRNGKey(0), x), x)
    assert y.dtype == jnp.float64


@pytest.mark.parametrize('kwargs, match', [
    (dict(cardinality=0, width=4), 'cardinality must be an integer >= 1, got 0'),
    (dict(cardinality=1, width=0), 'width must be an integer >= 1, got 0'),
    (dict(cardinality=1, width=4, in_channels=0), 'in_channels must be an integer >= 1'),
    (dict(cardinality=1, width=4, out_channels=-1), 'out_channels must be an integer >= 1'),
    (dict(cardinality=1, width=4, readout='mean'), 'readout must be one of center, none'),
])
def test_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    NTKBottleneck(**kwargs)


def test_bad_inputs():
  mod = NTKBottleneck(1, 4, 8, 8)
  with pytest.raises(ValueError, match='x must have 8 channels'):
    mod.init(jax.random.PRNGKey(0), np.ones((1, 3, 3, 4)))
  with pytest.raises(ValueError, match='x must have 4 dimensions'):
    mod.init(jax.random.PRNGKey(0), np.ones((3, 3, 8)))
  with pytest.raises(ValueError, match='x must be finite'):
    mod.init(jax.random.PRNGKey(0), np.full((1, 3, 3, 8), np.nan))
