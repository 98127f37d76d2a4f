"""Algorithm 1: the weighted log-linear fit of alpha, and the Monte-Carlo pipeline."""

import jax
import numpy as np
import pytest

from ce_jax.theory import alpha, variance
from ce_jax.design import blocks


def test_exact_data_gives_exact_alpha():
  s = np.array([0.01, 0.05, 0.2, 0.5])
  fit = alpha.fit_alpha(s, np.exp(1.6 * s), 0.01 * np.exp(1.6 * s), intercept=False)
  assert fit.alpha == pytest.approx(1.6, rel=1e-10)
  assert fit.r2 == pytest.approx(1.0) and fit.intercept == 0.0 and fit.num_points == 4
  fit2 = alpha.fit_alpha(s, np.exp(0.2 + 1.6 * s), None, intercept=True)
  assert fit2.alpha == pytest.approx(1.6, rel=1e-8)
  assert fit2.intercept == pytest.approx(0.2, rel=1e-8)


def test_planted_alpha_recovered_from_synthetic_monte_carlo():
  """Log-normal 'NTK entries' K = exp(sigma Z), sigma^2 = alpha S, have E[K^2]/E[K]^2 =
  exp(alpha S) exactly; moments + fit must recover the planted alpha within its stderr.

  (Widths with alpha S <~ 1 only: for much larger alpha S the log-normal tail makes 4000 draws
  underestimate E[K^2] and its stderr together, and the weighted fit is biased low.)"""
  planted = 3.65
  widths = (16, 32, 64, 128, 256)
  s = np.array([blocks.dense_uniform_fan_in_sum(n, 6) for n in widths])
  rng = np.random.default_rng(0)
  ratios, ses = [], []
  for si in s:
    k = np.exp(np.sqrt(planted * si) * rng.standard_normal(4000))
    mom = variance.moments_from_samples(k)
    ratios.append(mom.ratio)
    ses.append(mom.ratio_stderr)
  fit = alpha.fit_alpha(s, ratios, ses, intercept=False)
  assert abs(fit.alpha - planted) < 4 * fit.alpha_stderr, fit
  assert fit.alpha_stderr < 0.2 and fit.r2 > 0.95
  fit_i = alpha.fit_alpha(s, ratios, ses, intercept=True)
  assert abs(fit_i.intercept) < 4 * fit_i.intercept_stderr
  assert abs(fit_i.alpha - planted) < 4 * fit_i.alpha_stderr


def test_planted_alpha_with_gaussian_noise_on_ratios():
  planted = 1.6
  s = blocks.bottleneck_fan_in_sum(np.array([2, 4, 8, 16, 32, 64, 128, 256]))
  true = np.exp(planted * s)
  se = 0.01 * true
  fits = [alpha.fit_alpha(s, true + se * np.random.default_rng(i).standard_normal(len(s)), se)
          for i in range(200)]
  est = np.array([f.alpha for f in fits])
  assert abs(est.mean() - planted) < 0.01
  # The reported stderr matches the spread of the estimates.
  assert 0.7 < np.mean([f.alpha_stderr for f in fits]) / est.std() < 1.4


def test_estimate_alpha_small_bottleneck_and_dense():
  # Key, widths, input and chunk of test_conditional's estimate_alpha tests: the same programs
  # (compilation is the cost here), compiled once for the suite.
  est = alpha.estimate_alpha('bottleneck', (4, 8), 60, jax.random.PRNGKey(4), in_channels=8,
                             out_channels=8, chunk_size=60)
  assert est.block == 'bottleneck' and est.trials == 60 and len(est.points) == 2
  assert np.isfinite(est.fit.alpha) and est.fit.alpha > 0 and est.fit.alpha_stderr > 0
  p = est.points[0]
  assert p.width == 4 and p.fan_in_sum == pytest.approx(1 / 8 + 2 / 4)
  assert p.ratio > 1 and p.ratio_stderr > 0
  kern = alpha.estimate_alpha('bottleneck', (4,), 60, jax.random.PRNGKey(4), in_channels=8,
                              out_channels=8, fan_in_convention='kernel', chunk_size=60,
                              intercept=False)
  assert kern.points[0].fan_in_sum == pytest.approx(1 / 8 + 1 / 36 + 1 / 4)
  assert kern.points[0].ratio == pytest.approx(p.ratio)  # same Monte Carlo, other S
  dense = alpha.estimate_alpha('dense', (4, 8, 32), 50, jax.random.PRNGKey(0), depth=3,
                               input_dim=16, chunk_size=50)
  assert dense.points[2].fan_in_sum == pytest.approx(2 / 32)
  assert np.isfinite(dense.fit.alpha) and dense.fit.alpha > 0


