"""The generic-ensemble benchmark runs end to end (tiny settings; no timing checks)."""

from __future__ import annotations

import pytest

from benchmark_checks import assert_rejects, quick_json


@pytest.mark.slow
def test_benchmark_ensemble_quick(binary, tmp_path):
  d = quick_json(binary, tmp_path, 'benchmark_ensemble', 'generic')
  assert [(c['kind'], c['m']) for c in d['cases']] == [('dense', 2), ('block', 2), ('block', 4)]
  for c in d['cases']:
    assert c['generic_s'] > 0 and c['hand_s'] > 0
    assert c['ratio'] == pytest.approx(c['generic_s'] / c['hand_s'])
    # One SGD step of the generic ensemble equals the hand-written one's from the same state.
    assert c['max_rel_err'] < 1e-5
    assert c['loss_generic'] == pytest.approx(c['loss_hand'], rel=1e-5)
  assert d['settings']['quick'] is True and d['versions']['jax']


def test_benchmark_ensemble_rejects_bad_flags(binary):
  assert_rejects(binary, 'benchmark_ensemble', '--blocks=8y4', 'blocks')
