"""Guards for long runs: workdir locks, config records, output paths, write errors, progress.

Shared by the trainer (:mod:`ce_jax.training.train`) and the binaries in ``experiments/``; see
``docs/RELIABILITY.md`` ("Training faults") for the scenarios each guard handles.

* :class:`WorkdirLock`: one run per workdir. The lock file ``<workdir>/.lock`` holds the
  holder's PID, host and start time, and is ``flock``-ed while the run lives; a second run
  refuses in one line naming the holder. A lock file left by a process that is gone (its
  ``flock`` was released by the kernel) is taken over with a warning.
* :func:`check_config_record`: the config is recorded in ``<workdir>/config.json``; a rerun
  whose config differs in a key that changes results refuses in one line listing the keys,
  unless the config asks to ``overwrite`` (start afresh).
* :func:`check_output_dir` / :func:`check_output_file`: a path under a file, or in a directory
  that cannot be written, fails in one line before any work.
* :func:`writing`: turns a full disk (``ENOSPC``, orbax/tensorstore ``RESOURCE_EXHAUSTED``) or
  another write error into one line naming the path (:class:`DiskFullError`,
  :class:`WriteFailedError`).
* :func:`progress_problem`: a run whose training loss has not improved over the last part of
  the run, or ends at (or above) chance, ``ln(num_classes)``.
* :func:`run_main`: ``cli.run_main`` (``ValueError``: exit 2) plus exit 1 with one line for a
  failed run (:class:`RunFailedError`, NaN/Inf, write errors).

Exit codes of the binaries: 2 bad input, 1 failed run, 0 success.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import math
import os
import shutil
import socket
import sys
from typing import Any, Callable, Iterable, Sequence

__all__ = ['RunFailedError', 'NoProgressError', 'WriteFailedError', 'DiskFullError',
           'WorkdirLockedError', 'WorkdirLock', 'maybe_lock', 'check_output_dir',
           'check_output_file', 'is_disk_full', 'translate_write_error', 'writing',
           'normalize_config', 'config_diff', 'format_diff', 'read_config_record',
           'check_config_record', 'remove_run_outputs', 'reusable_run', 'progress_problem',
           'run_main', 'warn',
           'LOCK_NAME', 'RECORD_NAME', 'NEUTRAL_KEYS', 'LENGTH_KEYS']

LOCK_NAME = '.lock'
RECORD_NAME = 'config.json'

# Config keys that do not change the trained parameters or the reported results: a rerun may
# change them freely. Everything else is compared with the recorded config.
NEUTRAL_KEYS = frozenset({
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'async_checkpointing',
    'eval_every_epochs', 'eval_batch_size', 'data_dir', 'overwrite', 'fail_on_no_progress',
    'no_progress_window', 'chance_tolerance', 'paper_params_m'})
# Keys that set the length of a run: a rerun may extend a run (it resumes), never shorten it
# below its newest checkpoint (checked by the trainer).
LENGTH_KEYS = frozenset({'num_epochs', 'num_train_steps'})

# Write errors reported in one line (exit 1) instead of a traceback.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                           errno.EIO, errno.EFBIG, errno.ENOTDIR, errno.EISDIR})


class RunFailedError(RuntimeError):
  """A run started but failed (exit code 1 in the binaries); the message is one line."""


class NoProgressError(RunFailedError):
  """The training loss did not improve, or it ended at chance (``fail_on_no_progress``)."""


class WriteFailedError(RunFailedError):
  """Writing a run's output (checkpoint, metrics, summary) failed; ``path`` names it."""

  def __init__(self, message: str, path: str = ''):
    super().__init__(message)
    self.path = path


class DiskFullError(WriteFailedError):
  """No space left on the device (or over quota) while writing ``path``."""


class WorkdirLockedError(ValueError):
  """Another live run holds the workdir (a usage error: exit code 2)."""


