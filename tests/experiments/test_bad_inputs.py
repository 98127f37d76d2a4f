"""Every bad input is a one-line error before any work: the table of ``bad_input_cases.py``.

Binary cases: exit code 2, exactly one stderr line ``<binary>.py: error: ...`` naming the bad
value, no traceback, no file written. They run in one fork server per pytest worker (JAX and
ce_jax imported once; each case a forked child running the binary as ``__main__``), so the
whole table takes seconds per worker; ``pytest -n 2`` splits it. API cases: a ``ValueError``
with a one-line message naming the bad value. Also here: exit code 1 for an unexpected error,
the quiet default log, results written as they are produced, degenerate-fit warnings and the
parameter checks of the NTK functions on valid parameters.

The same table is audited (every case classified, whatever happens) by
``python experiments/audit_inputs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bad_input_cases as cases_lib

REPO = cases_lib.REPO
BINARY_CASES = cases_lib.BINARY_CASES
API_CASES = cases_lib.api_cases()


def test_table_size():
  binaries = {c.binary for c in BINARY_CASES}
  assert binaries == set(cases_lib.BINARIES)
  assert len(BINARY_CASES) >= 150 and len(API_CASES) >= 100
  ids = [c.id for c in BINARY_CASES] + [c.id for c in API_CASES]
  assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.fixture(scope='module')
def fork_server():
  server = cases_lib.ForkServer()
  yield server
  server.close()


@pytest.mark.parametrize('case', BINARY_CASES, ids=[c.id for c in BINARY_CASES])
def test_binary_bad_input(case, fork_server, tmp_path):
  outcome, res, created = cases_lib.run_binary_case(case, fork_server, str(tmp_path))
  assert outcome.kind == 'clear', (f'{outcome.kind}: {outcome.detail}\nexit {res.returncode}\n'
                                   f'stderr:\n{res.stderr[-3000:]}')
  assert not created
  assert res.seconds < 30, f'validation took {res.seconds:.1f} s: too much work before it'


@pytest.mark.parametrize('case', API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(case):
  outcome = cases_lib.run_api_case(case)
  assert outcome.kind == 'clear', f'{outcome.kind}: {outcome.detail}'


# ---------------------------------------------------------------------------------------------
# Exit codes and logs of cli.run_main (a fresh interpreter: the log set-up happens at start).


def _python(code: str, *args: str, env=None, timeout=120):
  full = dict(os.environ)
  full.pop('TF_CPP_MIN_LOG_LEVEL', None)
  full['PYTHONPATH'] = REPO + os.pathsep + full.get('PYTHONPATH', '')
  full.update(env or {})
  return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                        env=full, timeout=timeout, cwd=tempfile.gettempdir())


_FAILING_MAIN = """
import sys
from ce_jax.tools import cli
def main(argv):
  print('working')
  raise RuntimeError('kaboom\\nsecond line')
sys.argv[0] = 'failing.py'
cli.run_main(main)
"""


def test_unexpected_error_is_one_line_exit_1():
  proc = _python(_FAILING_MAIN)
  assert proc.returncode == 1, proc.stderr
  lines = cases_lib.error_lines(proc.stderr)
  assert lines == ['failing.py: error: RuntimeError: kaboom; rerun with --verbosity=1 for the '
                   'traceback'], proc.stderr
  assert 'working' in proc.stdout


def test_unexpected_error_traceback_with_verbosity():
  proc = _python(_FAILING_MAIN, '--verbosity=1')
  assert proc.returncode == 1
  assert 'Traceback (most recent call last)' in proc.stderr and 'kaboom' in proc.stderr


def test_value_error_is_exit_2_and_flag_errors_one_line():
  code = _FAILING_MAIN.replace("raise RuntimeError('kaboom\\nsecond line')",
                               "raise ValueError('width must be >= 1, got 0')")
  proc = _python(code)
  assert proc.returncode == 2
  assert cases_lib.error_lines(proc.stderr) == ['failing.py: error: width must be >= 1, got 0']
  proc = _python(code, '--verbosity=abc')
  assert proc.returncode == 2 and len(cases_lib.error_lines(proc.stderr)) == 1, proc.stderr


_PROBE = """
import sys
from ce_jax.tools import cli
def main(argv):
  import jax
  jax.devices()
  import logging
  logging.getLogger('jax._src.xla_bridge').warning('a real warning stays')
