"""Runs experiments/search.py and experiments/model_info.py as a user would (tiny and fast)."""

from __future__ import annotations

import json

import pytest

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

pytestmark = pytest.mark.slow

DESIGN_KEYS = {'n', 'm', 'm_int', 'params', 'flops', 'rho', 'variance_ratio'}


def _one_line_error(proc, name):
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip() and 'xla_bridge' not in l]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f'{name}.py: error: '), lines[0]
  assert 'Traceback' not in proc.stderr
  return lines[0]


def test_search_dense_fig3_json_and_plot(binary, tmp_path):
  out, png = tmp_path / 's.json', tmp_path / 'fig3.png'
  proc = binary('search', '--baseline=dense', '--depth=6', '--width=500', '--input_dim=748',
                '--num_outputs=1', '--alpha=3.65', f'--json_out={out}', f'--plot_out={png}')
  assert 'primal' in proc.stdout and '30x48' in proc.stdout
  r = load_json(out)
  assert {'baseline', 'alpha', 'efficiency', 'primal', 'dual', 'strong_duality',
          'curves'} <= set(r)
  assert {'name', 'params', 'flops'} <= set(r['baseline'])
  assert DESIGN_KEYS <= set(r['primal']) and DESIGN_KEYS <= set(r['dual'])
  assert {'n', 'primal_objective', 'dual_m', 'dual_rho'} <= set(r['curves'])
  assert len(r['curves']['n']) == 1024
  assert r['primal']['n'] == 48 and r['primal']['m_int'] == 30
  assert abs(r['primal']['m'] - 30.4) < 0.05 and abs(r['dual']['m'] - 12.4) < 0.05
  assert r['strong_duality'] is True and r['efficiency'] == 'params' and r['alpha'] == 3.65
  assert png.stat().st_size > 10_000


def test_search_resnext29_alpha_from_and_flops(binary, tmp_path):
  fit = tmp_path / 'alpha.json'
  fit.write_text(json.dumps({'block': 'bottleneck', 'alpha': 1.6, 'alpha_stderr': 0.01}))
  out = tmp_path / 'r.json'
  binary('search', '--baseline=resnext29', '--cardinality=1', '--base_width=128',
         '--num_classes=10', f'--alpha_from={fit}', f'--json_out={out}')
  r = load_json(out)
  assert (r['primal']['n'], r['primal']['m_int']) == (10, 37)
  assert r['dual']['n'] == 10 and r['dual']['m_int'] == 12
  assert r['baseline']['params'] == 13_775_178
  binary('search', '--baseline=resnext29', '--base_width=128', '--alpha=1.6',
         '--efficiency=flops', '--fan_in_convention=channels', f'--json_out={out}')
  r = load_json(out)
  assert r['efficiency'] == 'flops' and r['primal']['m_int'] == 34
  assert abs(r['primal']['flops'] / r['baseline']['flops'] - 1) < 0.01


def test_model_info_resnext101(binary, tmp_path):
  out = tmp_path / 'i.json'
  proc = binary('model_info', '--model=resnext101', '--cardinality=32', '--base_width=8',
                f'--json_out={out}')
  r = load_json(out)
  assert r['model'] == 'resnext101' and r['params'] == 88_791_336
  assert abs(r['flops'] / 1e9 - 32.83) < 0.01
  assert 'stage3' in proc.stdout and 'stem' in proc.stdout
  binary('model_info', '--model=wrn', '--depth=28', '--widen_factor=10', f'--json_out={out}')
  assert abs(load_json(out)['params'] / 1e6 - 37.1) < 0.05


@pytest.mark.parametrize('flags, match', [
    (['--baseline=resnet', '--alpha=1.6'], 'baseline'),
    (['--baseline=resnext29', '--alpha=1.6', '--cardinality=0'], 'cardinality'),
    (['--baseline=resnext29', '--alpha=1.6', '--base_width=0'], 'base_width'),
    (['--baseline=dense', '--alpha=1.6', '--width=0'], 'width'),
    (['--baseline=dense', '--alpha=1.6', '--widths=10,0'], 'widths'),
    (['--baseline=resnext29', '--alpha=0'], 'alpha'),
    (['--baseline=resnext29', '--alpha=-2'], 'alpha'),
    (['--baseline=resnext29', '--alpha=nan'], 'alpha'),
    (['--baseline=resnext29', '--alpha=inf'], 'alpha'),
    (['--baseline=resnext29', '--alpha=1.6', '--max_width=0'], 'max_width'),
    (['--baseline=resnext29', '--alpha=1.6', '--alpha_from=x.json'], 'conflicting'),
    (['--baseline=resnext29', '--alpha=1.6', '--depth=6'], 'conflicting'),
    (['--baseline=dense', '--alpha=1.6', '--cardinality=4'], 'conflicting'),
    (['--baseline=dense', '--alpha=1.6', '--widths=5,5', '--width=3'], 'conflicting'),
    (['--baseline=resnext29'], 'alpha'),
    (['--baseline=resnext29', '--alpha_from=/nonexistent/alpha.json'], 'cannot read'),
    (['--baseline=resnext29', '--alpha=1.6', '--efficiency=time'], 'efficiency'),
])
def test_search_bad_input(binary, flags, match):
  line = _one_line_error(binary('search', *flags, check=False), 'search')
  assert match in line


def test_search_alpha_from_without_alpha_key(binary, tmp_path):
  bad = tmp_path / 'fit.json'
  bad.write_text(json.dumps({'slope': 1.6}))
  line = _one_line_error(binary('search', '--baseline=resnext29', f'--alpha_from={bad}',
                                check=False), 'search')
  assert 'alpha' in line


@pytest.mark.parametrize('flags, match', [
    (['--model=resnet9000'], 'valid names'),
    (['--model=resnext29', '--cardinality=0'], 'cardinality'),
    (['--model=resnext29', '--base_width=0'], 'base_width'),
    (['--model=wrn', '--depth=27'], 'depth'),
    (['--model=wrn', '--cardinality=4'], 'conflicting'),
    (['--model=dense', '--widths=0,3'], 'widths'),
    ([], 'model'),
])
def test_model_info_bad_input(binary, flags, match):
  line = _one_line_error(binary('model_info', *flags, check=False), 'model_info')
  assert match in line
