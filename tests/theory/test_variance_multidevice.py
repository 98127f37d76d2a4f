"""Monte Carlo on every device and host: the same moments as on one device, to float rounding.

Trials are sharded over all devices of all processes (``ce_jax.theory.variance``); trial i uses
``fold_in(key, i)`` wherever it runs.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from conftest import xla_flags

SCRIPT = r'''
import json, sys
import jax
if len(sys.argv) > 1:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{sys.argv[1]}', 2, int(sys.argv[2]))
from ce_jax.theory import alpha, variance
from ce_jax.design import presets
import numpy as np
x = np.random.default_rng(0).standard_normal((1, 3, 3, 8)).astype(np.float32)
out = {'devices': jax.device_count(), 'processes': jax.process_count()}
member = presets.bottleneck(in_channels=8, out_channels=8)
# The conditional sampler (no convolution) and the full-weight one (convolutions, lax.map).
# One chunk size: one program per sampler (compilation is most of a run); 37 and 11 trials
# leave the last round of chunks partly empty on two devices (rounds of 10).
for name in ('conditional', 'full_weights'):
  sampler = alpha.member_sampler(member, 4, x, sampler=name)
  m = variance.ntk_moments(sampler, jax.random.PRNGKey(1), 37, chunk_size=5)
  k = variance.neural_mean_kernel(sampler, jax.random.PRNGKey(2), 11, chunk_size=5)
  out[name] = {'mean': m.mean.tolist(), 'ratio': m.ratio.tolist(),
               'ratio_stderr': m.ratio_stderr.tolist(), 'nmk': k.mean.tolist()}
print('RESULT ' + json.dumps(out))
'''


def _run(tmp_path, *args, env_extra=None, background=False):
  path = tmp_path / 'mc.py'
  path.write_text(SCRIPT)
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env['XLA_FLAGS'] = xla_flags()   # no device count of the caller's
  env.update(env_extra or {})
  proc = subprocess.Popen([sys.executable, str(path), *args], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if background:
    return proc
  return _result(proc)


def _result(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  line = [l for l in out.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


def _same(a, b):
  for name in ('conditional', 'full_weights'):
    for key in ('mean', 'ratio', 'ratio_stderr', 'nmk'):
      np.testing.assert_allclose(a[name][key], b[name][key], rtol=1e-6, err_msg=f'{name} {key}')


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  return _run(tmp_path_factory.mktemp('one'))


def test_two_devices_give_the_moments_of_one(tmp_path, one_device):
  two = _run(tmp_path,
             env_extra={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=2')})
  assert one_device['devices'] == 1 and two['devices'] == 2
  _same(two, one_device)


def test_two_processes_give_the_moments_of_one(tmp_path, one_device):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = str(s.getsockname()[1])
  procs = [_run(tmp_path, port, str(i), background=True) for i in range(2)]
  results = [_result(p) for p in procs]
  for r in results:
    assert r['processes'] == 2 and r['devices'] == 2
    _same(r, one_device)
