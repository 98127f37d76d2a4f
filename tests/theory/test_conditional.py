"""The conditional samplers draw the diagonal NTK entry with the law of the full-weight ones.

Different draws, same law: moments (mean, E[K^2]/E[K]^2) within Monte-Carlo error of the
full-weight samplers of ``ce_jax.theory.variance`` (which differentiate the module itself) and the
same distribution (two-sample Kolmogorov-Smirnov statistic), on the bottleneck (one path,
grouped, a 1x1 input, a window cropped from a larger input) and dense members of several
shapes. Seeds are fixed, so the checks are deterministic; the thresholds are 4.5 standard errors.

Compilation, not sampling, is the cost of these tests (a trial is microseconds, a program
seconds), so the tests use the same inputs, widths and chunk sizes wherever they can: each
sampler's program then compiles once for the file (the suite's compilation cache serves the
identical programs of later tests).
"""

import jax
import numpy as np
import pytest

from ce_jax.theory import alpha
from ce_jax.theory import conditional
from ce_jax.design import presets
from ce_jax.theory import variance

TRIALS = 4000
BOTTLENECK_CHUNK = 500
# The dense members of the alpha fit below (depth 3: hidden widths (n, n)) at its input: the
# law test samples them with the fit's programs (same input, members and chunk size).
DENSE_WIDTHS = (4, 8, 32)
DENSE_KEY = 0
DENSE_CHUNK = 50
# Three hidden layers of unequal widths: a layer index off by one, or a gradient not carried
# through a middle layer, would show.
UNEQUAL = (3, 7, 5)


def _dense_input():
  return alpha.block_input('dense', jax.random.fold_in(jax.random.PRNGKey(DENSE_KEY), 0),
                           input_dim=16)


def _bottleneck_input(spatial=3):
  # numpy: jax.random outside jit would compile a program per shape.
  return np.random.default_rng(0).standard_normal((1, spatial, spatial, 8)).astype(np.float32)


def _samples(sampler, seed, trials=TRIALS, chunk_size=BOTTLENECK_CHUNK):
  """All entries of ``trials`` trials, ``(trials, entries)`` float64."""
  return np.asarray(variance.sample_over_inits(sampler, jax.random.PRNGKey(seed), trials,
                                               chunk_size=chunk_size), np.float64)


def _same_law(a, b, what=''):
  """Means and E[K^2]/E[K]^2 within 4.5 standard errors; KS statistic below its 1e-4 level."""
  for name, fa, fb in (('mean', a, b), ('second moment', a * a, b * b)):
    se = np.hypot(fa.std() / np.sqrt(len(fa)), fb.std() / np.sqrt(len(fb)))
    assert abs(fa.mean() - fb.mean()) < 4.5 * se, (what, name, fa.mean(), fb.mean(), se)
  grid = np.sort(np.concatenate([a, b]))
  ks = np.max(np.abs(np.searchsorted(np.sort(a), grid, 'right') / len(a)
                     - np.searchsorted(np.sort(b), grid, 'right') / len(b)))
  assert ks < 2.2 * np.sqrt(2.0 / min(len(a), len(b))), (what, ks)    # p ~ 1e-4


# Width 1 (dead layers), grouped, a 1x1 input (zero-padded window), the 3x3 interior of a 4x4
# input (cropped window). A generic one-path case (width 6 on a 3x3 input) ran the same code
# as the 4x4 case, which also crops.
@pytest.mark.parametrize('cardinality,width,spatial', [(1, 1, 3), (2, 3, 3), (1, 4, 1),
                                                        (1, 4, 4)])
def test_bottleneck_entry_has_the_law_of_the_full_weight_entry(cardinality, width, spatial):
  x = _bottleneck_input(spatial)
  fast = conditional.bottleneck_diagonal_sampler([width], x, cardinality=cardinality)
  full = variance.bottleneck_diag_sampler(width, x, cardinality=cardinality, in_channels=8,
                                          out_channels=8)
  _same_law(_samples(fast, 1)[:, 0], _samples(full, 2)[:, 0])


@pytest.mark.parametrize('members', [tuple((n, n) for n in DENSE_WIDTHS), (UNEQUAL,)],
                         ids=['members_in_one_program', 'unequal_widths'])
def test_dense_entry_has_the_law_of_the_full_weight_entry(members):
  """Each member's entry, from one conditional program for all of them (members of one depth),
  against its full-weight sampler; unequal widths catch a layer index off by one, which equal
  widths would hide."""
  x = _dense_input()
  fast = _samples(conditional.dense_diagonal_sampler(members, x), 1, chunk_size=DENSE_CHUNK)
  for i, widths in enumerate(members):
    full = _samples(variance.dense_diag_sampler(widths, x), 2, chunk_size=DENSE_CHUNK)
    _same_law(fast[:, i], full[:, 0], widths)


