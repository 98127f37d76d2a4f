"""Shared plumbing of the absl binaries in ``experiments/``: flags, errors, exit codes, logs, JSON.

Every binary ends with ``cli.run_main(main)`` (or ``guards.run_main(main)``, which adds the
failed-run errors of long runs on top of it). :func:`run_main`

* parses the flags itself: a bad flag value (``--alpha=abc``), an unknown flag and a config-file
  problem (``--config`` missing, a syntax error in it, an unknown key in ``--config.key=value``)
  are ONE line ``<prog>: error: <message>`` and exit code 2 (absl alone prints several lines
  and exits 1);
* checks every output path before any work (:func:`check_outputs`: the flags ``--json_out``,
  ``--plot_out``, any other ``--*_out``, ``--out``, ``--workdir`` ...), creating nothing;
* turns a ``ValueError`` of ``main`` (the library's one-line input errors) into the same usage
  error, exit 2, and any other exception into one line naming it with ``rerun with
  --verbosity=1 for the traceback``, exit 1 (``--verbosity=1`` shows the traceback);
* keeps the log quiet: JAX's backend probing (``Unable to initialize backend 'rocm'``, ``failed
  call to cuInit``, ``No GPU/TPU found``) is filtered out (python-logging filters on
  ``jax._src.xla_bridge`` and friends, ``TF_CPP_MIN_LOG_LEVEL`` raised to 2 before the backend
  starts), and so is what TensorFlow's C++ side prints while it is imported (``Could not find
  cuda drivers``, ``oneDNN custom operations are on``: absl C++ logging, which ignores
  ``TF_CPP_MIN_LOG_LEVEL``); ``--verbosity=1`` restores everything;
* makes ``malloc`` keep freed memory for reuse before the backend starts
  (:func:`ce_jax.tools.host_memory.reuse_freed_memory`: XLA:CPU's per-step scratch is not
  page-faulted afresh each step); ``CE_JAX_MALLOC=default`` leaves glibc's defaults.

Exit codes: 0 success, 1 a failed run, 2 bad input.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.abc
import importlib.util
import json
import logging as pylogging
import os
import re
import sys
import tempfile
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging as absl_logging

from ce_jax import _optional
from ce_jax.tools import guards
from ce_jax.tools import host_memory


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The flags of define_benchmark_flags() belong to the binary that calls it (its --helpshort
# lists them), not to this module.
flags.disclaim_key_flags()

# Flags holding an output FILE (besides any flag ending in '_out') and an output DIRECTORY.
OUTPUT_FILE_FLAGS = ('out', 'output', 'output_file')
OUTPUT_DIR_FLAGS = ('workdir', 'output_dir', 'out_dir', 'logdir')

# Loggers whose records below WARNING are backend probing / compilation chatter, and the
# warnings of theirs that are probing noise too (each printed by every run on a CPU machine).
_NOISY_LOGGERS = ('jax._src.xla_bridge', 'jax._src.dispatch', 'jax._src.compiler',
                  'jax._src.cache_key', 'jax._src.compilation_cache', 'jax._src.distributed',
                  'jax._src.interpreters.pxla', 'jax.experimental.compilation_cache')
_PROBE_NOISE = re.compile(
    r'Unable to initialize backend|failed call to cuInit|No GPU/TPU found|falling back to cpu|'
    r'GPU may be present|CUDA-enabled jaxlib|libtpu|TPU backend|Platform .* is experimental|'
    r'cuda_dnn|rocm|ROCm', re.IGNORECASE)


def prog_name() -> str:
  return os.path.basename(sys.argv[0] or 'ce_jax')


def one_line(text: Any) -> str:
  """The message of an error on one line.

  A message holding a traceback (e.g. ml_collections' config errors) keeps its first line and
  the traceback's last one (the exception itself); other multi-line messages keep their first
  non-empty line.
  """
  text = str(text)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if not lines:
    return ''
  if 'Traceback (most recent call last)' in text:
    head = text.split('Traceback (most recent call last)')[0].strip().splitlines()
    head = ' '.join(l.strip() for l in head if l.strip()).rstrip(':')
    return f'{head}: {lines[-1]}' if head else lines[-1]
  return lines[0]


def usage_error(message: Any, prog: str | None = None) -> None:
  """Prints ``<prog>: error: <message>`` (one line) and exits with code 2."""
  sys.stdout.flush()
  print(f'{prog or prog_name()}: error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


# ---------------------------------------------------------------------------------------------
# Quiet logs


def _argv_verbosity(argv: Sequence[str]) -> int:
  """``--verbosity`` / ``-v`` from a raw argv (before the flags are parsed); 0 if absent."""
  value = None
  args = list(argv[1:])
  for i, a in enumerate(args):
    if a == '--':
      break
    m = re.match(r'^--?(?:verbosity|v)(?:=(.*))?$', a)
    if m:
      value = m.group(1) if m.group(1) is not None else (args[i + 1] if i + 1 < len(args)
                                                        else None)
  names = {'debug': 1, 'info': 0, 'warning': -1, 'warn': -1, 'error': -2, 'fatal': -3}
  if value is None:
    return 0
  try:
    return int(value)
  except ValueError:
    return names.get(str(value).lower(), 0)


def quiet_native_logs(argv: Sequence[str] | None = None) -> None:
  """Raises ``TF_CPP_MIN_LOG_LEVEL`` to 2 (XLA/TensorFlow C++ logs: warnings and info off)
  unless ``--verbosity >= 1`` is asked for. Must run before the backend starts."""
  if _argv_verbosity(sys.argv if argv is None else argv) >= 1:
    return
  try:
    level = int(os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0'))
  except ValueError:
    level = 0
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = str(max(level, 2))


class _ProbeNoiseFilter(pylogging.Filter):
  """Drops JAX's backend-probing and compilation chatter (kept: real warnings and errors)."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    name = record.name or ''
    if not (name in _NOISY_LOGGERS or name.startswith('jax._src.')):
      return True
    if record.levelno < pylogging.WARNING:
      return False
    if record.levelno >= pylogging.ERROR:
      return True
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    return not _PROBE_NOISE.search(message)


_FILTER = _ProbeNoiseFilter()

# What TensorFlow's C++ side prints while it is imported (absl C++ logging, which ignores
# TF_CPP_MIN_LOG_LEVEL in recent releases): dropped from stderr in the quiet default log.
_NATIVE_NOISE = re.compile(
    r'All log messages before absl::InitializeLog|oneDNN custom operations are on|'
    r'Could not find cuda drivers|cudart_stub|failed call to cuInit|cuda_(driver|executor|dnn|'
    r'fft|blas)|Unable to register cu(DNN|FFT|BLAS) factory|Attempting to register factory|'
    r'TF-TRT Warning|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate|'
    r'computation placer already registered|absl::InitializeLog|Unable to initialize backend')
_QUIET_IMPORTS = ('tensorflow',)


@contextlib.contextmanager
def filtered_native_stderr(pattern: re.Pattern = _NATIVE_NOISE):
  """Captures what C/C++ code writes to file descriptor 2 inside the block and writes back
  the lines that do not match ``pattern`` (backend and library start-up noise)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    yield
    return
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      kept = [l for l in tmp.read().decode(errors='replace').splitlines(keepends=True)
              if not pattern.search(l)]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


class _QuietImportFinder(importlib.abc.MetaPathFinder):
  """Imports the modules of ``_QUIET_IMPORTS`` (their first import) inside
  :func:`filtered_native_stderr`."""

  def __init__(self, names):
    self.names = set(names)
    self._busy = False

  def find_spec(self, fullname, path, target=None):  # pylint: disable=unused-argument
    if fullname not in self.names or self._busy:
      return None
    self._busy = True
    try:
      spec = importlib.util.find_spec(fullname)
    finally:
      self._busy = False
    if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
      return spec
    spec.loader = _QuietLoader(spec.loader, lambda: self.names.discard(fullname))
    return spec


class _QuietLoader(importlib.abc.Loader):

  def __init__(self, loader, done):
    self._loader = loader
    self._done = done

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    self._done()   # a find_spec alone (``is it installed?``) does not count as the import
    with filtered_native_stderr():
      self._loader.exec_module(module)

  def __getattr__(self, name):
    return getattr(self._loader, name)


_QUIET = [False]   # set by run_main: the quiet default log is on


@contextlib.contextmanager
def native_noise_filtered():
  """:func:`filtered_native_stderr` when a binary runs with the quiet default log (see
  :func:`run_main`), else nothing: for library calls that make TensorFlow probe for devices."""
  if not _QUIET[0]:
    yield
    return
  with filtered_native_stderr():
    yield


def quiet_native_imports() -> None:
  """Installs the import hook of :func:`filtered_native_stderr` for TensorFlow (once)."""
  if any(isinstance(f, _QuietImportFinder) for f in sys.meta_path):
    return
  names = [n for n in _QUIET_IMPORTS if n not in sys.modules]
  if names:
    sys.meta_path.insert(0, _QuietImportFinder(names))


def configure_logging(verbosity: int = 0) -> None:
  """The quiet default log (``verbosity <= 0``): JAX's probing noise filtered on its loggers
  and on the absl/root handlers; ``verbosity >= 1`` removes the filters again."""
  loggers = [pylogging.getLogger(n) for n in _NOISY_LOGGERS]
  handlers = list(pylogging.getLogger().handlers)
  try:
    handlers.append(absl_logging.get_absl_handler())
  except Exception:  # pylint: disable=broad-except
    pass
  for obj in loggers + handlers:
    if verbosity >= 1:
      obj.removeFilter(_FILTER)
    elif _FILTER not in obj.filters:
      obj.addFilter(_FILTER)


# ---------------------------------------------------------------------------------------------
# Output paths


check_output_dir = guards.check_output_dir
check_output_file = guards.check_output_file


def output_flags(flag_values=None) -> tuple[list[str], list[str]]:
  """Names of the defined string flags that hold output files and output directories."""
  fv = flags.FLAGS if flag_values is None else flag_values
  files, dirs = [], []
  for name in sorted(fv):
    flag = fv[name]
    if name != flag.name or flag.flag_type() != 'string':
      continue
    if name in OUTPUT_DIR_FLAGS:
      dirs.append(name)
    elif name.endswith('_out') or name in OUTPUT_FILE_FLAGS:
      files.append(name)
  return files, dirs


def check_outputs(files: Iterable[str] | None = None, dirs: Iterable[str] | None = None,
                  flag_values=None) -> dict[str, str]:
  """Validates the output-path flags before any work (one-line ``ValueError``); creates nothing.

  Args:
    files, dirs: flag names holding output files / directories; by default every string flag
      ending in ``_out`` (and ``--out``, ``--output``) and ``--workdir``, ``--output_dir`` ...
    flag_values: the absl ``FlagValues`` (parsed), default ``flags.FLAGS``.

  Returns:
    ``{flag name: absolute path}`` of the outputs given. Two outputs naming the same file are
    refused (one would overwrite the other).
  """
  fv = flags.FLAGS if flag_values is None else flag_values
  auto_files, auto_dirs = output_flags(fv)
  files = auto_files if files is None else list(files)
  dirs = auto_dirs if dirs is None else list(dirs)
  out, seen = {}, {}
  for name in dirs:
    full = check_output_dir(fv[name].value, f'--{name}')
    if full:
      out[name] = full
  for name in files:
    full = check_output_file(fv[name].value, f'--{name}')
    if not full:
      continue
    if full in seen:
      raise ValueError(f'--{seen[full]} and --{name} name the same file {fv[name].value}: one '
                       f'would overwrite the other')
    seen[full] = name
    out[name] = full
  return out


# ---------------------------------------------------------------------------------------------
# Flags several binaries share


def define_benchmark_flags(quick: str, rounds: tuple[str, int] | None = None) -> None:
  """Defines the flags every benchmark of ``experiments/`` takes: ``--quick`` (help ``tiny
  settings for tests: <quick>``), ``--json_out`` and, with ``rounds=(name, default)``, the
  number of timed interleaved rounds."""
  if rounds is not None:
    flags.DEFINE_integer(rounds[0], rounds[1], 'timed interleaved rounds (median reported)')
  flags.DEFINE_bool('quick', False, f'tiny settings for tests: {quick}')
  flags.DEFINE_string('json_out', None, 'write results as JSON here')


# ---------------------------------------------------------------------------------------------
# Flags and config files


def _config_keys(config) -> list[str]:
  keys = []
  try:
    for k, v in config.items():
      keys.append(str(k))
      if hasattr(v, 'items') and not isinstance(v, dict):
        keys += [f'{k}.{sub}' for sub in _config_keys(v)]
  except Exception:  # pylint: disable=broad-except
    pass
  return keys


def _unknown_config_key(fv, argv, error: BaseException) -> str | None:
  """The one-line message for ``--config.typo=1`` (ml_collections raises a bare KeyError or
  AttributeError naming the key), with the closest valid keys; None if not such a case."""
  text = str(error).replace("\\'", "'").replace('\\n', '\n')
  m = re.search(r'''['"]([\w.]+)['"]''', text)
  key = m.group(1) if m else text.strip().strip('"\'')
  if not key:
    return None
  suggested = re.findall(r'Did you mean "([\w.]+)"', text)
  for name in sorted(fv):
    if type(fv[name]).__name__ != '_ConfigFlag':
      continue
    for arg in argv[1:]:
      m = re.match(rf'^--{re.escape(name)}\.([\w.]+)(=.*)?$', arg)
      if not m or key not in m.group(1).split('.'):
        continue
      path = m.group(1)
      hint = f' (did you mean {", ".join(suggested)}?)' if suggested else ''
      source = next((a.split('=', 1)[1] for a in argv[1:] if a.startswith(f'--{name}=')), None)
      if source and not hint:
        try:
          from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
          probe = flags.FlagValues()
          config_flags.DEFINE_config_file(name, None, '', flag_values=probe)
          probe(['probe', f'--{name}={source}'])
          close = difflib.get_close_matches(path, _config_keys(probe[name].value), n=3)
          if close:
            hint = f' (did you mean {", ".join(close)}?)'
        except Exception:  # pylint: disable=broad-except
          pass
      return f'{arg}: the config has no key {path!r}{hint}'
  return None


def _config_arg(fv, argv) -> str | None:
  """The ``--config=PATH`` argument of a config-file flag, if any."""
  for a in argv[1:]:
    for n in fv:
      if type(fv[n]).__name__ == '_ConfigFlag' and a.startswith(f'--{n}='):
        return a
  return None


def _check_config_files(fv, argv) -> None:
  """A config file that does not exist: one line naming it (ml_collections says only
  'Failed loading config file')."""
  for a in argv[1:]:
    for n in fv:
      if type(fv[n]).__name__ == '_ConfigFlag' and a.startswith(f'--{n}='):
        path = a.split('=', 1)[1].split(':', 1)[0]
        if not path:
          raise ValueError(f'{a}: give a config file, e.g. --{n}=experiments/configs/digits.py')
        if not os.path.isfile(path):
          what = 'is a directory' if os.path.isdir(path) else 'does not exist'
          raise ValueError(f'{a}: the config file {path} {what}')


def _check_config_values(fv) -> None:
  """Config flags whose file could not be loaded (ml_collections defers that error)."""
  for name in sorted(fv):
    flag = fv[name]
    value = flag.value
    if type(value).__name__ == '_ErrorConfig':
      err = object.__getattribute__(value, '_error')
      given = next((a for a in sys.argv[1:] if a.startswith(f'--{name}=')), f'--{name}')
      raise ValueError(f'{given}: cannot load the config file: {one_line(err)}')
    if type(flag).__name__ == '_ConfigFlag' and flag.present and value is None:
      raise ValueError(f'--{name}={flag.serialize().split("=", 1)[-1]}: get_config() returned '
                       'None (a missing return statement?)')


def parse_flags(argv: Sequence[str]) -> list[str]:
  """``flags.FLAGS(argv)`` with every error (bad value, unknown flag, config file) as a usage
  error: one line, exit code 2. Returns the remaining arguments (program name first)."""
  fv = flags.FLAGS
  argv = list(argv)
  logger = absl_logging.get_absl_logger()
  level = logger.level
  logger.setLevel(pylogging.ERROR)  # config loaders warn before the error we report
  try:
    _check_config_files(fv, argv)
    rest = fv(argv)
    _check_config_values(fv)
    return rest
  except SystemExit as e:  # --help and friends: absl exits 1 after printing the help
    asked = any(a in ('-h', '-?') or re.match(r'^--help(short|full|xml)?$', a)
                for a in argv[1:])
    if asked and e.code == 1:
      sys.exit(EXIT_OK)
    raise
  except flags.Error as e:
    usage_error(e)
  except (KeyError, AttributeError) as e:
    given = _config_arg(fv, argv)
    if given and 'get_config' in str(e):
      usage_error(f'{given}: cannot load the config file: it defines no get_config()')
    usage_error(_unknown_config_key(fv, argv, e) or f'{type(e).__name__}: {one_line(e)}')
  except ValueError as e:
    usage_error(e)
  except Exception as e:  # pylint: disable=broad-except  (a config file that fails to import)
    given = _config_arg(fv, argv)
    where = f'{given}: cannot load the config file: ' if given else ''
    usage_error(f'{where}{type(e).__name__}: {one_line(e)}')
  finally:
    logger.setLevel(level)
  return []  # not reached


# ---------------------------------------------------------------------------------------------
# main


def run_main(main: Callable[[list[str]], Any], *, check_output_paths: bool = True,
             allow_args: bool = False) -> None:
  """Runs ``main(argv)`` as a binary: flags parsed here, outputs checked, errors one line.

  Exit codes: 0 success; 2 bad input (a flag, a config file, an output path, or a
  ``ValueError`` / :class:`ce_jax._optional.MissingExtraError` raised by ``main``); 1 any other
  exception (one line ending ``rerun with --verbosity=1 for the traceback``; with
  ``--verbosity=1`` the traceback is printed). ``check_output_paths``: validate every
  output-path flag (:func:`check_outputs`) before ``main`` runs. ``allow_args``: positional
  arguments reach ``main``; by default they are a usage error.
  """
  quiet_native_logs()
  try:   # before the backend starts its threads (see host_memory)
    if host_memory.env_choice() == 'reuse':
      host_memory.reuse_freed_memory()
  except ValueError as e:
    usage_error(e, prog_name())
  if _argv_verbosity(sys.argv) < 1:
    _QUIET[0] = True
    quiet_native_imports()   # before the flags: a config file may import TensorFlow
  prog = prog_name()

  def verbosity() -> int:
    try:
      return int(flags.FLAGS['verbosity'].value or 0)
    except Exception:  # pylint: disable=broad-except
      return 0

  def wrapped(argv):
    configure_logging(verbosity())
    _QUIET[0] = verbosity() < 1
    try:
      if len(argv) > 1 and not allow_args:
        raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
      if check_output_paths:
        check_outputs()
      return main(argv)
    except SystemExit:
      raise
    except (ValueError, _optional.MissingExtraError, app.UsageError) as e:
      if verbosity() >= 1:
        traceback.print_exc()
      usage_error(e, prog)
    except KeyboardInterrupt:
      sys.stdout.flush()
      print(f'{prog}: error: interrupted', file=sys.stderr, flush=True)
      sys.exit(130)
    except Exception as e:  # pylint: disable=broad-except
      if verbosity() >= 1:
        raise
      sys.stdout.flush()
      text = one_line(e)
      print(f'{prog}: error: {type(e).__name__}{": " + text if text else ""}; rerun with '
            '--verbosity=1 for the traceback', file=sys.stderr, flush=True)
      sys.exit(EXIT_FAILED)

  app.run(wrapped, flags_parser=parse_flags)


# ---------------------------------------------------------------------------------------------
# JSON


def _to_jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _to_jsonable(v) for k, v in obj.items()}
  if hasattr(obj, '_asdict'):  # NamedTuple (before tuple: it is one)
    return _to_jsonable(obj._asdict())
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if isinstance(obj, (np.generic,)):
    return _to_jsonable(obj.item())
  if hasattr(obj, 'shape') and hasattr(obj, 'tolist'):
    return _to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return None  # JSON has no NaN/Inf
  return obj


def write_json(path: str | None, payload: dict) -> None:
  """Writes ``payload`` (numpy/jax arrays and NamedTuples converted) to ``path`` atomically."""
  if not path:
    return
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(_to_jsonable(payload), f, indent=2)
  os.replace(tmp, path)


def ensure_parent(path: str | None) -> None:
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def design_table(models: Sequence[dict], ratios: Sequence[tuple[str, str]]) -> str:
  """The table of trained designs a study binary prints: ``name``, ``m x n``, ``params``, one
  column per ``(header, key)`` of ``ratios`` (a predicted variance ratio, 3 decimals, one wider
  than its header) and the test error mean +- standard error in % (``test_error_mean``,
  ``test_error_stderr``)."""
  head = [f'{"design":<9} {"m x n":>8} {"params":>9}']
  head += [f'{header:>{len(header) + 1}}' for header, _ in ratios]
  lines = [' '.join(head + [f'{"test error (%)":>16}'])]
  for d in models:
    row = [f'{d["name"]:<9} {d["m"]:>3}x{d["n"]:<4} {d["params"]:>9,}']
    row += [f'{d[key]:>{len(header) + 1}.3f}' for header, key in ratios]
    row.append(f'{100 * d["test_error_mean"]:>9.2f} +- {100 * d["test_error_stderr"]:.2f}')
    lines.append(' '.join(row))
  return '\n'.join(lines)


def print_warnings(warnings: Iterable[str], prog: str | None = None) -> None:
  """Prints each warning as one line ``<prog>: warning: <text>`` on stderr."""
  for w in warnings:
    print(f'{prog or prog_name()}: warning: {w}', file=sys.stderr, flush=True)