sys.argv[0] = 'probe.py'
cli.run_main(main)
"""


def test_quiet_default_log_and_verbosity_restores_it():
  quiet = _python(_PROBE)
  assert quiet.returncode == 0, quiet.stderr
  for noise in ('Unable to initialize backend', 'failed call to cuInit', 'No GPU/TPU found',
                'xla_bridge.py'):
    assert noise not in quiet.stderr, quiet.stderr
  assert 'a real warning stays' in quiet.stderr
  loud = _python(_PROBE, '--verbosity=1')
  assert loud.returncode == 0, loud.stderr
  probes = ('Unable to initialize backend', 'No GPU/TPU found', 'falling back to cpu')
  if not any(p.lower() in loud.stderr.lower() for p in probes):
    pytest.skip('this JAX logs no backend probing to silence')


def test_tf_cpp_min_log_level_raised_before_the_backend():
  code = ("import os, sys\nfrom ce_jax.tools import cli\n"
          "def main(argv):\n  print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
          "cli.run_main(main)\n")
  assert _python(code).stdout.strip() == '2'
  assert _python(code, env={'TF_CPP_MIN_LOG_LEVEL': '3'}).stdout.strip() == '3'
  assert _python(code, '--verbosity=1', env={'TF_CPP_MIN_LOG_LEVEL': '0'}).stdout.strip() == '0'



def test_malloc_setting_applied_before_main_and_bad_value_is_one_line():
  code = ("import sys\nfrom ce_jax.tools import cli, host_memory\n"
          "def main(argv):\n  print(host_memory.setting())\n"
          "sys.argv[0] = 'probe.py'\ncli.run_main(main)\n")
  assert _python(code).stdout.strip() == 'reuse'
  assert _python(code, env={'CE_JAX_MALLOC': 'default'}).stdout.strip() == 'default'
  proc = _python(code, env={'CE_JAX_MALLOC': 'mmap'})
  assert proc.returncode == 2
  assert cases_lib.error_lines(proc.stderr) == [
      "probe.py: error: CE_JAX_MALLOC='mmap': expected one of reuse, default"], proc.stderr

_TF = """
import sys
from ce_jax.tools import cli
def main(argv):
  from ce_jax.training import input_pipeline
  input_pipeline._tf()   # imports TensorFlow and hides the accelerators from it
  print('python stderr still works', file=sys.stderr)