def warn(message: str, prog: str | None = None) -> None:
  """Prints ``<prog>: warning: <message>`` to stderr (one line)."""
  prog = prog or os.path.basename(sys.argv[0] or 'ce_jax')
  print(f'{prog}: warning: {message}', file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Output paths


def _first_existing(path: str) -> str:
  p = os.path.abspath(path)
  while not os.path.lexists(p):
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  return p


def check_output_dir(path: str | None, flag: str = '--workdir', shown: str | None = None,
                     required: bool = False) -> str | None:
  """Checks, creating nothing, that directory ``path`` exists or can be created and written.

  Returns it absolute; an empty value (None or '') gives None, or, with ``required``, a
  one-line error. Raises a one-line ``ValueError`` when it, or one of its parents, is a file, or
  when its nearest existing parent cannot be written. ``shown``: the flag's value to name in
  messages (default ``path``). The one check of every output directory (``ce_jax.tools.cli`` checks
  the binaries' output flags with it).
  """
  shown = path if shown is None else shown
  if path is None or path == '':
    if required:
      raise ValueError(f'{flag} must not be empty')
    return None
  full = os.path.abspath(os.path.expanduser(str(path)))
  base = _first_existing(full)
  if not os.path.isdir(base):
    where = 'is a file' if base == full and shown == path else f'is under a file ({base})'
    raise ValueError(f'{flag}={shown} {where}, not a directory')
  if not os.access(base, os.W_OK | os.X_OK):
    raise ValueError(f'{flag}={shown}: the directory {base} is not writable')
  return full


def check_output_file(path: str | None, flag: str) -> str | None:
  """Checks, creating nothing, that file ``path`` can be written: it is not a directory, its
  parent exists or can be created (no file on the way) and is writable. Returns it absolute
  (None for an empty value)."""
  if path is None or path == '':
    return None
  path = str(path)
  full = os.path.abspath(os.path.expanduser(path))
  if path.endswith(('/', os.sep)) or os.path.isdir(full):
    raise ValueError(f'{flag}={path} is a directory; give a file name')
  if os.path.lexists(full) and not os.access(full, os.W_OK):
    raise ValueError(f'{flag}={path} exists and is not writable')
  base = _first_existing(os.path.dirname(full))
  if not os.path.isdir(base):
    raise ValueError(f'{flag}={path}: its directory cannot be created, it is under a file '
                     f'({base})')
  if not os.access(base, os.W_OK | os.X_OK):
    raise ValueError(f'{flag}={path}: the directory {base} is not writable')
  return full


# ---------------------------------------------------------------------------------------------
# Write errors


def _chain(exc: BaseException) -> Iterable[BaseException]:
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
  """True for ``ENOSPC``/``EDQUOT`` (also wrapped: orbax raises tensorstore's
  ``RESOURCE_EXHAUSTED ... No space left on device`` as a ``ValueError``)."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(e)
    if ('No space left on device' in text or "os_error_code='28'" in text
        or 'Disk quota exceeded' in text or text.startswith('RESOURCE_EXHAUSTED: Error writing')):
      return True
  return False


def _write_errno(exc: BaseException) -> OSError | None:
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
      return e
  return None


def translate_write_error(exc: BaseException, path: str, what: str = '',
                          hint: str = '') -> RunFailedError | None:
  """The one-line :class:`DiskFullError`/:class:`WriteFailedError` for ``exc``, or None."""
  if isinstance(exc, RunFailedError):
    return exc
  what = f' ({what})' if what else ''
  hint = f'; {hint}' if hint else ''
  if is_disk_full(exc):
    return DiskFullError(f'no space left on device writing {path}{what}: the disk is full; '
                         f'free space and rerun{hint}', path)
  e = _write_errno(exc)
  if e is not None:
    return WriteFailedError(f'cannot write {e.filename or path}{what}: '
                            f'{e.strerror or os.strerror(e.errno)}{hint}', path)
  return None


@contextlib.contextmanager
def writing(path: str, what: str = '', hint: str | Callable[[], str] = ''):
  """Re-raises a full disk or a write error inside the block as one line naming ``path``.

  ``hint`` (a string or a function returning one, called on error) is appended to the
  message, e.g. which checkpoint is the last complete one.
  """
  try:
    yield
  except RunFailedError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    err = translate_write_error(e, path, what, hint() if callable(hint) else hint)
    if err is None:
      raise
    raise err from None


# ---------------------------------------------------------------------------------------------
# Workdir lock


def _pid_alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _describe(holder: dict) -> str:
  parts = [f'pid {holder.get("pid", "?")} on host {holder.get("host", "?")}']
  if holder.get('started'):
    parts.append(f'since {holder["started"]}')
  command = holder.get('command') or ''
  if command:
    parts.append(f'({command if len(command) <= 120 else command[:117] + "..."})')
  return ' '.join(parts)


class WorkdirLock:
  """An exclusive lock on ``directory`` for one run (a context manager).

  Args:
    directory: the workdir (created if missing).
    name: the lock file's name inside it.
    what: the flag to name in messages (``--workdir``).
    target: what the lock protects, for messages (default: ``directory``).

  :meth:`acquire` raises :class:`WorkdirLockedError` (one line naming the holder's PID, host
  and command) when a live process holds the lock; a lock file whose holder is gone (no
  ``flock`` on it) is taken over with a warning. The lock file records this process's PID,
  host, start time and command; :meth:`release` removes it.
  """

  def __init__(self, directory: str, name: str = LOCK_NAME, what: str = '--workdir',
               target: str | None = None):
    self.directory = os.path.abspath(directory)
    self.path = os.path.join(self.directory, name)
    self.what = what
    self.target = target or self.directory
    self._fd = None
    self.took_over: dict | None = None

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        text = f.read()
      return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
      return {}

  def acquire(self) -> 'WorkdirLock':
    import fcntl
    with writing(self.path, 'the workdir lock'):
      os.makedirs(self.directory, exist_ok=True)
      while True:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
          os.close(fd)
          if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
          raise WorkdirLockedError(
              f'{self.what} {self.target} is in use by {_describe(self._read())}; wait for '
              f'that run to finish or use another {self.what}') from None
        try:  # the file may have been removed by its previous holder meanwhile: retry
          same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
          same = False
        if same:
          break
        os.close(fd)
      self._fd = fd
      previous = self._read()
      host = socket.gethostname()
      if previous and previous.get('host') != host:  # its liveness can not be checked here
        self._close()
        raise WorkdirLockedError(
            f'{self.what} {self.target} is locked by {_describe(previous)}, another host; '
            f'if that run is gone, delete {self.path}')
      if previous and previous.get('pid') != os.getpid():
        self.took_over = previous
      record = {'pid': os.getpid(), 'host': host,
                'started': datetime.datetime.now().isoformat(timespec='seconds'),
                'command': ' '.join(sys.argv)[:500]}
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
    if self.took_over is not None:
      from absl import logging
      alive = _pid_alive(int(self.took_over.get('pid') or 0))
      msg = (f'took over the stale lock {self.path} of {_describe(self.took_over)} '
             f'({"that process no longer holds it" if alive else "that process is gone"})')
      logging.warning('%s', msg)
      warn(msg)
    return self

  def _close(self):
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def release(self) -> None:
    """Removes the lock file (while still holding it) and releases the lock."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except OSError:
      pass
    self._close()

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


@contextlib.contextmanager
def maybe_lock(directory: str | None, enabled: bool = True, **kwargs):
  """``WorkdirLock(directory)`` when ``enabled`` and a directory is given, else nothing."""
  if not directory or not enabled:
    yield None
    return
  lock = WorkdirLock(directory, **kwargs).acquire()
  try:
    yield lock
  finally:
    lock.release()


# ---------------------------------------------------------------------------------------------
# Config record


def normalize_config(config: Any) -> dict:
  """A JSON round trip of ``config`` (a ConfigDict or a dict): tuples become lists, etc."""
  from ce_jax.tools import cli
  if hasattr(config, 'to_dict'):
    config = config.to_dict()
  return json.loads(json.dumps(cli._to_jsonable(dict(config))))  # pylint: disable=protected-access


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = v
  return out


_ABSENT = object()


def config_diff(recorded: dict, current: dict, ignore: Iterable[str] = NEUTRAL_KEYS
                ) -> list[tuple[str, Any, Any]]:
  """``[(key, recorded value, current value)]`` for the keys (dotted for nested dicts) that
  differ, ignoring ``ignore`` (top-level names); absent keys are reported as ``<absent>``."""
  ignore = set(ignore)
  a, b = _flatten(normalize_config(recorded)), _flatten(normalize_config(current))
  out = []
  for key in sorted(set(a) | set(b)):
    if key.split('.')[0] in ignore:
      continue
    va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
    if va != vb:
      out.append((key, va, vb))
  return out


def _short(v: Any) -> str:
  if v is _ABSENT:
    return '<absent>'
  text = json.dumps(v)
  return text if len(text) <= 40 else text[:37] + '...'


def format_diff(diff: Sequence[tuple[str, Any, Any]], limit: int = 8) -> str:
  """``'learning_rate 0.01 -> 1000000.0, m 4 -> 3'`` (at most ``limit`` keys, then a count)."""
  parts = [f'{k} {_short(a)} -> {_short(b)}' for k, a, b in diff[:limit]]
  if len(diff) > limit:
    parts.append(f'and {len(diff) - limit} more')
  return ', '.join(parts)


def read_config_record(workdir: str) -> dict | None:
  """The recorded config of ``workdir`` (``config.json``), or None when there is none.

  Raises a one-line ``ValueError`` when the record exists but cannot be read.
  """
  path = os.path.join(workdir, RECORD_NAME)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'cannot read the config record {path} ({type(e).__name__}: '
                     f'{str(e).splitlines()[0] if str(e) else ""}); rerun with '
                     f'--config.overwrite=True to start afresh') from None
  if not isinstance(record, dict):
    raise ValueError(f'the config record {path} is not a JSON object; rerun with '
                     f'--config.overwrite=True to start afresh')
  return record


