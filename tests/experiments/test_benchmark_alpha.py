"""The Algorithm 1 benchmarks (generic vs special-cased samplers; the fit, full weights vs
conditional) run end to end.

Tiny settings; no timing checks, but the two paths must give the same moments.
"""

from __future__ import annotations

import os

import pytest

from conftest import load_json


@pytest.mark.slow
def test_benchmark_alpha_quick(binary, tmp_path):
  out = os.path.join(tmp_path, 'alpha.json')
  proc = binary('benchmark_alpha', '--quick', f'--json_out={out}')
  assert 'generic' in proc.stdout
  d = load_json(out)
  assert [(c['kind'], c['widths']) for c in d['cases']] == [('bottleneck', [4, 8]),
                                                            ('dense', [4, 8])]
  for c in d['cases']:
    for timing in ('cold', 'steady'):
      assert c[f'generic_{timing}_s'] > 0 and c[f'special_{timing}_s'] > 0
      assert c[f'{timing}_ratio'] == pytest.approx(
          c[f'generic_{timing}_s'] / c[f'special_{timing}_s'])
    # Same keys, same initializations: the generic sampler's moments are the special one's.
    assert c['max_rel_err'] < 1e-5
    for w in c['per_width']:
      assert w['moments']['generic']['ratio'] > 1
      assert w['moments']['generic']['ratio'] == pytest.approx(w['moments']['special']['ratio'],
                                                               rel=1e-5)
  assert d['settings']['quick'] is True and d['settings']['trials'] == 8
  assert d['versions']['jax']


def test_benchmark_alpha_rejects_bad_flags(binary):
  proc = binary('benchmark_alpha', '--cases=resnet', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_alpha.py: error: cases')
  proc = binary('benchmark_alpha', '--trials=1', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_alpha.py: error: trials')


@pytest.mark.slow
def test_benchmark_alpha_fit_quick(binary, tmp_path):
  """The fit benchmark runs both samplers end to end and reports agreeing alphas."""
  out = os.path.join(tmp_path, 'fit.json')
  proc = binary('benchmark_alpha_fit', '--quick', f'--json_out={out}')
  assert 'speed-up' in proc.stdout
  d = load_json(out)
  assert [b['block'] for b in d['blocks']] == ['dense', 'bottleneck']
  for b in d['blocks']:
    for v in ('full_weights', 'conditional'):
      assert b[v]['seconds'] > 0 and len(b[v]['alphas']) == 2
      assert b[v]['alpha_stderr_mean'] > 0
    assert b['speedup'] == pytest.approx(b['full_weights']['seconds'] / b['conditional']['seconds'])
    assert abs(b['alpha_difference_z']) < 5