@pytest.mark.parametrize('args, kwargs, match', [
    (([], [], []), {}, 'fan_in_sums must be a non-empty list'),
    (([0.1, 0.2], [1.1], [0.1]), {}, 'ratios must have the same length'),
    (([0.1, 0.2], [1.1, 1.2], [0.1]), {}, 'ratio_stderrs must have the same length'),
    (([0.1, np.nan], [1.1, 1.2], None), {}, 'fan_in_sums must be finite'),
    (([0.1, 0.2], [1.1, np.inf], None), {}, 'ratios must be finite'),
    (([0.1, 0.2], [1.1, -1.0], None), {}, r'ratios must be > 0, got \[-1.0\]'),
    (([0.1, -0.2], [1.1, 1.2], None), {}, 'fan_in_sums must be > 0'),
    (([0.1, 0.2], [1.1, 1.2], [0.1, 0.0]), {}, 'ratio_stderrs must be > 0'),
    (([0.1], [1.1], None), {'intercept': True}, 'needs at least 2 points'),
    (([0.1], [1.1], None), {}, 'needs at least 2 points'),
    (([[0.1]], [[1.1]], None), {}, 'fan_in_sums must be 1-dimensional'),
])
def test_fit_alpha_bad_input(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    alpha.fit_alpha(*args, **kwargs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(widths=(4, 0)), r'widths\[1\] must be an integer >= 1, got 0'),
    (dict(widths=()), 'widths must be a non-empty list'),
    (dict(widths=(4,), trials=1), 'trials must be an integer >= 2, got 1'),
    (dict(widths=(4,), block='conv'), 'block must be one of dense, bottleneck'),
    (dict(widths=(4,), fan_in_convention='taps'), 'fan_in_convention must be one of'),
    (dict(widths=(4,), block='dense', depth=1), 'depth must be an integer >= 2'),
    (dict(widths=(4,), input_distribution='uniform'), 'input_distribution must be one of'),
])
def test_estimate_alpha_bad_input(kwargs, match):
  args = dict(block='bottleneck', trials=4, key=jax.random.PRNGKey(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    alpha.estimate_alpha(**args)


def test_block_inputs():
  key = jax.random.PRNGKey(0)
  g = alpha.block_input('bottleneck', key, in_channels=4)
  assert g.shape == (1, 3, 3, 4)
  assert np.all(np.asarray(alpha.block_input('bottleneck', key, in_channels=4,
                                             input_distribution='relu')) >= 0)
  c = np.asarray(alpha.block_input('bottleneck', key, in_channels=4,
                                   input_distribution='center_pixel'))
  k = np.asarray(alpha.block_input('bottleneck', key, in_channels=4,
                                   input_distribution='constant'))
  assert np.count_nonzero(c[0, :, :, 0]) == 1 and c[0, 1, 1, 0] != 0
  np.testing.assert_array_equal(k[0], np.broadcast_to(c[0, 1, 1], (3, 3, 4)))
  assert alpha.block_input('dense', key, input_dim=5, num_inputs=2).shape == (2, 5)


def test_fan_in_sums_on_a_grid_equal_one_trace_per_width_and_the_closed_forms():
  """The plot's S(n) grid (one count model) is exactly fan_in_sum width by width, and the
  closed forms of Assumption 1 (dense: (L - 1)/n; bottleneck: 1/c_in + 2/n, or with the 3x3
  kernel's 9 n fan-in for 'kernel')."""
  dense_w, bottleneck_w = np.array([3, 4, 17, 64, 200]), np.array([1, 4, 10, 33, 128])
  dense = alpha.fan_in_sums('dense', dense_w, depth=4)
  np.testing.assert_array_equal(dense, [alpha.fan_in_sum('dense', int(n), depth=4)
                                        for n in dense_w])
  np.testing.assert_allclose(dense, [blocks.dense_uniform_fan_in_sum(n, 4) for n in dense_w],
                             rtol=1e-12)
  for conv in ('channels', 'kernel'):
    got = alpha.fan_in_sums('bottleneck', bottleneck_w, fan_in_convention=conv)
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_array_equal(got, [alpha.fan_in_sum('bottleneck', int(n),
                                                         fan_in_convention=conv)
                                        for n in bottleneck_w])
    np.testing.assert_allclose(got, blocks.bottleneck_fan_in_sum(bottleneck_w, 256, conv),
                               rtol=1e-12)
