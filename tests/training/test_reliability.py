"""Training faults (docs/RELIABILITY.md): workdir locks, config records, output paths, runs that
do not learn, a full disk, a kill during a checkpoint write, degenerate NTK-dynamics points."""

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from conftest import load_json
from conftest import run_binary

if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ce_jax.tools import guards  # noqa: E402
from ce_jax.training import train  # noqa: E402
from experiments.configs import digits  # noqa: E402

TINY = {'m': 2, 'n': 16, 'depth': 3, 'batch_size': 64, 'eval_batch_size': 64,
        'num_train_steps': 10, 'log_every_steps': 5, 'checkpoint_every_steps': 5,
        'keep_checkpoints': 2}
TINY_FLAGS = ['--config=experiments/configs/digits.py'] + [f'--config.{k}={v}'
                                                           for k, v in TINY.items()]


def tiny(**overrides):
  config = digits.get_config()
  for k, v in {**TINY, **overrides}.items():
    setattr(config, k, v)
  return config


def _env():
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _errors(stderr, prog):
  """The lines of stderr that our binaries print for an error (not absl/XLA log lines)."""
  return [line for line in stderr.splitlines() if line.startswith(f'{prog}: error: ')]


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def _dead_pid():
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


# ------------------------------------------------------------------ workdir lock


def test_second_run_on_a_locked_workdir_refuses_in_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  with guards.WorkdirLock(workdir) as lock:  # the first run holds the workdir
    holder = json.load(open(lock.path))
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
    with pytest.raises(guards.WorkdirLockedError) as e:  # in-process: a ValueError
      train.train_and_evaluate(tiny(), workdir)
    assert '\n' not in str(e.value) and f'pid {os.getpid()} on host' in str(e.value)
    proc = run_binary('train', *TINY_FLAGS, f'--workdir={workdir}', check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errs = _errors(proc.stderr, 'train.py')
  assert len(errs) == 1 and 'is in use by pid' in errs[0] and str(os.getpid()) in errs[0]
  assert 'Traceback' not in proc.stderr
  assert sorted(os.listdir(workdir)) == []  # nothing written; the lock file is gone


def test_stale_lock_is_taken_over_with_a_message(tmp_path, capsys):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  dead = _dead_pid()
  (workdir / guards.LOCK_NAME).write_text(json.dumps({'pid': dead,
                                                      'host': socket.gethostname()}))
  with guards.WorkdirLock(str(workdir)) as lock:
    assert lock.took_over['pid'] == dead
    assert json.load(open(lock.path))['pid'] == os.getpid()
  err = capsys.readouterr().err
  assert 'took over the stale lock' in err and f'pid {dead}' in err and 'is gone' in err
  assert not (workdir / guards.LOCK_NAME).exists()
  # A lock from another host can not be checked from here: refused, naming the file.
  (workdir / guards.LOCK_NAME).write_text(json.dumps({'pid': 1, 'host': 'elsewhere'}))
  with pytest.raises(guards.WorkdirLockedError, match='another host; if that run is gone'):
    guards.WorkdirLock(str(workdir)).acquire()


# ------------------------------------------------------------------ config record


def test_changed_config_is_refused_and_overwrite_starts_afresh(tmp_path):
  workdir = str(tmp_path / 'run')
  first = train.train_and_evaluate(tiny(), workdir)
  assert load_json(os.path.join(workdir, 'config.json'))['learning_rate'] == 0.01
  before = open(os.path.join(workdir, 'summary.json')).read()
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny(learning_rate=0.02, seed=3), workdir)
  msg = str(e.value)
  assert '\n' not in msg and 'learning_rate 0.01 -> 0.02' in msg and 'seed 0 -> 3' in msg
  assert '--config.overwrite=True' in msg
  assert open(os.path.join(workdir, 'summary.json')).read() == before  # untouched
  # Bookkeeping keys may change; a longer run extends the old one; a shorter one is refused.
  longer = train.train_and_evaluate(tiny(num_train_steps=15, log_every_steps=3), workdir)
  assert longer['resumed_from_step'] == 10 and longer['steps'] == 15
  with pytest.raises(ValueError, match='beyond this config.s 10 steps'):
    train.train_and_evaluate(tiny(), workdir)
  fresh = train.train_and_evaluate(tiny(learning_rate=0.02, overwrite=True), workdir)
  assert fresh['resumed_from_step'] == 0 and fresh['steps'] == 10
  assert fresh['config']['learning_rate'] == 0.02 and fresh['params_l2'] != first['params_l2']
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in rows if 'train_loss' in r] == [5, 10]  # the old rows are gone
  again = train.train_and_evaluate(tiny(learning_rate=0.02), workdir)  # same config: resumes
  assert again['resumed_from_step'] == 10


