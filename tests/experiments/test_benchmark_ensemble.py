"""The generic-ensemble benchmark runs end to end (tiny settings; no timing checks)."""

from __future__ import annotations

import os

import pytest

from conftest import load_json


@pytest.mark.slow
def test_benchmark_ensemble_quick(binary, tmp_path):
  out = os.path.join(tmp_path, 'ensemble.json')
  proc = binary('benchmark_ensemble', '--quick', f'--json_out={out}')
  assert 'generic' in proc.stdout
  d = load_json(out)
  assert [(c['kind'], c['m']) for c in d['cases']] == [('dense', 2), ('block', 2), ('block', 4)]
  for c in d['cases']:
    assert c['generic_s'] > 0 and c['hand_s'] > 0
    assert c['ratio'] == pytest.approx(c['generic_s'] / c['hand_s'])
    # One SGD step of the generic ensemble equals the hand-written one's from the same state.
    assert c['max_rel_err'] < 1e-5
    assert c['loss_generic'] == pytest.approx(c['loss_hand'], rel=1e-5)
  assert d['settings']['quick'] is True and d['versions']['jax']


def test_benchmark_ensemble_rejects_bad_flags(binary):
  proc = binary('benchmark_ensemble', '--blocks=8y4', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_ensemble.py: error: blocks')