# Two of the members above in another order, next to one of width 1 (dead layers, below).
OTHERS = ((32, 32), (4, 4), (1, 1))


def test_an_entry_depends_on_its_trial_key_and_width_only():
  """Several widths in one program give each width's entry exactly as it is alone, or next to
  other widths in another order (the bottleneck width alone and the dense members together
  are programs of the law tests above)."""
  keys = dict(seed=3, trials=BOTTLENECK_CHUNK)   # a whole chunk: the law tests' programs
  x = _bottleneck_input()
  sampler = lambda widths: conditional.bottleneck_diagonal_sampler(widths, x, cardinality=2)
  joint = _samples(sampler([2, 3, 16]), **keys)
  np.testing.assert_allclose(joint[:, 1], _samples(sampler([3]), **keys)[:, 0], rtol=2e-6,
                             err_msg='bottleneck width 3 alone')
  np.testing.assert_allclose(joint[:, [2, 0]], _samples(sampler([16, 2]), **keys), rtol=2e-6,
                             err_msg='bottleneck widths 16, 2')
  xd = _dense_input()
  sampler = lambda members: conditional.dense_diagonal_sampler(members, xd)
  keys = dict(seed=3, trials=DENSE_CHUNK, chunk_size=DENSE_CHUNK)
  joint = _samples(sampler([(n, n) for n in DENSE_WIDTHS]), **keys)   # (4,4), (8,8), (32,32)
  np.testing.assert_allclose(joint[:, 1], _samples(sampler([(8, 8)]), **keys)[:, 0],
                             rtol=2e-6, err_msg='dense (8, 8) alone')
  np.testing.assert_allclose(joint[:, [2, 0]], _samples(sampler(OTHERS), **keys)[:, :2],
                             rtol=2e-6, err_msg=f'dense {OTHERS}')


def test_dead_layers_give_finite_entries():
  """At width 1 whole layers die (|a| = 0, then q = a / |a| is undefined): the entry is then
  exactly what the full weights give, the dead part contributing 0 (finite, never NaN). (The
  programs of the tests above: the bottleneck at width 1, the dense members OTHERS.)"""
  bottleneck = conditional.bottleneck_diagonal_sampler([1], _bottleneck_input())
  dense = conditional.dense_diagonal_sampler(OTHERS, _dense_input())
  for name, k in (('bottleneck', _samples(bottleneck, 0, 2000)[:, 0]),
                  ('dense', _samples(dense, 0, 2000, chunk_size=DENSE_CHUNK)[:, -1])):
    assert np.all(np.isfinite(k)) and np.all(k >= 0), name
    assert 0 < np.mean(k == 0) < 1, name    # dead initializations occurred, and live ones


def test_member_sampler_takes_the_conditional_path_where_it_applies():
  x = _bottleneck_input()
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
  # Two widths: the joint program's layout of several widths, and the fit with intercept.
  kw = dict(widths=[4, 8], trials=60, key=jax.random.PRNGKey(4), in_channels=8,
            out_channels=8)
  a = alpha.estimate_alpha('bottleneck', chunk_size=7, **kw)
  b = alpha.estimate_alpha('bottleneck', chunk_size=60, **kw)
  for p, q in zip(a.points, b.points):
    assert p.ratio == pytest.approx(q.ratio, rel=1e-6) and p.ratio > 1
  assert a.fit.alpha == pytest.approx(b.fit.alpha, rel=1e-6)
  # sampler='full_weights' takes the other path (other draws): one width is enough to see it.
  kw.update(widths=[4], intercept=False)
  full = alpha.estimate_alpha('bottleneck', chunk_size=60, sampler='full_weights', **kw)
  assert full.points[0].ratio != pytest.approx(a.points[0].ratio, rel=1e-6)


def test_estimate_alpha_agrees_across_samplers_within_errors():
  """The fitted alpha of the two samplers agrees within their standard errors (dense).

  One key (the law test above compiles these very programs; another key draws another input,
  which is another set of programs) and 800 trials: the standard error of the difference is
  0.24 here, below the 0.26 and 0.27 of the two keys at 4 widths and 400 trials this test ran
  before (it is set by the fit's scatter about the line more than by the trials).
  """
  kw = dict(widths=list(DENSE_WIDTHS), trials=800, depth=3, input_dim=16,
            key=jax.random.PRNGKey(DENSE_KEY), chunk_size=DENSE_CHUNK)
  a = alpha.estimate_alpha('dense', **kw)
  b = alpha.estimate_alpha('dense', sampler='full_weights', **kw)
  assert abs(a.fit.alpha - b.fit.alpha) < 4 * np.hypot(a.fit.alpha_stderr, b.fit.alpha_stderr)