def test_changed_m_is_refused_in_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny(num_train_steps=5), workdir)
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny(num_train_steps=5, m=3), workdir)
  assert '\n' not in str(e.value) and 'm 2 -> 3' in str(e.value)
  # Without the record (older workdirs, or model= modules) the checkpoint's shapes catch it.
  os.remove(os.path.join(workdir, 'config.json'))
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny(num_train_steps=5, m=3), workdir)
  assert '\n' not in str(e.value) and 'holds a different model' in str(e.value)
  assert 'has shape (2, 64, 16) there, (3, 64, 16) in this model' in str(e.value)


def test_reusable_run_only_for_exactly_the_same_settings(tmp_path):
  run_dir = str(tmp_path / 'run')
  assert guards.reusable_run(run_dir, tiny()) == (None, None)
  done = train.train_and_evaluate(tiny(num_train_steps=-1, num_epochs=1), run_dir)
  summary, changed = guards.reusable_run(run_dir, tiny(num_train_steps=-1, num_epochs=1))
  assert summary['params_l2'] == done['params_l2'] and changed is None
  assert guards.reusable_run(run_dir, tiny(num_train_steps=-1, num_epochs=2)) == (None, None)
  _, changed = guards.reusable_run(run_dir, tiny(num_train_steps=-1, num_epochs=1, n=8))
  assert changed == 'n 16 -> 8'
  _, changed = guards.reusable_run(run_dir, tiny(num_train_steps=-1, num_epochs=1,
                                                 log_every_steps=7))
  assert changed is None  # not reused (settings differ), but the trainer may resume there


# ------------------------------------------------------------------ paths


