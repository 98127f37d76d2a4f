"""The convolution and training-step benchmarks run end to end (tiny settings; no timing checks).

torch is an optional `bench` extra: without it the binaries run their JAX-only path
(``--no_torch``) instead of the test being skipped.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

HAS_TORCH = importlib.util.find_spec('torch') is not None
TORCH_FLAGS = [] if HAS_TORCH else ['--no_torch']


@pytest.mark.slow
def test_benchmark_conv_quick(binary, tmp_path):
  out = os.path.join(tmp_path, 'conv.json')
  proc = binary('benchmark_conv', '--quick', f'--json_out={out}', *TORCH_FLAGS)
  assert 'ce_jax' in proc.stdout
  d = load_json(out)
  assert [(r['groups'], r['width']) for r in d['designs']] == [(1, 8), (3, 4), (5, 2)]
  for r in d['designs']:
    for key in ('ce_jax_s', 'stock_flax_s', 'xla_only_s'):
      assert r[key] > 0
    assert r['max_rel_err_vs_stock'] < 1e-5   # ce_jax (oneDNN) and xla_only against stock
    assert r['impl'] == 'onednn'
    if HAS_TORCH:
      assert r['torch_s'] > 0 and r['ratio'] == pytest.approx(r['ce_jax_s'] / r['torch_s'])
      assert r['max_rel_err_vs_torch'] < 1e-5
    else:
      assert r['torch_s'] is None and r['ratio'] is None
  assert d['versions']['jax'] and d['settings']['quick'] is True
  assert d['versions']['ce_jax_onednn'].startswith('3.')


@pytest.mark.slow
def test_benchmark_train_quick(binary, tmp_path):
  out = os.path.join(tmp_path, 'train.json')
  proc = binary('benchmark_train', '--quick', '--compare_xla', f'--json_out={out}', *TORCH_FLAGS)
  assert 'ce_jax' in proc.stdout
  d = load_json(out)
  assert [m['name'] for m in d['models']] == ['2x16d']
  for m in d['models']:
    assert m['ce_jax_img_s'] > 0 and m['xla_only_img_s'] > 0 and m['params'] > 0
    assert m['onednn_speedup'] == pytest.approx(m['ce_jax_img_s'] / m['xla_only_img_s'])
    # One SGD step of GroupedConv + FastBatchNorm equals the stock flax model's.
    assert m['loss_ce_jax'] == pytest.approx(m['loss_stock_flax'], rel=1e-5)
    assert m['max_rel_err_vs_stock'] < 1e-3
    if HAS_TORCH:
      assert m['torch_img_s'] > 0
      assert m['ratio'] == pytest.approx(m['ce_jax_img_s'] / m['torch_img_s'])
    else:
      assert m['torch_img_s'] is None and m['ratio'] is None


def test_benchmarks_reject_bad_flags(binary):
  proc = binary('benchmark_conv', '--designs=3x', '--no_torch', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_conv.py: error: designs')
  proc = binary('benchmark_train', '--models=37x', '--no_torch', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('benchmark_train.py: error: models')


@pytest.mark.slow
def test_benchmark_bn_accuracy_quick(binary, tmp_path):
  """float32 vs float64 logits, train and eval mode: small errors; with torch, the same model
  (the two float64 computations agree) and the ratio of the errors."""
  out = os.path.join(tmp_path, 'bn.json')
  proc = binary('benchmark_bn_accuracy', '--quick', f'--json_out={out}', *TORCH_FLAGS)
  assert 'ce_jax fast' in proc.stdout
  (r,) = load_json(out)['models']
  for variant in ('ce_jax_fast', 'ce_jax_stock'):
    assert 0 < r[variant]['train'] < 1e-4 and 0 < r[variant]['eval'] < 1e-5
  if HAS_TORCH:
    assert r['f64_agreement'] < 1e-9
    assert r['ratio_fast']['train'] == pytest.approx(
        r['ce_jax_fast']['train'] / r['torch']['train'])
