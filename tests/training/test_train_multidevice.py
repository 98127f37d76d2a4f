"""Several devices and processes: the same global batch gives the same training run.

Training on digits with 2 (fake CPU) devices, and with 2 processes on localhost (gloo
collectives), ends with the same ``params_l2`` as one device (relative 1e-4).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import xla_flags
from conftest import run_binary

if REPO not in sys.path:
  sys.path.insert(0, REPO)

OVERRIDES = {'m': 2, 'n': 16, 'num_train_steps': 30, 'batch_size': 64, 'eval_batch_size': 64,
             'log_every_steps': 10, 'checkpoint_every_steps': 100}
FLAGS = ['--config=experiments/configs/digits.py'] + [f'--config.{k}={v}'
                                                      for k, v in OVERRIDES.items()]


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  from ce_jax.training import train
  from experiments.configs import digits
  config = digits.get_config()
  for k, v in OVERRIDES.items():
    setattr(config, k, v)
  return train.train_and_evaluate(config, str(tmp_path_factory.mktemp('one_device')))


def _load(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def _close(a, b, rel=1e-4):
  return abs(a - b) <= rel * abs(b)


@pytest.mark.slow
def test_two_devices_match_one_device(tmp_path, one_device):
  workdir = str(tmp_path / 'two')
  run_binary('train', *FLAGS, f'--workdir={workdir}',
             env={'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=2'),
                  'JAX_PLATFORMS': 'cpu'})
  two = _load(workdir)
  assert two['devices'] == 2 and one_device['devices'] == 1
  assert two['steps'] == one_device['steps'] == 30
  assert _close(two['params_l2'], one_device['params_l2'])
  assert _close(two['test_error_top1'] + 1, one_device['test_error_top1'] + 1, 1e-3)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_device(tmp_path, one_device):
  workdir = str(tmp_path / 'two_processes')
  port = _free_port()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env['XLA_FLAGS'] = xla_flags()   # no device count of the caller's
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'experiments', 'train.py'), *FLAGS,
       f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=500)
    assert proc.returncode == 0, err[-3000:]
  two = _load(workdir)
  assert two['processes'] == 2 and two['devices'] == 2
  assert two['steps'] == 30
  assert _close(two['params_l2'], one_device['params_l2'])
