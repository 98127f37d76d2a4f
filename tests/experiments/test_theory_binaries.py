"""The theory binaries run end to end with tiny flags (Fig. 2 and Algorithm 1)."""

import os

import numpy as np
import pytest

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

pytestmark = pytest.mark.slow


def test_ntk_convergence(binary, tmp_path):
  out, png = str(tmp_path / 'fig2.json'), str(tmp_path / 'fig2.png')
  binary('ntk_convergence', '--depth=3', '--width=64', '--multiplicities=1,32',
         '--num_angles=7', '--nmk_samples=32', '--seed=1', f'--json_out={out}',
         f'--plot_out={png}')
  r = load_json(out)
  for key in ('gamma', 'depth', 'width', 'infinite_ntk', 'nmk', 'nmk_stderr', 'ensemble_ntk'):
    assert key in r
  assert r['depth'] == 3 and r['width'] == 64
  assert len(r['gamma']) == 7 and r['gamma'][0] == pytest.approx(-np.pi)
  assert set(r['ensemble_ntk']) == {'1', '32'}
  for lst in [r['infinite_ntk'], r['nmk'], r['nmk_stderr'], *r['ensemble_ntk'].values()]:
    assert len(lst) == 7 and np.all(np.isfinite(lst))
  nmk = np.array(r['nmk'])
  # Diagonal entry (gamma = 0) of the infinite NTK: depth * |x|^2 / n_0 = 3 / 2.
  assert r['infinite_ntk'][3] == pytest.approx(1.5, rel=1e-5)
  # The 32-member ensemble is much closer to the NMK than a single member (Lemma 1).
  dev = {m: np.sqrt(np.mean((np.array(v) - nmk) ** 2)) for m, v in r['ensemble_ntk'].items()}
  assert dev['32'] < dev['1'] / 2, dev
  # NMK ~ infinite-width NTK (Fig. 2b), within stderr + O(1/n) bias.
  assert np.all(np.abs(nmk - r['infinite_ntk']) < 4 * np.array(r['nmk_stderr']) + 0.1)
  assert os.path.getsize(png) > 1000


def test_fit_alpha(binary, tmp_path):
  out, png = str(tmp_path / 'alpha.json'), str(tmp_path / 'alpha.png')
  proc = binary('fit_alpha', '--block=dense', '--widths=16,64', '--trials=48', '--depth=3',
                f'--json_out={out}', f'--plot_out={png}')
  r = load_json(out)
  for key in ('block', 'alpha', 'alpha_stderr', 'r2', 'trials', 'points'):
    assert key in r
  assert r['block'] == 'dense' and r['trials'] == 48 and len(r['points']) == 2
  assert set(r['points'][0]) == {'width', 'fan_in_sum', 'ratio', 'ratio_stderr'}
  assert r['points'][0]['width'] == 16 and r['points'][0]['fan_in_sum'] == pytest.approx(2 / 16)
  assert np.isfinite(r['alpha']) and r['alpha'] > 0 and r['alpha_stderr'] > 0
  assert r['points'][0]['ratio'] > r['points'][1]['ratio'] > 1  # narrower = noisier kernel
  assert 'alpha =' in proc.stdout
  assert os.path.getsize(png) > 1000


@pytest.mark.parametrize('name, flag, match', [
    ('ntk_convergence', '--multiplicities=1,0', 'multiplicities[1] must be an integer >= 1'),
    ('ntk_convergence', '--depth=1', '--depth must be an integer >= 2'),
    ('fit_alpha', '--trials=1', '--trials must be an integer >= 2, got 1'),
    ('fit_alpha', '--block=conv', '--block must be one of dense, bottleneck'),
    ('fit_alpha', '--widths=', '--widths must be a non-empty list'),
])
def test_bad_flags(binary, name, flag, match):
  proc = binary(name, flag, check=False)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert match in lines[-1] and 'Traceback' not in proc.stderr, proc.stderr
