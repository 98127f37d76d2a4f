"""`make demo`'s main job runs end to end (quick settings) and resumes without retraining."""

import os

import pytest

from conftest import load_json


@pytest.mark.slow
def test_demo_quick_end_to_end_and_reuses_finished_runs(binary, tmp_path):
  workdir = str(tmp_path / 'demo')
  proc = binary('demo', f'--workdir={workdir}', '--quick')
  summary = load_json(os.path.join(workdir, 'summary.json'))
  assert set(summary) >= {'alpha', 'search', 'models'}
  assert summary['alpha']['alpha'] > 0
  assert summary['search']['primal']['n'] == summary['search']['dual']['n']
  names = [m['name'] for m in summary['models']]
  assert names == ['baseline', 'primal', 'dual']
  by_name = {m['name']: m for m in summary['models']}
  for m in summary['models']:
    assert set(m) >= {'name', 'm', 'n', 'params', 'test_error_mean', 'test_error_stderr', 'seeds'}
    assert 0.0 <= m['test_error_mean'] < 0.9  # better than chance (10 classes) after 1 epoch
    assert len(m['seeds']) == 2
  # The primal design spends the baseline's budget (within one member); the dual spends less.
  member = by_name['primal']['params'] / by_name['primal']['m']
  assert abs(by_name['primal']['params'] - by_name['baseline']['params']) <= member
  assert by_name['dual']['params'] < by_name['baseline']['params']
  assert by_name['dual']['m'] == summary['search']['dual']['m_int']
  for f in ('alpha_fit.png', 'search.png', 'test_error.png'):
    assert os.path.getsize(os.path.join(workdir, f)) > 1000
  assert 'test error (%)' in proc.stdout
  # Rerunning reuses every finished training run (long jobs never lose finished work).
  again = binary('demo', f'--workdir={workdir}', '--quick')
  assert again.stdout.count('reused') == 7  # the alpha fit and 3 designs x 2 seeds
  assert load_json(os.path.join(workdir, 'summary.json'))['models'] == summary['models']


def test_demo_bad_flag_is_one_line(binary):
  proc = binary('demo', '--depth=1', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == 'demo.py: error: depth must be an integer >= 2, got 1'
