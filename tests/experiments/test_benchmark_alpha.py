"""The Algorithm 1 benchmarks (generic vs special-cased samplers; the fit, full weights vs
conditional) run end to end.

Tiny settings; no timing checks, but the two paths must give the same moments.
"""

from __future__ import annotations

import pytest

from benchmark_checks import assert_rejects, quick_json


@pytest.mark.slow
def test_benchmark_alpha_quick(binary, tmp_path):
  d = quick_json(binary, tmp_path, 'benchmark_alpha', 'generic')
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
  assert_rejects(binary, 'benchmark_alpha', '--cases=resnet', 'cases')
  assert_rejects(binary, 'benchmark_alpha', '--trials=1', 'trials')


@pytest.mark.slow
def test_benchmark_alpha_fit_quick(binary, tmp_path):
  """The fit benchmark runs both samplers end to end and reports agreeing alphas."""
  d = quick_json(binary, tmp_path, 'benchmark_alpha_fit', 'speed-up')
  assert [b['block'] for b in d['blocks']] == ['dense', 'bottleneck']
  for b in d['blocks']:
    for v in ('full_weights', 'conditional'):
      assert b[v]['seconds'] > 0 and len(b[v]['alphas']) == 2
      assert b[v]['alpha_stderr_mean'] > 0
    assert b['speedup'] == pytest.approx(b['full_weights']['seconds'] / b['conditional']['seconds'])
    assert abs(b['alpha_difference_z']) < 5
