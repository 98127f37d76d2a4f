"""Shared test helpers: run experiment binaries as a user would, in the same interpreter.

Tests marked ``nt`` compare with neural-tangents, which imports only with jax < 0.6: they run in
the reference stack (``make test-nt``, ``pytest -m nt``) and are skipped elsewhere, with the
reason shown by ``pytest -rs``.
"""

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

# One XLA compilation cache for the whole suite: this process, the xdist workers and the binaries
# and notebook kernels they start (all read these variables), so a program compiles once per
# machine, not once per test (-15% wall time on the demo, ablation and notebook tests). Entries
# are keyed by the program, the JAX version and the backend, so stacks and edits never collide.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'ce_jax_tests_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# The suite compiles with XLA's backend optimization level 0: XLA's HLO passes (fusion,
# simplification, layout assignment) run as always and only LLVM's optimization of the generated
# CPU kernels is skipped: the floating-point semantics are the same (no fast-math either way;
# matmuls, convolutions and the oneDNN calls are precompiled library code; the whole suite
# passes at both levels) and programs compile 1.5-3x faster (the tests check results, never
# speed). CE_JAX_TEST_FULL_OPT=1 compiles as users' runs do; CI runs the Python 3.12 suite that
# way. Added to, never replacing, the caller's XLA_FLAGS.
FAST_COMPILE = '--xla_backend_optimization_level=0'
_FULL_OPT = os.environ.get('CE_JAX_TEST_FULL_OPT', '').strip().lower()
if _FULL_OPT not in ('', '0', 'false', 'no', 'off', '1', 'true', 'yes', 'on'):
  raise ValueError(f'CE_JAX_TEST_FULL_OPT must be 1/true/yes/on (compile as users do) or '
                   f'0/false/no/off (the suite\'s fast compile), got {_FULL_OPT!r}')
if _FULL_OPT in ('', '0', 'false', 'no', 'off'):
  _flags = os.environ.get('XLA_FLAGS', '')
  if '--xla_backend_optimization_level' not in _flags:
    os.environ['XLA_FLAGS'] = f'{_flags} {FAST_COMPILE}'.strip()


def xla_flags(*flags):
  """XLA_FLAGS for a subprocess: ``flags`` (e.g. a device count) and this process's XLA_FLAGS
  (the compile level above, the caller's own flags) except its device count, so every run of
  the suite compiles alike."""
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  return ' '.join(list(flags) + kept)


import jax  # noqa: E402  (after the cache and XLA variables)
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def _nt_skip_reason():
  """None when neural-tangents imports here, else why the ``nt`` tests are skipped."""
  if importlib.util.find_spec('neural_tangents') is None:
    return (f'neural-tangents is not installed (jax {jax.__version__}); the nt cross-checks run '
            'in the reference stack: make test-nt')
  from ce_jax.theory import ntk  # pylint: disable=import-outside-toplevel
  if ntk._nt_module() is None:  # pylint: disable=protected-access
    return (f'neural-tangents does not import with jax {jax.__version__} (it needs jax < 0.6); '
            'make test-nt runs these tests')
  return None


def pytest_collection_modifyitems(config, items):
  del config
  nt_items = [item for item in items if item.get_closest_marker('nt')]
  if nt_items and _nt_skip_reason():
    skip = pytest.mark.skip(reason=_nt_skip_reason())
    for item in nt_items:
      item.add_marker(skip)


def run_binary(name, *flags, env=None, timeout=600, check=True):
  """Runs ``experiments/<name>.py`` with ``flags``; returns the CompletedProcess.

  ``check=True`` asserts exit code 0 and shows stderr on failure.
  """
  full_env = dict(os.environ)
  full_env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
  if env:
    full_env.update(env)
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', f'{name}.py'), *flags],
                        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)
  if check:
    assert proc.returncode == 0, f'{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}'
  return proc


def load_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture
def binary():
  return run_binary


@contextlib.contextmanager
def enable_x64():
  """float64 inside the block only; works on every JAX (``jax.experimental.enable_x64`` is gone
  in newer releases). Usage: ``from conftest import enable_x64``; ``with enable_x64(): ...``."""
  old = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  try:
    yield
  finally:
    jax.config.update('jax_enable_x64', old)
