"""Faults: SIGKILL after a checkpoint then the same command again ends where an uninterrupted run
ends; invalid config values fail before any work with one line and exit code 2."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import run_binary
from conftest import xla_flags

if REPO not in sys.path:
  sys.path.insert(0, REPO)

OVERRIDES = {'m': 2, 'n': 16, 'num_train_steps': 60, 'checkpoint_every_steps': 10,
             'log_every_steps': 10, 'keep_checkpoints': 3}
FLAGS = ['--config=experiments/configs/digits.py'] + [f'--config.{k}={v}'
                                                      for k, v in OVERRIDES.items()]

KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from ce_jax.training import train
from experiments.configs import digits
config = digits.get_config()
for k, v in {overrides!r}.items():
  setattr(config, k, v)

def kill(step):
  if step >= 30:  # the checkpoints at 10 and 20 are complete; 30 may still be in flight
    os.kill(os.getpid(), signal.SIGKILL)

train.train_and_evaluate(config, {workdir!r}, on_checkpoint=kill)
print('not killed')
"""


def _env():
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


@pytest.mark.slow
def test_sigkill_after_checkpoint_then_rerun_matches_uninterrupted(tmp_path):
  from ce_jax.training import train
  from experiments.configs import digits
  config = digits.get_config()
  for k, v in OVERRIDES.items():
    setattr(config, k, v)
  workdir = str(tmp_path / 'run')
  killed = subprocess.Popen(
      [sys.executable, '-c', KILLED_RUN.format(repo=REPO, overrides=OVERRIDES, workdir=workdir)],
      env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  reference = train.train_and_evaluate(config, str(tmp_path / 'reference'))  # meanwhile
  out, err = killed.communicate(timeout=600)
  assert killed.returncode == -signal.SIGKILL, err[-3000:]
  assert 'not killed' not in out
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  steps = [int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()]
  assert 10 in steps or 20 in steps

  run_binary('train', *FLAGS, f'--workdir={workdir}', env={'JAX_PLATFORMS': 'cpu'})
  with open(os.path.join(workdir, 'summary.json')) as f:
    resumed = json.load(f)
  assert resumed['resumed_from_step'] in (20, 30)
  assert resumed['steps'] == reference['steps'] == 60
  assert abs(resumed['params_l2'] - reference['params_l2']) <= 1e-6 * reference['params_l2']
  # metrics.jsonl has each step once (rows after the checkpoint were dropped and replayed).
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train_steps = [r['step'] for r in map(json.loads, f) if 'train_loss' in r]
  assert train_steps == sorted(set(train_steps)) == list(range(10, 61, 10))


CASES = [
    (['--config.learning_rate=-0.1'], {}, 'learning_rate must be a finite number > 0, got -0.1'),
    (['--config.dataset=svhn'], {}, 'dataset must be one of'),
    (['--config.model=resnet7'], {}, 'model must be one of'),
    (['--config.batch_size=64'],
     {'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=3')},
     'batch_size must be divisible by the number of devices (3), got 64'),
]


@pytest.mark.slow
def test_invalid_config_values_fail_with_one_line_before_any_work(tmp_path):
  procs = []
  for i, (flags, env, _) in enumerate(CASES):
    full_env = _env()
    full_env.update(env)
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
         '--config=experiments/configs/digits.py', f'--workdir={tmp_path / str(i)}', *flags],
        env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for proc, (flags, _, message) in zip(procs, CASES):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (flags, err[-2000:])
    lines = [line for line in err.strip().splitlines() if 'error' in line.lower()
             and not line.startswith(('E0000', 'W0000', 'I0000'))]
    assert len(lines) == 1 and lines[0].startswith('train.py: error: '), (flags, err[-2000:])
    assert message in lines[0]
    assert 'Traceback' not in err
  assert not any((tmp_path / str(i)).exists() for i in range(len(CASES)))  # no work done
