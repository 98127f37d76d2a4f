"""host_memory.reuse_freed_memory: a large block freed and allocated again is not re-faulted.

Each check runs in a fresh interpreter (the setting is process-wide and must come before the
threads allocate). The block is 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB),
so by default each allocation is a fresh mmap that the kernel zero-fills page by page.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ce_jax.tools import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_FAULTS = """
import ctypes, resource, sys, threading
from ce_jax.tools import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == 'reuse' else False
faults = []
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def work():   # in a new thread, as XLA's executions are: glibc gives it its own arena by default
  for _ in range(3):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 * 2**20)   # plain malloc (numpy would ask for huge pages)
    ctypes.memset(block, 1, 64 * 2**20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    libc.free(block)
t = threading.Thread(target=work); t.start(); t.join()
print(applied, host_memory.setting(), *faults)
"""


def _run(mode):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.pop(host_memory.ENV_VAR, None)
  proc = subprocess.run([sys.executable, '-c', _FAULTS, mode], capture_output=True, text=True,
                        env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  applied, setting, *faults = proc.stdout.split()
  return applied == 'True', setting, [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_reuse_stops_refaulting_a_freed_block():
  applied, setting, default = _run('default')
  assert (applied, setting) == (False, 'default')
  pages = 64 * 2**20 // os.sysconf('SC_PAGE_SIZE')
  # default: every allocation maps fresh pages
  assert min(default) > 0.9 * pages, default
  applied, setting, reuse = _run('reuse')
  assert (applied, setting) == (True, 'reuse')
  assert reuse[0] > 0.9 * pages, reuse          # the first allocation still faults its pages in
  assert max(reuse[1:]) < 0.01 * pages, reuse   # later ones reuse them


def test_env_choice():
  assert host_memory.env_choice({}) == 'reuse'
  assert host_memory.env_choice({'CE_JAX_MALLOC': 'default'}) == 'default'
  with pytest.raises(ValueError, match=r"CE_JAX_MALLOC='mmap': expected one of reuse, default"):
    host_memory.env_choice({'CE_JAX_MALLOC': 'mmap'})
