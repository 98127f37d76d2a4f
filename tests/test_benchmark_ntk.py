"""Runs experiments/benchmark_ntk.py in --quick mode: JSON keys and correctness checks only."""

from __future__ import annotations

import os

import pytest

from conftest import load_json

pytestmark = pytest.mark.slow


def test_benchmark_ntk_quick(binary, tmp_path):
  out = os.path.join(tmp_path, 'bench.json')
  proc = binary('benchmark_ntk', '--quick', f'--json_out={out}')
  assert 'ensemble NTK' in proc.stdout
  result = load_json(out)
  for key in ('config', 'versions', 'flops', 'ensemble_ntk', 'best_nt', 'best_nt_s',
              'default_backend', 'vmap_s', 'loop_s', 'vmap_beats_loop', 'vmap_vs_loop',
              'structured_s', 'structured_speedup_vs_best_nt', 'diagonal', 'monte_carlo',
              'checks'):
    assert key in result, key
  assert result['config']['m'] == 2
  variants = result['ensemble_ntk']
  for name in ('jax_vmap_members', 'jax_loop_members', 'jax_blockdiag_jc_vmap0', 'structured',
               'structured_vmap_members', 'structured_loop_members'):
    assert name in variants
  if result['versions']['neural_tangents']:
    assert 'nt_blockdiag_jc_vmap0' in variants and 'nt_blockdiag_nvp_vmap0' in variants
  assert set(result['vmap_vs_loop']) >= {'jax', 'structured'}
  for v in variants.values():
    assert v['median_s'] > 0 and v['rel_err'] < 1e-4
  assert set(result['diagonal']['variants']) == {'full_then_diag', 'diag_jax', 'diag_structured'}
  assert all(result['checks'].values()), result['checks']
  mc = result['monte_carlo']
  assert 'skipped' in mc or (mc['trials_per_s'] > 0 and mc['rel_err'] < 1e-4)


def test_benchmark_ntk_bad_flag(binary):
  proc = binary('benchmark_ntk', '--depth=1', check=False)
  assert proc.returncode == 2
  assert 'depth must be an integer >= 2' in proc.stderr
  assert 'Traceback' not in proc.stderr
