"""Runs experiments/benchmark_ntk.py in --quick mode: JSON keys and correctness checks only."""

from __future__ import annotations

import os

import pytest

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

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
  _check_peak(result)


def _check_peak(result):
  """The ``peak`` section: matmul peak and fractions of it (keys and consistency, no timing)."""
  assert 'peak' in result['sections']
  peak = result['peak']
  assert peak['matmul_gflops'] > 0 and peak['matmul_gflops_best'] > 0
  assert peak['matmul']['flops'] == 2 * peak['matmul']['n'] ** 3
  assert peak['target_fraction'] == 0.3
  assert set(peak['target_met']) == {'ensemble_ntk', 'mc_variance'}
  ens = peak['ensemble_ntk']
  for key in ('gflops', 'fraction', 'fraction_best', 'flops', 'seconds', 'cpu_seconds',
              'config', 'flop_breakdown', 'rel_err'):
    assert key in ens, key
  assert ens['config']['backend'] == 'structured'
  parts = ens['flop_breakdown']
  assert ens['flops'] == parts['total'] == (parts['forward'] + parts['backward']
                                            + parts['gram_activations'] + parts['gram_gradients'])
  assert ens['seconds'] > 0 and ens['rel_err'] < 1e-4
  assert abs(ens['gflops'] - ens['flops'] / ens['seconds'] / 1e9) <= 1e-6 * ens['gflops']
  assert abs(ens['fraction'] - ens['gflops'] / peak['matmul_gflops']) <= 1e-6 * ens['fraction']
  for key in ('mc_variance', 'mc_variance_one_input'):
    mc = peak[key]
    for field in ('gflops', 'fraction', 'flops', 'flops_per_trial', 'seconds', 'trials_per_s',
                  'config', 'rel_err', 'ntk_moments', 'ntk_only', 'sample_only'):
      assert field in mc, (key, field)
    assert mc['flops'] == mc['flops_per_trial'] * mc['config']['computed_trials_per_call']
    assert mc['rel_err'] < 1e-4 and mc['trials_per_s'] > 0
    assert mc['ntk_moments']['fraction'] > 0 and mc['ntk_only']['fraction'] > 0
    assert mc['sample_only']['trials_per_s'] > 0
  assert peak['mc_variance_one_input']['config']['inputs_per_trial'] == 1
  assert result['checks']['peak_kernels_agree']


def test_benchmark_ntk_peak_section_only(binary, tmp_path):
  out = os.path.join(tmp_path, 'peak.json')
  binary('benchmark_ntk', '--quick', '--sections=peak', f'--json_out={out}')
  result = load_json(out)
  assert result['sections'] == ['peak']
  assert 'ensemble_ntk' not in result and 'diagonal' not in result
  _check_peak(result)
  _check_peak_flops(result['peak'])


def _check_peak_flops(peak):
  """The analytic FLOP counts (docs/PERFORMANCE.md) for the --quick sizes, by hand.

  Quick: m = 2 members 6 -> 8 -> 8 -> 1 (depth 3), N = 8 inputs; MC trials of 4 inputs.
  """
  f = peak['ensemble_ntk']['flop_breakdown']
  assert f['forward'] == 2 * 2 * 8 * (48 + 64 + 8)
  assert f['backward'] == 2 * 2 * 8 * 64
  assert f['gram_activations'] == 2 * 2 * 64 * (8 + 8) + 2 * 64 * 6  # x x^T computed once
  assert f['gram_gradients'] == 2 * 2 * 64 * (8 + 8)
  d = peak['mc_variance']['flop_breakdown']
  assert d['params'] == 120
  assert d['total'] == 2 * 4 * 120 + 2 * 4 * 64 + 2 * 4 * (6 + 8 + 8 + 8 + 8)
  assert peak['mc_variance_one_input']['flops_per_trial'] == (
      2 * 120 + 2 * 64 + 2 * (6 + 8 + 8 + 8 + 8))


def test_benchmark_ntk_bad_flag(binary):
  proc = binary('benchmark_ntk', '--depth=1', check=False)
  assert proc.returncode == 2
  assert 'depth must be an integer >= 2' in proc.stderr
  assert 'Traceback' not in proc.stderr
  proc = binary('benchmark_ntk', '--sections=peak,nope', check=False)
  assert proc.returncode == 2
  assert 'sections' in proc.stderr and 'Traceback' not in proc.stderr
