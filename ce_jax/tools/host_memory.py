"""Host (CPU) memory: keep freed memory for reuse, so XLA:CPU's scratch is not re-faulted.

XLA:CPU allocates each execution's scratch (temporary) buffer with ``malloc`` and frees it when
the execution ends. glibc serves a block that large (375 MB for one ResNeXt-29 10x10d training
step at batch 16) from a fresh ``mmap`` and unmaps it on ``free``: every step the kernel maps
and zero-fills the whole scratch again, 4 KiB page by page (91,500 page faults per step, measured
with ``getrusage``). :func:`reuse_freed_memory` tells glibc to keep freed memory in its heap
instead (one arena, no ``mmap``-served blocks, no trimming): after the first step the scratch
comes from memory already mapped, with no page fault.

The price is that the process's resident memory stays at its peak (what a caching allocator
does) and that all threads share one ``malloc`` arena. The setting is process-wide, so it is
opt-in for library users; the binaries in ``experiments/`` apply it through
:func:`ce_jax.tools.cli.run_main` unless ``CE_JAX_MALLOC=default`` is set.

It takes effect for the threads that have not allocated yet, so call it before JAX starts its
backend (before the first computation or ``jax.devices()``). The same setting without code:
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment
of a new process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ['reuse_freed_memory', 'setting', 'env_choice', 'ENV_VAR']

ENV_VAR = 'CE_JAX_MALLOC'
_ENV_VALUES = ('reuse', 'default')

# glibc's mallopt parameters (<malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 2**31 - 1   # the largest value mallopt's int accepts: never trim below 2 GiB

_APPLIED = [False]


def env_choice(environ=None) -> str:
  """``'reuse'`` or ``'default'`` from ``CE_JAX_MALLOC`` (unset: ``'reuse'``).

  Raises ``ValueError`` naming the value and the allowed ones for anything else.
  """
  value = (os.environ if environ is None else environ).get(ENV_VAR, 'reuse')
  if value not in _ENV_VALUES:
    raise ValueError(f'{ENV_VAR}={value!r}: expected one of {", ".join(_ENV_VALUES)}')
  return value


def _libc():
  if not sys.platform.startswith('linux'):
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'gnu_get_libc_version') else None
  except OSError:
    return None


def reuse_freed_memory() -> bool:
  """Makes glibc ``malloc`` keep freed memory for reuse (one arena, no mmap, no trimming).

  Returns True when the setting is in force (applied now or earlier), False where it cannot be
  applied: not Linux, or a C library other than glibc (musl has no ``mallopt``). Idempotent.
  """
  if _APPLIED[0]:
    return True
  libc = _libc()
  if libc is None:
    return False
  ok = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
  _APPLIED[0] = ok
  return ok


def setting() -> str:
  """``'reuse'`` once :func:`reuse_freed_memory` is in force in this process, else
  ``'default'`` (what benchmark records report)."""
  return 'reuse' if _APPLIED[0] else 'default'
