"""benchmark_alpha_batching runs, and both batchings give the same alpha."""

import json

from conftest import run_binary


def test_batching_benchmark_runs_and_agrees(tmp_path):
  out = tmp_path / 'b.json'
  run_binary('benchmark_alpha_batching', '--trials=4', '--widths=4,8', '--rounds=1',
             f'--json_out={out}')
  d = json.loads(out.read_text())
  assert set(d['median']) == {'sequential', 'vmap'} and d['speedup'] > 0
  assert abs(d['alpha']['sequential'] - d['alpha']['vmap']) < 1e-4 * abs(d['alpha']['vmap'])
