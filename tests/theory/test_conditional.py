"""The conditional samplers draw the diagonal NTK entry with the law of the full-weight ones.

Different draws, same law: moments (mean, E[K^2]/E[K]^2) within Monte-Carlo error of the
full-weight samplers of ``ce_jax.theory.variance`` (which differentiate the module itself) and the
same distribution (two-sample Kolmogorov-Smirnov statistic), on the bottleneck (one path,
grouped, a 1x1 input, a zero-padded window) and dense members of several shapes. Seeds are
fixed, so the checks are deterministic; the thresholds are 4.5 standard errors.
"""

import jax
import numpy as np
import pytest

from ce_jax.theory import alpha
from ce_jax.theory import conditional
from ce_jax.design import presets
from ce_jax.theory import variance

TRIALS = 4000


def _samples(sampler, seed, trials=TRIALS):
  return np.asarray(variance.sample_over_inits(sampler, jax.random.PRNGKey(seed), trials,
                                               chunk_size=500), np.float64)[:, 0]


def _same_law(a, b):
  """Means and E[K^2]/E[K]^2 within 4.5 standard errors; KS statistic below its 1e-4 level."""
  for name, fa, fb in (('mean', a, b), ('second moment', a * a, b * b)):
    se = np.hypot(fa.std() / np.sqrt(len(fa)), fb.std() / np.sqrt(len(fb)))
    assert abs(fa.mean() - fb.mean()) < 4.5 * se, (name, fa.mean(), fb.mean(), se)
  grid = np.sort(np.concatenate([a, b]))
  ks = np.max(np.abs(np.searchsorted(np.sort(a), grid, 'right') / len(a)
                     - np.searchsorted(np.sort(b), grid, 'right') / len(b)))
  assert ks < 2.2 * np.sqrt(2.0 / min(len(a), len(b))), ks    # p ~ 1e-4


@pytest.mark.parametrize('cardinality,width,spatial', [(1, 1, 3), (1, 6, 3), (2, 3, 3),
                                                        (1, 4, 1), (1, 4, 4)])
def test_bottleneck_entry_has_the_law_of_the_full_weight_entry(cardinality, width, spatial):
  x = jax.random.normal(jax.random.PRNGKey(0), (1, spatial, spatial, 8))
  fast = conditional.bottleneck_diagonal_sampler([width], x, cardinality=cardinality)
  full = variance.bottleneck_diag_sampler(width, x, cardinality=cardinality, in_channels=8,
                                          out_channels=8)
  _same_law(_samples(fast, 1), _samples(full, 2))


@pytest.mark.parametrize('widths', [(4, 4), (3, 7, 5), (8,) * 5])
def test_dense_entry_has_the_law_of_the_full_weight_entry(widths):
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 12))
  fast = conditional.dense_diagonal_sampler([widths], x)
  full = variance.dense_diag_sampler(widths, x)
  _same_law(_samples(fast, 1), _samples(full, 2))


def test_an_entry_depends_on_its_trial_key_and_width_only():
  """Several widths in one program give each width's entry exactly as if it were alone."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 8))
  keys = variance.trial_keys(jax.random.PRNGKey(3), 0, 5)
  joint = jax.jit(jax.vmap(conditional.bottleneck_diagonal_sampler([4, 16, 2], x,
                                                               cardinality=2)))(keys)
  for i, n in enumerate([4, 16, 2]):
    alone = jax.jit(jax.vmap(conditional.bottleneck_diagonal_sampler([n], x,
                                                               cardinality=2)))(keys)
    np.testing.assert_allclose(joint[:, i], alone[:, 0], rtol=2e-6)
  xd = jax.random.normal(jax.random.PRNGKey(0), (1, 6))
  members = [(4, 4), (9, 2), (16, 16)]
  joint = jax.jit(jax.vmap(conditional.dense_diagonal_sampler(members, xd)))(keys)
  for i, w in enumerate(members):
    alone = jax.jit(jax.vmap(conditional.dense_diagonal_sampler([w], xd)))(keys)
    np.testing.assert_allclose(joint[:, i], alone[:, 0], rtol=2e-6)


def test_dead_layers_give_finite_entries():
  """At width 1 whole layers die (|a| = 0, then q = a / |a| is undefined): the entry is then
  exactly what the full weights give, the dead part contributing 0 (finite, never NaN)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 8))
  for sampler in (conditional.bottleneck_diagonal_sampler([1], x),
                  conditional.dense_diagonal_sampler([(1, 1, 1)], np.ones((1, 4)))):
    k = _samples(sampler, 0, 2000)
    assert np.all(np.isfinite(k)) and np.all(k >= 0)
    assert 0 < np.mean(k == 0) < 1    # dead initializations occurred, and live ones


def test_member_sampler_takes_the_conditional_path_where_it_applies():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 3, 8))
  ntk_member = presets.bottleneck(in_channels=8, out_channels=8)
  standard = presets.bottleneck(in_channels=8, out_channels=8, parameterization='standard')
  assert variance.batching(alpha.member_sampler(ntk_member, 4, x)) == 'vmap'   # no convolution
  assert variance.batching(alpha.member_sampler(ntk_member, 4, x, sampler='full_weights')
                           ) == 'sequential'
  assert variance.batching(alpha.member_sampler(standard, 4, x)) == 'sequential'
  assert conditional.sampler_for(standard.build(4), x) is None
  assert conditional.sampler_for(ntk_member.build(4), np.ones((2, 3, 3, 8))) is None
  with pytest.raises(ValueError, match="sampler='conditional' does not apply"):
    alpha.member_sampler(standard, 4, x, sampler='conditional')


def test_estimate_alpha_conditional_path_is_independent_of_the_chunk_size():
  kw = dict(widths=[4, 8, 16], trials=60, key=jax.random.PRNGKey(4), in_channels=8,
            out_channels=8)
  a = alpha.estimate_alpha('bottleneck', chunk_size=7, **kw)
  b = alpha.estimate_alpha('bottleneck', chunk_size=60, **kw)
  for p, q in zip(a.points, b.points):
    assert p.ratio == pytest.approx(q.ratio, rel=1e-6) and p.ratio > 1
  assert a.fit.alpha == pytest.approx(b.fit.alpha, rel=1e-6)
  full = alpha.estimate_alpha('bottleneck', chunk_size=60, sampler='full_weights', **kw)
  assert full.fit.alpha != pytest.approx(a.fit.alpha, rel=1e-6)   # other draws


def test_estimate_alpha_agrees_across_samplers_within_errors():
  """The fitted alpha of the two samplers agrees within their standard errors (dense, 2 seeds)."""
  kw = dict(widths=[4, 8, 16, 32], trials=400, depth=3, input_dim=16)
  for seed in (0, 1):
    a = alpha.estimate_alpha('dense', key=jax.random.PRNGKey(seed), **kw)
    b = alpha.estimate_alpha('dense', key=jax.random.PRNGKey(seed), sampler='full_weights', **kw)
    assert abs(a.fit.alpha - b.fit.alpha) < 4 * np.hypot(a.fit.alpha_stderr, b.fit.alpha_stderr)