sys.argv[0] = 'tf.py'
cli.run_main(main)
"""


def test_tensorflow_start_up_noise_is_filtered():
  pytest.importorskip('tensorflow')
  quiet = _python(_TF, timeout=300)
  assert quiet.returncode == 0, quiet.stderr
  assert cases_lib.error_lines(quiet.stderr) == ['python stderr still works'], quiet.stderr


def test_binary_run_has_no_backend_noise(tmp_path):
  proc = cases_lib.Spawn().run(
      [os.path.join(REPO, 'experiments', 'search.py'), '--alpha=3.65', '--max_width=64',
       f'--json_out={tmp_path}/s.json'], str(tmp_path), 120)
  assert proc.returncode == 0, proc.stderr
  assert 'Unable to initialize backend' not in proc.stderr
  assert 'xla_bridge' not in proc.stderr
  assert json.loads((tmp_path / 's.json').read_text())['alpha'] == 3.65


# ---------------------------------------------------------------------------------------------
# Output paths


def test_check_outputs_creates_nothing(tmp_path):
  from ce_jax.tools import cli
  target = tmp_path / 'a' / 'b' / 'out.json'
  assert cli.check_output_file(str(target), '--json_out') == str(target)
  assert cli.check_output_dir(str(tmp_path / 'x' / 'y'), '--workdir') == str(tmp_path / 'x' / 'y')
  assert list(tmp_path.iterdir()) == []
  (tmp_path / 'f').write_text('')
  with pytest.raises(ValueError, match=r'^--json_out=.*f/out.json: its directory cannot be '):
    cli.check_output_file(str(tmp_path / 'f' / 'out.json'), '--json_out')
  with pytest.raises(ValueError, match='is a file, not a directory'):
    cli.check_output_dir(str(tmp_path / 'f'), '--workdir')
  with pytest.raises(ValueError, match='is a directory'):
    cli.check_output_file(str(tmp_path) + '/', '--plot_out')


# ---------------------------------------------------------------------------------------------
# Results written as they are produced


def test_fit_alpha_writes_each_width_as_it_comes(tmp_path):
  out = tmp_path / 'alpha.json'
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  # Full weights, one Monte Carlo per width (the conditional sampler runs every width at once):
  # width 4 takes a second or two, width 256 with 20000 trials far longer, so the partial file
  # (the first point, complete false, no alpha) appears before the run ends.
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'experiments', 'fit_alpha.py'), '--block=dense',
       '--widths=4,256', '--trials=20000', '--chunk_size=20', '--sampler=full_weights',
       f'--json_out={out}'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(tmp_path))
  try:
    deadline = time.time() + 240
    while not out.exists() and time.time() < deadline and proc.poll() is None:
      time.sleep(0.2)
    assert out.exists(), 'no partial JSON'
    payload = json.loads(out.read_text())
  finally:
    proc.kill()
    proc.wait()
  if payload['complete']:
    pytest.skip('the run finished before the partial file was read')
  assert [p['width'] for p in payload['points']] == [4] and 'alpha' not in payload
  assert payload['trials'] == 20000 and payload['widths'] == [4, 256]


def test_library_callbacks_report_results_as_they_come():
  from ce_jax.studies import convergence
  from ce_jax.theory import alpha, variance
  points = []
  est = alpha.estimate_alpha('dense', [4, 8], 8, jax.random.PRNGKey(0), depth=2, input_dim=8,
                             on_point=points.append)
  assert [p.width for p in points] == [4, 8] and tuple(points) == est.points
  seen = []
  conv = convergence.ntk_convergence(jax.random.PRNGKey(0), depth=2, width=4,
                                  multiplicities=(1, 3), num_angles=5, nmk_samples=2,
                                  on_ensemble=lambda m, k: seen.append((m, np.asarray(k))))
  assert [m for m, _ in seen] == [1, 3]
  np.testing.assert_array_equal(seen[1][1], conv.ensemble_ntk['3'])


# ---------------------------------------------------------------------------------------------
# Degenerate fits


def test_fit_alpha_warns_about_degenerate_fits():
  from ce_jax.theory import alpha
  sound = alpha.fit_alpha([0.1, 0.2, 0.3], [1.2, 1.45, 1.75], [0.01, 0.01, 0.01])
  assert sound.alpha > 0 and sound.warnings == ()
  falling = alpha.fit_alpha([0.1, 0.2, 0.3], [1.3, 1.2, 1.1], [0.01, 0.01, 0.01])
  assert falling.alpha < 0
  assert len(falling.warnings) == 1 and 'alpha = ' in falling.warnings[0]
  assert '<= 0' in falling.warnings[0]
  below = alpha.fit_alpha([0.1, 0.2, 0.3], [0.9, 0.8, 0.7], intercept=False)
  assert below.alpha < 0 and '3 of 3 ratios' in below.warnings[0]
  flat = alpha.fit_alpha([0.1, 0.2, 0.3], [1.5, 1.5, 1.5])
  assert any('R^2 is undefined' in w for w in flat.warnings)
  assert all('\n' not in w for w in falling.warnings + below.warnings + flat.warnings)


def test_estimate_alpha_carries_the_warnings(monkeypatch):
  from ce_jax.theory import alpha, variance
  real = variance.ntk_moments

  def shrinking(sample_fn, key, trials, **kw):  # ratios that fall with S: alpha < 0
    mom = real(sample_fn, key, trials, **kw)
    shrinking.calls += 1
    return mom._replace(ratio=np.asarray([1.0 + 0.1 * shrinking.calls]))
  shrinking.calls = 0
  monkeypatch.setattr(variance, 'ntk_moments', shrinking)
  # One Monte Carlo per width (the full-weight path; the conditional one runs all in one).
  est = alpha.estimate_alpha('dense', [4, 8, 16], 4, jax.random.PRNGKey(0), depth=2,
                             input_dim=8, sampler='full_weights')
  assert est.fit.alpha < 0 and est.warnings == est.fit.warnings and est.warnings


# ---------------------------------------------------------------------------------------------
# The NTK functions still take every valid parameter tree


def test_ntk_checks_accept_matching_params():
  from ce_jax.theory import ntk
  from ce_jax.models import dense
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (4, 5))
  member = dense.DenseMember((8, 6), num_outputs=2)
  p = member.init(key, x)
  k_s = ntk.empirical_ntk_fn(member.apply)(x, None, p)
  k_j = ntk.empirical_ntk_fn(member.apply, backend='jax', vmap_axes=0)(x, None, p)
  np.testing.assert_allclose(k_s, k_j, rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(ntk.ntk_diagonal_fn(member.apply)(x, p), jnp.diag(k_s),
                             rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(ntk.empirical_ntk_fn(member.apply)(x, None, p['params']), k_s)
  stacked = dense.stack_member_params([member.init(jax.random.PRNGKey(i), x) for i in range(3)])
  k_e = ntk.ensemble_ntk_fn(member.apply)(x, None, stacked)
  k_e_jax = ntk.ensemble_ntk_fn(member.apply, backend='jax', vmap_axes=0)(x, None, stacked)
  np.testing.assert_allclose(k_e, k_e_jax, rtol=2e-4, atol=1e-5)
  d_e = ntk.ensemble_ntk_diagonal_fn(member.apply)(x, stacked)
  np.testing.assert_allclose(d_e, jnp.diag(k_e), rtol=2e-4, atol=1e-5)
  assert ntk.ntk_diagonal_fn(member.apply, stacked=True)(x, stacked).shape == (3, 4)
  ens = dense.DenseEnsemble(3, (8, 6), num_outputs=2)
  k_ens = ntk.empirical_ntk_fn(ens.apply)(x, None, ens.init(key, x))
  assert k_ens.shape == (4, 4)

  def plain(params, xb):
    return jnp.tanh(xb @ params['w']) @ params['v']

  pp = {'w': jnp.ones((5, 3)), 'v': jnp.ones((3, 1))}
  assert ntk.empirical_ntk_fn(plain)(x, None, pp).shape == (4, 4)
  # under an outer transformation the checks see tracers (shapes only)
  f = ntk.ntk_diagonal_fn(member.apply, backend='structured')
  out = jax.vmap(lambda k: f(x, member.init(k, x)))(jax.random.split(key, 2))
  assert out.shape == (2, 4)
