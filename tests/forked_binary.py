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
"""

from __future__ import annotations

import os

import pytest

import bad_input_cases

REPO = bad_input_cases.REPO


@pytest.fixture(scope='module')
def binary():
  server = bad_input_cases.ForkServer()

  def run(name, *flags, env=None, timeout=600, check=True, cwd=REPO):
    res = server.run([os.path.join(REPO, 'experiments', f'{name}.py'), *flags], cwd=str(cwd),
                     timeout=timeout, env=env)
    assert not res.timed_out, f'{name} still running after {timeout} s:\n{res.stderr[-4000:]}'
    if check:
      assert res.returncode == 0, f'{name} failed ({res.returncode}):\n{res.stderr[-4000:]}'
    return res

  yield run
  server.close()