def test_workdir_under_a_file_is_one_line_before_any_work(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(ValueError, match=r'is under a file .*, not a directory'):
    train.train_and_evaluate(tiny(), str(blocker / 'run'))
  with pytest.raises(ValueError, match='is a file, not a directory'):
    guards.check_output_dir(str(blocker))
  with pytest.raises(ValueError, match='--json_out=.* is under a file'):
    guards.check_output_file(str(blocker / 'a.json'), '--json_out')
  proc = run_binary('demo', f'--workdir={blocker}/demo', '--quick', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert _errors(proc.stderr, 'demo.py') == [
      f'demo.py: error: --workdir={blocker}/demo is under a file ({blocker}), not a directory']


# ------------------------------------------------------------------ learning guards


def test_progress_problem():
  hist = [(s, 2.0 - 0.01 * s) for s in range(5, 101, 5)]
  assert guards.progress_problem(hist, 100, 10) is None  # improving, below chance
  flat = [(s, 1.5) for s in range(5, 101, 5)]
  assert 'has not improved over the last 20 steps' in guards.progress_problem(flat, 100, 10)
  chance = [(s, np.log(10)) for s in range(5, 101, 5)]
  assert 'is at chance (ln(10) = 2.303)' in guards.progress_problem(chance, 100, 10)
  assert 'is above chance' in guards.progress_problem([(1, 3.0), (2, 2.9)], 2, 10)
  assert guards.progress_problem([(s, 1e-4) for s in range(1, 11)], 10, 10) is None  # fit


def test_lr_that_stalls_training_warns_and_fails_with_the_flag(tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  flags = ['--config=experiments/configs/digits.py', '--config.num_train_steps=42',
           '--config.log_every_steps=5', '--config.learning_rate=1e6']
  proc = run_binary('train', *flags, '--config.fail_on_no_progress=True',
                    f'--workdir={workdir}', check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  errs = _errors(proc.stderr, 'train.py')
  assert len(errs) == 1 and 'no progress' in errs[0] and 'at chance (ln(10)' in errs[0]
  assert 'config:' not in proc.stderr and 'Traceback' not in proc.stderr  # no config dump
  summary = load_json(os.path.join(workdir, 'summary.json'))
  assert summary['no_progress'] and summary['test_error_top1'] > 0.8
  # Without the flag (a bookkeeping key: the finished run is reused) it is a warning only.
  config = digits.get_config()
  config.num_train_steps, config.log_every_steps, config.learning_rate = 42, 5, 1e6
  with caplog.at_level(logging.WARNING):
    again = train.train_and_evaluate(config, workdir)
  assert again['resumed_from_step'] == 42 and again['no_progress'].startswith('no progress')
  assert any('no progress' in r.getMessage() for r in caplog.records)


def test_ablation_with_a_huge_learning_rate_fails_its_repetitions(tmp_path):
  out = tmp_path / 'ablation.json'
  proc = run_binary('ablation', '--learning_rate=1e6', '--repetitions=2', '--epochs=1',
                    '--baseline_width=8', '--min_width=4', '--primal_widths=8',
                    '--dual_multiplicities=1', '--batch_size=64', '--max_train=256',
                    f'--json_out={out}', check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  errs = _errors(proc.stderr, 'ablation.py')
  assert len(errs) == 1 and '2 of 2 repetitions failed (NaN/Inf' in errs[0]
  assert str(out) in errs[0] and 'Traceback' not in proc.stderr
  res = load_json(out)
  assert res['failed'] == 2
  for row in res['primal'] + res['dual']:
    assert row['failed_repetitions'] == [0, 1]
    assert row['test_error_mean'] is None  # no mean over diverged runs
  assert not os.path.exists(str(out) + '.lock')


# ------------------------------------------------------------------ disk full


@contextlib.contextmanager
def _small_tmpfs(path, size='2m'):
  """A mounted tmpfs of ``size`` at ``path``, or None where mounting is not allowed."""
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
                                          path], capture_output=True).returncode != 0:
    yield None
    return
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', path], capture_output=True)


def _fill(directory):
  """Writes a file until the disk is full (it may be full already: then nothing to do)."""
  try:
    fd = os.open(os.path.join(directory, 'filler'), os.O_WRONLY | os.O_CREAT)
  except OSError as e:
    assert e.errno == errno.ENOSPC
    return
  try:
    while True:
      os.write(fd, b'\0' * 4096)
  except OSError as e:
    assert e.errno == errno.ENOSPC
  finally:
    os.close(fd)


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_earlier_one(tmp_path,
                                                                             monkeypatch):
  # Synchronous saves: the checkpoint at step 10 is complete when on_checkpoint(10) runs.
  config = tiny(num_train_steps=30, log_every_steps=30, checkpoint_every_steps=10,
                keep_checkpoints=3, async_checkpointing=False)
  with _small_tmpfs(str(tmp_path / 'disk')) as disk:
    workdir = os.path.join(disk or str(tmp_path / 'simulated'), 'run')
    if disk:  # a real full disk from step 10 on
      def fill(step):
        if step == 10:
          _fill(disk)
    else:  # simulated: the save at step 20 fails the way orbax reports ENOSPC
      from ce_jax.training import checkpointing
      real_save = checkpointing.Checkpointer.save
      fill = None

      def failing_save(self, step, state, meta):
        if step == 20:
          with self._writing(step):  # pylint: disable=protected-access
            raise ValueError('RESOURCE_EXHAUSTED: Error writing local file: Failed to write 208 '
                             "bytes: No space left on device [os_error_code='28']")
        return real_save(self, step, state, meta)
      monkeypatch.setattr(checkpointing.Checkpointer, 'save', failing_save)

    with pytest.raises(guards.DiskFullError) as e:
      train.train_and_evaluate(config, workdir, on_checkpoint=fill)
    msg = str(e.value)
    assert '\n' not in msg
    assert msg.startswith(f'no space left on device writing {workdir}/checkpoints/20 ')
    assert 'the disk is full' in msg and 'the last complete checkpoint is step 10' in msg
    assert _steps(workdir) == [10]
    assert not os.path.exists(os.path.join(workdir, guards.LOCK_NAME))
    if disk:
      os.remove(os.path.join(disk, 'filler'))
    monkeypatch.undo()
    resumed = train.train_and_evaluate(config, workdir)  # the earlier checkpoint is intact
    assert resumed['resumed_from_step'] == 10 and resumed['steps'] == 30
    assert not [d for d in os.listdir(os.path.join(workdir, 'checkpoints')) if 'tmp' in d]


def test_disk_full_in_metrics_and_summary_is_one_line(tmp_path, monkeypatch):
  real_open = open

  def full_open(path, mode='r', *args, **kwargs):
    if str(path).endswith('metrics.jsonl') and mode[0] in 'aw':
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real_open(path, mode, *args, **kwargs)

  monkeypatch.setattr(train, 'open', full_open, raising=False)
  workdir = str(tmp_path / 'metrics')
  with pytest.raises(guards.DiskFullError) as e:
    train.train_and_evaluate(tiny(), workdir)
  assert str(e.value).startswith(f'no space left on device writing {workdir}/metrics.jsonl ')
  monkeypatch.undo()
  from ce_jax.tools import cli
  real_write = cli.write_json

  def full_write(path, payload):
    if path.endswith('summary.json'):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path + '.tmp')
    return real_write(path, payload)

  monkeypatch.setattr(cli, 'write_json', full_write)
  workdir = str(tmp_path / 'summary')
  with pytest.raises(guards.DiskFullError, match=f'writing {workdir}/summary.json .the summary'):
    train.train_and_evaluate(tiny(), workdir)
  assert _steps(workdir) == [5, 10]


def test_full_disk_before_the_run_is_one_line_exit_1(tmp_path):
  with _small_tmpfs(str(tmp_path / 'disk'), size='64k') as disk:
    if disk is None:
      pytest.skip('mounting a tmpfs needs root (the simulated tests above cover the messages)')
    _fill(disk)
    proc = run_binary('train', *TINY_FLAGS, f'--workdir={disk}/run', check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  errs = _errors(proc.stderr, 'train.py')
  assert len(errs) == 1 and f'no space left on device writing {disk}/run/' in errs[0]
  assert 'the disk is full' in errs[0] and 'Traceback' not in proc.stderr


# ------------------------------------------------------------------ kill during a write

KILLED_DURING_WRITE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from orbax.checkpoint._src.path import atomicity
from ce_jax.training import train
from experiments.configs import digits
config = digits.get_config()
for k, v in {overrides!r}.items():
  setattr(config, k, v)
finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def killing_finalize(self, *args, **kwargs):
  if self.get_final().name == '20':  # step 20 is written but not yet committed
    os.kill(os.getpid(), signal.SIGKILL)
  return await finalize(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
train.train_and_evaluate(config, {workdir!r})
print('not killed')
"""


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path, capsys):
  overrides = dict(TINY, num_train_steps=30, checkpoint_every_steps=10, log_every_steps=10,
                   keep_checkpoints=3)
  workdir = str(tmp_path / 'run')
  proc = subprocess.run(
      [sys.executable, '-c', KILLED_DURING_WRITE.format(repo=REPO, overrides=overrides,
                                                        workdir=workdir)],
      env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert '10' in names and '20' not in names and any(n.startswith('20.') for n in names)
  assert os.path.exists(os.path.join(workdir, guards.LOCK_NAME))  # left by the killed run
  resumed = train.train_and_evaluate(tiny(**overrides), workdir)
  assert 'took over the stale lock' in capsys.readouterr().err
  assert resumed['resumed_from_step'] == 10 and resumed['steps'] == 30
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '20', '30']
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [r['step'] for r in map(json.loads, f) if 'train_loss' in r]
  assert steps == [10, 20, 30]


# ------------------------------------------------------------------ ntk_dynamics


def test_dynamics_points_are_reported_as_they_come_and_degenerate_ones_skipped(monkeypatch):
  from ce_jax.studies import dynamics
  changes = {(1, 4): (0.0, 0.5), (2, 2): (0.2, 0.4), (1, 9): (0.1, 0.3), (3, 3): (0.05, np.nan)}

  def fake_measure(g, *args, **kwargs):
    off, frob = changes[(g.m, g.n)]
    return dynamics.DynamicsPoint(g.m, g.n, 0, g.panel, g.m * g.n, off, 0.0, frob, 0.0, 1.0,
                                  0.5, 0.0)

  monkeypatch.setattr(dynamics, 'measure_point', fake_measure)
  grid = [dynamics.GridPoint(m, n, 0, 'a') for m, n in changes]
  seen = []
  res = dynamics.run_dynamics(grid, None, None, None, progress=None,
                              on_point=lambda pts: seen.append(len(pts)))
  assert seen == [1, 2, 3, 4]
  assert res.skipped == {'frob': [3], 'offdiag': [0]}
  assert res.fit_offdiag.num_points == 3 and np.isfinite(res.fit_offdiag.slope)
  assert res.fit_frob.num_points == 3 and np.isfinite(res.fit_frob.slope)
  fit, skipped = dynamics.fit_usable([4, 4, 9], [0.0, 1.0, 1.0])
  assert skipped == [0] and np.isnan(fit.slope) and fit.num_points == 2


def test_ntk_dynamics_degenerate_point_is_a_warning_not_fatal(tmp_path):
  out = tmp_path / 'dyn.json'
  proc = run_binary('ntk_dynamics', '--ds=2,3', '--steps=5', '--seeds=1', '--num_train=32',
                    f'--json_out={out}', check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = load_json(out)
  assert res['complete'] and res['skipped']['offdiag'] == [0]  # m=1, n=4: |dK01| exactly 0
  assert res['points'][0]['delta_offdiag'] == 0.0
  assert res['fit_offdiag']['num_points'] == 3 and res['slope'] is not None
  warnings = [line for line in proc.stderr.splitlines()
              if line.startswith('ntk_dynamics.py: warning: ')]
  assert len(warnings) == 1 and 'm=1 n=4' in warnings[0] and 'left out' in warnings[0]


# ------------------------------------------------------------------ demo (slow: ~1-2 min)


@pytest.mark.slow
def test_demo_quick_keeps_explicit_flags_and_reruns_changed_designs(tmp_path):
  workdir = str(tmp_path / 'demo')
  flags = [f'--workdir={workdir}', '--quick', '--seeds=1', '--alpha_trials=16']
  proc = run_binary('demo', *flags)
  assert '1 seeds x 1 epochs per design' in proc.stdout
  assert '16 trials x 3 widths' in proc.stdout
  again = run_binary('demo', *flags, '--epochs=2')  # more epochs: the runs are extended
  assert '1 seeds x 2 epochs per design' in again.stdout
  assert again.stdout.count('reused') == 1  # the alpha fit only
  for name in ('baseline', 'primal', 'dual'):
    s = load_json(os.path.join(workdir, 'runs', name, 'seed_0', 'summary.json'))
    assert s['resumed_from_step'] == 21 and s['steps'] == 42
  fewer = run_binary('demo', *flags)  # fewer epochs than recorded: retrained afresh
  assert fewer.stdout.count('settings changed (num_epochs 2 -> 1)') == 3
  s = load_json(os.path.join(workdir, 'runs', 'dual', 'seed_0', 'summary.json'))
  assert s['resumed_from_step'] == 0 and s['steps'] == 21
