"""NTK moments over initializations, the Neural Mean Kernel, and the variance law Eq. 11."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.theory import infinite, variance

# One chi-square law for the synthetic samplers of all tests: with the same chunk sizes their
# programs compile once (the suite's compilation cache serves the later tests).
DOF = 2


def _gamma_sampler(dof=DOF):
  """Synthetic 'NTK entries': chi-square(dof) draws (3 of them), cheap to sample.

  E[K] = dof, Var K = 2 dof, E[K^2]/E[K]^2 = 1 + 2/dof.
  """
  dof = int(dof)

  def sample(key):
    return jnp.sum(jax.random.normal(key, (dof, 3)) ** 2, axis=0)
  return sample


def test_moments_recover_known_distribution():
  m = variance.ntk_moments(_gamma_sampler(), jax.random.PRNGKey(0), 4000, chunk_size=500)
  assert m.trials == 4000 and m.mean.shape == (3,)
  for est, se, true in [(m.mean, m.mean_stderr, DOF), (m.var, m.var_stderr, 2.0 * DOF),
                        (m.ratio, m.ratio_stderr, 1 + 2.0 / DOF)]:
    assert np.all(np.abs(est - true) < 4 * se), (est, se, true)
  np.testing.assert_allclose(m.log_ratio, np.log(m.ratio))
  np.testing.assert_allclose(m.log_ratio_stderr, m.ratio_stderr / m.ratio)


def test_ratio_stderr_matches_spread_over_repetitions():
  """The delta-method stderr of the ratio matches the spread of independent estimates."""
  samples = variance.sample_over_inits(_gamma_sampler(), jax.random.PRNGKey(0), 12000,
                                      chunk_size=500)
  reps = [variance.moments_from_samples(s) for s in np.split(np.asarray(samples), 30)]
  spread = np.std([r.ratio[0] for r in reps], ddof=1)
  mean_se = np.mean([r.ratio_stderr[0] for r in reps])
  assert 0.6 < mean_se / spread < 1.6, (mean_se, spread)


def test_stderr_shrinks_like_inverse_sqrt_trials():
  sampler = _gamma_sampler()
  small = variance.neural_mean_kernel(sampler, jax.random.PRNGKey(1), 250, chunk_size=50)
  large = variance.neural_mean_kernel(sampler, jax.random.PRNGKey(2), 4000, chunk_size=500)
  ratio = small.stderr / large.stderr
  assert np.all((ratio > 4 * 0.8) & (ratio < 4 * 1.25)), ratio
  m_small = variance.ntk_moments(sampler, jax.random.PRNGKey(1), 250, chunk_size=50)
  m_large = variance.ntk_moments(sampler, jax.random.PRNGKey(2), 4000, chunk_size=500)
  r = m_small.ratio_stderr / m_large.ratio_stderr
  assert np.all((r > 4 * 0.6) & (r < 4 * 1.6)), r


def test_chunking_does_not_change_results():
  # 50 trials: in chunks of 7 and 8 (a last partial chunk) and in one chunk of 50 (the program
  # of the test above).
  sampler = _gamma_sampler()
  key = jax.random.PRNGKey(3)
  a = variance.sample_over_inits(sampler, key, 50, chunk_size=7)
  b = variance.sample_over_inits(sampler, key, 50, chunk_size=64)
  calls = []
  c = variance.sample_over_inits(sampler, key, 50, chunk_size=8,
                                 progress=lambda d, t: calls.append((d, t)))
  assert a.shape == (50, 3)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(a, c, rtol=1e-6)
  assert calls[-1] == (50, 50) and len(calls) == 7
  nmk = variance.neural_mean_kernel(sampler, key, 50, chunk_size=7)
  nmk2 = variance.neural_mean_kernel(sampler, key, 50, chunk_size=8, progress=lambda d, t: None)
  ref = np.asarray(a, np.float64)
  np.testing.assert_allclose(nmk.mean, ref.mean(0), rtol=1e-5)
  np.testing.assert_allclose(nmk.stderr, ref.std(0, ddof=1) / np.sqrt(50), rtol=1e-4)
  np.testing.assert_allclose(nmk2.mean, nmk.mean, rtol=1e-5)


def test_ensemble_variance_is_member_variance_over_m():
  """Eq. 11: Var(K_e) = Var(K)/m, K_e the NTK of ONE m-member ensemble module."""
  x = np.array([[1.0, 0.0], [0.6, 0.8]])
  widths, m, trials = (8, 8), 4, 200
  single = variance.ntk_moments(variance.dense_ntk_sampler(widths, x), jax.random.PRNGKey(0),
                                trials, chunk_size=100)
  ens = variance.ntk_moments(variance.dense_ntk_sampler(widths, x, m=m), jax.random.PRNGKey(1),
                             trials, chunk_size=100)
  r, se = variance.variance_ratio(ens, single)
  assert r.shape == (2, 2)
  assert np.all(np.abs(r * m - 1.0) < 4 * se * m), (r * m, se * m)
  # Same mean (both estimate the NMK).
  diff = np.abs(ens.mean - single.mean)
  assert np.all(diff < 4 * np.hypot(ens.mean_stderr, single.mean_stderr))


def test_nmk_close_to_infinite_width_ntk():
  """NMK of moderately wide members ~ infinite-width NTK within a few stderr (+ O(1/n) bias)."""
  g = np.linspace(-np.pi, np.pi, 7)
  xg = np.stack([np.cos(g), np.sin(g)], 1)
  x0 = np.array([[1.0, 0.0]])
  nmk = variance.neural_mean_kernel(variance.dense_ntk_sampler((128, 128, 128), x0, xg),
                                    jax.random.PRNGKey(0), 32, chunk_size=32)
  ref = np.asarray(infinite.infinite_ntk(x0, xg, depth=4, backend='jax'), np.float64)
  assert nmk.mean.shape == (1, 7)
  assert np.all(np.abs(nmk.mean - ref) < 4 * nmk.stderr + 0.02 * ref.max()), (nmk.mean, ref)


def test_diag_samplers_match_full_ntk():
  x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  key = jax.random.PRNGKey(5)
  full = variance.dense_ntk_sampler((16, 16), x)(key)
  diag = variance.dense_diag_sampler((16, 16), x)(key)
  np.testing.assert_allclose(np.diag(np.asarray(full)), np.asarray(diag), rtol=1e-4)


def test_bottleneck_diag_sampler_is_squared_gradient_norm():
  from ce_jax.models.bottleneck import NTKBottleneck
  x = np.random.default_rng(1).normal(size=(2, 3, 3, 8)).astype(np.float32)
  sampler = variance.bottleneck_diag_sampler(4, x, in_channels=8, out_channels=8)
  mod = NTKBottleneck(1, 4, 8, 8)

  @jax.jit   # the sampler and the reference in one program (one compilation, not op by op)
  def sampler_and_reference(key):
    params = mod.init(key, x[:1])
    grads = [jax.grad(lambda p, i=i: mod.apply(p, x[i:i + 1])[0, 0])(params) for i in range(2)]
    ref = jnp.stack([sum(jnp.sum(l ** 2) for l in jax.tree_util.tree_leaves(g)) for g in grads])
    return sampler(key), ref
  k, ref = sampler_and_reference(jax.random.PRNGKey(2))
  assert k.shape == (2,)
  np.testing.assert_allclose(np.asarray(k), np.asarray(ref), rtol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(trials=1), 'trials must be an integer >= 2'),
    (dict(trials=0), 'trials must be an integer >= 2'),
    (dict(trials=10, chunk_size=0), 'chunk_size must be an integer >= 1'),
    (dict(trials=2.5), 'trials must be an integer >= 2'),
])
def test_bad_counts(kwargs, match):
  for fn in (variance.ntk_moments, variance.neural_mean_kernel):
    with pytest.raises(ValueError, match=match):
      fn(_gamma_sampler(1.0), jax.random.PRNGKey(0), **kwargs)


def test_bad_key():
  with pytest.raises(ValueError, match='key must be a jax.random key'):
    variance.ntk_moments(_gamma_sampler(1.0), 0, 10)


def test_bad_samples():
  with pytest.raises(ValueError, match='at least 2 trials'):
    variance.moments_from_samples(np.ones((1, 3)))
  with pytest.raises(ValueError, match='samples must be finite'):
    variance.moments_from_samples(np.array([1.0, np.inf, 2.0]))
  with pytest.raises(ValueError, match='nonzero mean'):
    variance.moments_from_samples(np.array([1.0, -1.0]))


def test_bad_sampler_arguments():
  x = np.ones((2, 3))
  with pytest.raises(ValueError, match=r'widths\[1\] must be an integer >= 1, got 0'):
    variance.dense_ntk_sampler((4, 0), x)
  with pytest.raises(ValueError, match='widths must be a non-empty list'):
    variance.dense_ntk_sampler((), x)
  with pytest.raises(ValueError, match='m must be an integer >= 1, got 0'):
    variance.dense_ntk_sampler((4,), x, m=0)
  with pytest.raises(ValueError, match='same input dimension'):
    variance.dense_ntk_sampler((4,), x, np.ones((2, 4)))
  with pytest.raises(ValueError, match='x1 must be finite'):
    variance.dense_ntk_sampler((4,), np.array([[np.nan, 0.0]]))
  with pytest.raises(ValueError, match='x must have 8 channels'):
    variance.bottleneck_diag_sampler(4, np.ones((1, 3, 3, 4)), in_channels=8)
  with pytest.raises(ValueError, match='width must be an integer >= 1'):
    variance.bottleneck_diag_sampler(0, np.ones((1, 3, 3, 8)), in_channels=8)


def test_sample_over_inits_compiles_once_per_sampler():
  traces = []

  def sample_fn(key):
    traces.append(1)  # runs only while tracing
    return jax.random.normal(key, (3,))

  a = variance.sample_over_inits(sample_fn, jax.random.PRNGKey(0), 8, chunk_size=4)
  b = variance.sample_over_inits(sample_fn, jax.random.PRNGKey(1), 8, chunk_size=4)
  variance.ntk_moments(sample_fn, jax.random.PRNGKey(2), 8, chunk_size=4)
  # One trace to decide how to batch the trials (vmap or lax.map), one to compile the chunk.
  assert len(traces) == 2, f'{len(traces)} traces for one sampler and one shape'
  assert a.shape == (8, 3) and not np.allclose(a, b)
  # Trial i always uses fold_in(key, i), whatever the chunking (and compiled once more).
  c = variance.sample_over_inits(sample_fn, jax.random.PRNGKey(0), 8, chunk_size=8)
  np.testing.assert_allclose(a, c, rtol=1e-6)


def test_streaming_moments_equal_moments_of_the_samples_and_key_contract():
  def sample_fn(key):
    return jnp.exp(0.3 * jax.random.normal(key, (2,))) + 5.0
  key = jax.random.PRNGKey(3)
  samples = np.stack([np.asarray(sample_fn(jax.random.fold_in(key, i))) for i in range(53)])
  ref = variance.moments_from_samples(samples)
  for chunk in (1, 7, 64):
    mom = variance.ntk_moments(sample_fn, key, 53, chunk_size=chunk)
    for field in ('mean', 'var', 'ratio', 'ratio_stderr', 'var_stderr', 'mean_stderr'):
      np.testing.assert_allclose(getattr(mom, field), getattr(ref, field), rtol=1e-6,
                                 err_msg=f'{field} chunk {chunk}')
  # (The chunk sizes above: their programs are compiled.)
  nmk = variance.neural_mean_kernel(sample_fn, key, 53, chunk_size=7)
  np.testing.assert_allclose(nmk.mean, samples.mean(0), rtol=1e-6)
  np.testing.assert_allclose(nmk.stderr, samples.std(0, ddof=1) / np.sqrt(53), rtol=1e-5)
  np.testing.assert_allclose(variance.ensemble_mean(sample_fn, key, 53, chunk_size=64),
                             samples.mean(0), rtol=1e-6)
  # The first trials of a longer run are the same trials.
  np.testing.assert_allclose(variance.sample_over_inits(sample_fn, key, 10, chunk_size=7),
                             samples[:10], rtol=1e-6)


def test_huge_sample_arrays_are_refused_before_the_work():
  with pytest.raises(ValueError, match='would need .* of memory; this machine has'):
    variance.sample_over_inits(lambda k: jax.random.normal(k, (1000,)), jax.random.PRNGKey(0),
                               10 ** 9, chunk_size=4)


def test_convolutional_samplers_run_trials_sequentially_with_the_same_samples():
  """Batched weights would turn convolutions into grouped ones (slow on XLA:CPU): the trials of
  a convolutional sampler run one after the other; the samples are those of vmap."""
  from ce_jax.theory import alpha
  from ce_jax.design import presets
  # The member, input and chunk of test_variance_multidevice.py: its one-device run compiles
  # the same chunk program (the suite's compilation cache serves whichever runs second).
  x = np.random.default_rng(0).standard_normal((1, 3, 3, 8)).astype(np.float32)
  conv = alpha.member_sampler(presets.bottleneck(in_channels=8, out_channels=8), 4, x,
                              sampler='full_weights')
  dense = variance.dense_ntk_sampler((4, 4), np.ones((2, 3)))
  key = jax.random.PRNGKey(1)
  keys = variance.trial_keys(key, 0, 5)
  assert variance.batching(conv) == 'sequential' and variance.batching(dense) == 'vmap'
  # (jit: vmap alone would run op by op, compiling each operation.)
  np.testing.assert_allclose(np.asarray(variance.sample_over_inits(conv, key, 5, chunk_size=5)),
                             np.asarray(jax.jit(jax.vmap(conv))(keys)), rtol=1e-5)
  batched = variance._batched(dense)  # pylint: disable=protected-access
  got, ref = jax.jit(lambda k: (batched(k), jax.vmap(dense)(k)))(keys)   # one program
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5)