# Files and directories a training run writes into its workdir (removed by ``overwrite``).
RUN_OUTPUTS = ('checkpoints', 'checkpoints_corrupt', 'metrics.jsonl', 'summary.json',
               RECORD_NAME)


def remove_run_outputs(workdir: str) -> list[str]:
  """Removes what a training run wrote in ``workdir`` (not other files); returns the names."""
  removed = []
  if not os.path.isdir(workdir):
    return removed
  for name in sorted(os.listdir(workdir)):
    if name in RUN_OUTPUTS or name.startswith('events.out.tfevents.'):
      path = os.path.join(workdir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
      removed.append(name)
  return removed


def check_config_record(workdir: str, config: Any, *,
                        overwrite: bool = False) -> list[tuple[str, Any, Any]]:
  """Compares ``config`` with ``workdir``'s record; returns the differing length keys.

  Raises a one-line ``ValueError`` listing the differing keys when a key that changes results
  differs and ``overwrite`` is false. With ``overwrite`` the caller starts afresh (see
  :func:`remove_run_outputs`). Writes nothing.
  """
  record = read_config_record(workdir)
  if record is None or overwrite:
    return []
  diff = config_diff(record, config)
  results = [d for d in diff if d[0].split('.')[0] not in LENGTH_KEYS]
  if results:
    raise ValueError(
        f'{workdir} holds a run with another config ({format_diff(results)}); rerun with '
        f'--config.overwrite=True to start afresh, or use another --workdir')
  return diff


def reusable_run(run_dir: str, config: Any) -> tuple[dict | None, str | None]:
  """Whether a finished training in ``run_dir`` can stand for ``config`` (for binaries that
  reuse runs, like the demo).

  Returns ``(summary, None)`` when ``run_dir`` finished with exactly ``config`` (every key,
  ``overwrite`` aside); otherwise ``(None, changed)``: ``changed`` is None when the trainer may
  continue there (nothing yet, an interrupted run to resume, or a longer run to extend), else
  the changed settings (``'learning_rate 0.01 -> 0.02'``): the run must start afresh
  (``config.overwrite = True``).
  """
  recorded = read_config_record(run_dir)
  if recorded is None:
    return None, None
  done = os.path.join(run_dir, 'summary.json')
  if not config_diff(recorded, config, ignore=('overwrite',)) and os.path.exists(done):
    with open(done) as f:
      summary = json.load(f)
    if not config_diff(summary.get('config', {}), config, ignore=('overwrite',)):
      return summary, None
  diff = config_diff(recorded, config)
  results = [d for d in diff if d[0] not in LENGTH_KEYS]
  current = normalize_config(config)
  shorter = any(float(current.get(k) or 0) < float(recorded.get(k) or 0) for k in LENGTH_KEYS
                if current.get(k, -1) not in (None, -1))
  if results or shorter:
    return None, format_diff(diff)
  return None, None


# ---------------------------------------------------------------------------------------------
# Progress


def progress_problem(history: Sequence[Sequence[float]], total_steps: int, num_classes: int,
                     *, window: float = 0.2, chance_tolerance: float = 0.02,
                     unit: str = 'steps') -> str | None:
  """Why a finished run did not learn, or None.

  Args:
    history: ``(step, train loss)`` pairs, oldest first (logged averages).
    total_steps: the run's length in the same unit as the steps.
    num_classes: for chance, ``ln(num_classes)`` (the loss of a uniform prediction).
    window: the last ``window`` fraction of the run must improve the best loss seen before it
      (by a relative 1e-3; not checked once the loss is below ``0.01 ln(num_classes)``, a fit
      training set, or when no logged loss falls before/inside the window).
    chance_tolerance: the final loss counts as "at chance" when it is at or above
      ``(1 - chance_tolerance) ln(num_classes)``.
    unit: for the message ('steps', 'epochs').

  Non-finite losses are a divergence, reported by the NaN guards, not here.
  """
  pts = [(float(s), float(v)) for s, v in history if v is not None and math.isfinite(float(v))]
  if not pts or num_classes < 2:
    return None
  chance = math.log(num_classes)
  step, final = pts[-1]
  problems = []
  if final >= (1.0 - chance_tolerance) * chance:
    where = 'at' if abs(final - chance) <= chance_tolerance * chance else 'above'
    problems.append(f'the final train loss {final:.4g} (step {step:.0f}) is {where} chance '
                    f'(ln({num_classes}) = {chance:.4g})')
  w = max(1, int(math.ceil(window * total_steps)))
  start = total_steps - w
  before = [v for s, v in pts if s <= start]
  inside = [v for s, v in pts if s > start]
  if before and inside:
    best_before, best_in = min(before), min(inside)
    if best_before > 0.01 * chance and best_in >= best_before * (1.0 - 1e-3):
      problems.append(f'the train loss has not improved over the last {w} {unit} (best '
                      f'{best_in:.4g} there, {best_before:.4g} before)')
  if not problems:
    return None
  return 'no progress: ' + '; '.join(problems)


# ---------------------------------------------------------------------------------------------
# Binaries


def run_main(main: Callable[[list[str]], Any]) -> None:
  """:func:`ce_jax.tools.cli.run_main` (usage errors: one line, exit 2) plus failed runs: one line
  ``<prog>: error: <message>``, exit 1 (:class:`RunFailedError`, ``FloatingPointError``
  from the NaN guards, and write errors such as a full disk)."""
  from ce_jax.tools import cli

  def wrapped(argv):
    prog = os.path.basename(sys.argv[0])
    try:
      return main(argv)
    except (RunFailedError, FloatingPointError) as e:
      message = str(e)
    except OSError as e:
      err = translate_write_error(e, e.filename or '?')
      if err is None:
        raise
      message = str(err)
    sys.stdout.flush()
    print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
    sys.exit(1)

  cli.run_main(wrapped)
