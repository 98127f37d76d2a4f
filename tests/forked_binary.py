"""conftest's ``binary`` fixture, with each run forked from one process that has imported JAX.

``from forked_binary import binary`` in a test module replaces conftest's fixture there: the
same call ``binary(name, *flags, check=True)`` and the same result (``returncode``, ``stdout``,
``stderr``), but the runs come from one :class:`bad_input_cases.ForkServer` per module (a
process that imported JAX, Flax and ce_jax once). Each run is a forked child that executes
``experiments/<name>.py`` as ``__main__`` in ``cwd`` (the repository root by default) with
its own exit code, stdout and stderr, as a user's ``python experiments/<name>.py`` does; it
starts in ~0.03 s instead of the ~1.2 s of a fresh interpreter and its imports. XLA starts in
the child (nothing is compiled before the fork) and shares the suite's compilation cache. A
run with its own ``env`` falls back to a fresh interpreter.

The runs compile with ``XLA_FLAGS=--xla_backend_optimization_level=0`` (added to the caller's
XLA_FLAGS): XLA's own HLO passes (fusion, simplification, layout) run as always, only LLVM's
optimization of the generated CPU kernels is skipped. Floating-point semantics are the same
(no fast-math either way; matmuls, convolutions and oneDNN calls are precompiled library
code), and the tests check results, never speed; the binaries compile 2-4x faster (the
benchmarks' --quick runs: 74 s -> 39 s on 2 cores).
"""

from __future__ import annotations

import os

import pytest

import bad_input_cases

REPO = bad_input_cases.REPO


FAST_COMPILE = '--xla_backend_optimization_level=0'


def _fork_server():
  """A ForkServer whose environment (read once, at its start) adds FAST_COMPILE to XLA_FLAGS."""
  old = os.environ.get('XLA_FLAGS')
  os.environ['XLA_FLAGS'] = f'{old} {FAST_COMPILE}' if old else FAST_COMPILE
  try:
    return bad_input_cases.ForkServer()
  finally:
    if old is None:
      del os.environ['XLA_FLAGS']
    else:
      os.environ['XLA_FLAGS'] = old


@pytest.fixture(scope='module')
def binary():
  server = _fork_server()

  def run(name, *flags, env=None, timeout=600, check=True, cwd=REPO):
    res = server.run([os.path.join(REPO, 'experiments', f'{name}.py'), *flags], cwd=str(cwd),
                     timeout=timeout, env=env)
    assert not res.timed_out, f'{name} still running after {timeout} s:\n{res.stderr[-4000:]}'
    if check:
      assert res.returncode == 0, f'{name} failed ({res.returncode}):\n{res.stderr[-4000:]}'
    return res

  yield run
  server.close()
