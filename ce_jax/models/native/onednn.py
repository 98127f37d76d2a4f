"""oneDNN convolutions for XLA:CPU: a small compiled extension called through the XLA FFI.

XLA:CPU (jax 0.5) has no fast grouped convolution: its forward pass runs at a few GFLOP/s per
group and its kernel gradient falls to a generic loop (a known XLA:CPU limitation). PyTorch on
the same CPU calls oneDNN. This module compiles ``ce_jax/models/native/csrc/onednn_conv.cc`` --
XLA FFI handlers (forward, backward data, backward weights, both backward passes in one call)
over oneDNN 3.x primitives, channels-last, float32 -- against the oneDNN wheel
(``onednn-cpu-gomp``, Linux x86-64: ``pip install 'ce_jax[onednn]'``) and JAX's FFI headers,
loads it with ctypes and registers the handlers. :func:`conv` is the differentiable convolution
(custom VJP); :class:`ce_jax.models.layers.GroupedConv` uses it where
:func:`ce_jax.models.layers.choose_impl` (the one place that decides) says so.

Build: ONLY ``python -m ce_jax.models.native.onednn build`` (``make install`` runs it) or
:func:`build`; about 5 s with g++. Nothing else compiles: :func:`load` (and :func:`available`,
:func:`status`) only load a library that is already built, and :func:`supports` is a pure check
of the case. Without a built library every convolution takes the XLA paths, with one warning
that says how to build. The library's file name carries a hash of the source, the JAX version
and the oneDNN headers, so a changed source or stack never loads a stale build (it counts as not
built). It is written to ``ce_jax/models/native/_build`` (or ``$CE_JAX_BUILD_DIR``;
``~/.cache/ce_jax`` where the package directory is read-only).

Environment (the switch that turns the extension off is documented with the other choices in
:func:`ce_jax.models.layers.choose_impl`):
  CE_JAX_ONEDNN=0        never load or use the extension (every convolution takes the XLA paths).
  CE_JAX_ONEDNN_ROOT     where oneDNN's ``include/`` and ``lib/`` are (default: ``sys.prefix``).
  CE_JAX_BUILD_DIR       where the library is built and looked for.
  CXX                    the C++ compiler (default: g++, then c++, then ``python -m ziglang c++``
                         from the ``cxx`` extra; zig's first build takes ~90 s).

FLOPs: importing this module registers :mod:`ce_jax.design.accounting` rules for its custom
calls, so ``count_flops`` counts them like the convolutions they replace.

Threads: oneDNN runs its own OpenMP team (``OMP_NUM_THREADS``, default all cores). Calls are
serialized inside the library, so XLA running two convolutions at once does not oversubscribe.

Limits: float32, 1-3 spatial dims, no dilation, non-negative padding; reverse mode only (the
custom VJP has no forward-mode rule and its backward pass is not differentiable again). Use
``GroupedConv(impl='loop' | 'stock')`` for forward-mode or higher-order derivatives.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax.design import accounting

SOURCE = pathlib.Path(__file__).parent / 'csrc' / 'onednn_conv.cc'
FORWARD_TARGET = 'ce_onednn_conv_fwd'   # the forward call: (x, w) -> y, kernel HWIO
TARGETS = {
    'ce_onednn_conv_fwd': 'CeOnednnConvFwd',
    'ce_onednn_conv_bwd_data': 'CeOnednnConvBwdData',
    'ce_onednn_conv_bwd_weights': 'CeOnednnConvBwdWeights',
    'ce_onednn_conv_bwd': 'CeOnednnConvBwd',
}

BUILD_COMMAND = 'python -m ce_jax.models.native.onednn build'
ENV_SWITCH = 'CE_JAX_ONEDNN'
_OFF = ('0', 'false', 'no', 'off')
_ON = ('', '1', 'true', 'yes', 'on')

# After the first load(): 'lib', 'path', 'version' when loaded, else 'error' (one line) and
# 'reason' ('disabled', 'platform', 'not_built' or 'load_failed').
_state: dict[str, Any] = {}
_state_lock = threading.Lock()   # the first load may come from several tracing threads at once


class BuildError(RuntimeError):
  """The extension could not be built (no compiler, no oneDNN, or a compile error)."""


# ---------------------------------------------------------------------------------------------
# Finding, building and loading the library.


def onednn_root() -> pathlib.Path:
  """Directory with oneDNN's ``include/oneapi/dnnl/dnnl.hpp`` and ``lib/libdnnl.so*``."""
  return pathlib.Path(os.environ.get('CE_JAX_ONEDNN_ROOT') or sys.prefix)


def _onednn_lib(root: pathlib.Path) -> pathlib.Path | None:
  for name in ('libdnnl.so.3', 'libdnnl.so'):
    if (root / 'lib' / name).exists():
      return root / 'lib' / name
  return None


def _compiler() -> list[str] | None:
  """The C++ compiler command: $CXX, g++, c++, or zig's clang from the ``ziglang`` wheel
  (``pip install -e '.[cxx]'``; ``make install`` falls back to it where no g++ is installed)."""
  for cxx in (os.environ.get('CXX'), 'g++', 'c++'):
    if cxx and shutil.which(cxx):
      return [shutil.which(cxx)]
  try:
    import ziglang  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  return [sys.executable, '-m', 'ziglang', 'c++']


def _build_dirs() -> list[pathlib.Path]:
  if os.environ.get('CE_JAX_BUILD_DIR'):
    return [pathlib.Path(os.environ['CE_JAX_BUILD_DIR'])]
  return [pathlib.Path(__file__).parent / '_build',
          pathlib.Path(os.environ.get('XDG_CACHE_HOME', pathlib.Path.home() / '.cache')) / 'ce_jax']


def _tag(root: pathlib.Path) -> str:
  """Hash of everything the binary depends on: source, JAX's FFI headers, oneDNN's version and
  directory (the library's rpath: each venv gets its own build in a shared build directory)."""
  h = hashlib.sha256(SOURCE.read_bytes())
  h.update(jax.__version__.encode())
  h.update(str(root.resolve()).encode())
  ffi_header = pathlib.Path(jax.ffi.include_dir()) / 'xla' / 'ffi' / 'api' / 'api.h'
  if ffi_header.exists():
    h.update(ffi_header.read_bytes())
  version_header = root / 'include' / 'oneapi' / 'dnnl' / 'dnnl_version.h'
  if version_header.exists():
    h.update(version_header.read_bytes())
  return h.hexdigest()[:16]


def library_name(root: pathlib.Path | None = None) -> str:
  return f'libce_onednn_conv-{_tag(root or onednn_root())}.so'


def build(force: bool = False, verbose: bool = False) -> pathlib.Path:
  """Compiles the extension (if not built yet, or ``force``) and returns the library's path.

  The only function that runs the compiler (``python -m ce_jax.models.native.onednn build`` and
  ``make install`` call it); after it, :func:`load` finds the library even if an earlier load in
  this process found none.

  Raises:
    BuildError: no C++ compiler, no oneDNN headers/library, or the compiler failed (its output
      is in the message).
  """
  root = onednn_root()
  lib = _onednn_lib(root)
  header = root / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp'
  if lib is None or not header.exists():
    raise BuildError(f'oneDNN not found under {root} (need include/oneapi/dnnl/dnnl.hpp and '
                     "lib/libdnnl.so.3; pip install 'ce_jax[onednn]', or set CE_JAX_ONEDNN_ROOT)")
  cxx = _compiler()
  if cxx is None:
    raise BuildError("no C++ compiler found (set CXX, install g++, or pip install 'ce_jax[cxx]' "
                     "for zig's)")
  name = library_name(root)
  for d in _build_dirs():
    if (d / name).exists() and not force:
      _forget_failed_load()
      return d / name
  errors = []
  for d in _build_dirs():
    try:
      d.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(suffix='.so', dir=d)
      os.close(fd)
    except OSError as e:
      errors.append(f'{d}: {e}')
      continue
    cmd = cxx + ['-O2', '-std=c++17', '-shared', '-fPIC', '-w',
           '-I', jax.ffi.include_dir(), '-I', str(root / 'include'), str(SOURCE), '-o', tmp,
           '-L', str(lib.parent), f'-l:{lib.name}', f'-Wl,-rpath,{lib.parent}']
    if verbose:
      print(' '.join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      os.unlink(tmp)
      raise BuildError(f'compiling {SOURCE.name} failed ({" ".join(cmd)}):\n{proc.stderr[-4000:]}')
    os.replace(tmp, d / name)   # atomic: concurrent builders (pytest workers) never see half a file
    _forget_failed_load()
    return d / name
  raise BuildError('no writable build directory: ' + '; '.join(errors))


def _find_built() -> pathlib.Path | None:
  name = library_name()
  for d in _build_dirs():
    if (d / name).exists():
      return d / name
  return None


def _forget_failed_load() -> None:
  with _state_lock:
    if 'lib' not in _state:
      _state.clear()


def enabled() -> bool:
  """False when ``$CE_JAX_ONEDNN`` turns the extension off (0, false, no, off).

  Raises:
    ValueError: any other value than those and 1, true, yes, on (or unset / empty).
  """
  value = os.environ.get(ENV_SWITCH, '1')
  v = value.strip().lower()
  if v not in _OFF + _ON:
    raise ValueError(f'{ENV_SWITCH} must be one of 0, false, no, off (never use oneDNN) or 1, '
                     f'true, yes, on (use it where it applies), got {value!r}')
  return v not in _OFF


def load() -> dict[str, Any]:
  """Loads the built library and registers its FFI targets, once per process; never compiles.

  Returns the load state (:func:`status` has the public view). Without a built library for this
  source and stack the state records why, and :func:`build` is what makes one.
  """
  on = enabled()   # outside the cache: a bad value is an error every time
  if _state:
    return _state
  with _state_lock:
    if not _state:
      _load_locked(on)
  return _state


def _load_locked(on: bool) -> None:
  if not on:
    _state.update(error=f'disabled by {ENV_SWITCH}=0', reason='disabled')
    return
  if sys.platform != 'linux':
    _state.update(error=f'only built on Linux (this is {sys.platform})', reason='platform')
    return
  try:
    path = _find_built()
  except OSError as e:   # the source file cannot be read
    _state.update(error=f'{type(e).__name__}: {e}'.splitlines()[0], reason='load_failed')
    return
  if path is None:
    where = ', '.join(str(d) for d in _build_dirs())
    _state.update(error=f'not built (no {library_name()} in {where}): run {BUILD_COMMAND} '
                        '(make install does)', reason='not_built')
    return
  try:
    lib = ctypes.CDLL(str(path))
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
    lib.CeOnednnVersion.restype = ctypes.c_char_p
    _state.update(lib=lib, path=str(path), version=lib.CeOnednnVersion().decode())
  except (OSError, AttributeError) as e:
    _state.update(error=f'{type(e).__name__}: {e}'.splitlines()[0], reason='load_failed')


def available() -> bool:
  """True when the extension is built, loaded and registered (loads it; never compiles)."""
  return 'lib' in load()


def status() -> dict[str, Any]:
  """``{'available', 'library', 'onednn_version', 'error'}`` (for logs and benchmark JSON)."""
  s = load()
  return {'available': 'lib' in s, 'library': s.get('path'), 'onednn_version': s.get('version'),
          'error': s.get('error')}


def fallback_notice() -> str | None:
  """One line for a user whose convolutions fall back to XLA although oneDNN could serve them.

  None when the extension is loaded, turned off on purpose (``CE_JAX_ONEDNN=0``) or not made for
  this platform; otherwise why it is unavailable and how to build it.
  """
  s = load()
  if 'lib' in s or s.get('reason') in ('disabled', 'platform'):
    return None
  fix = '' if s.get('reason') == 'not_built' else f'; rebuild with {BUILD_COMMAND}'
  return (f'ce_jax: oneDNN convolutions unavailable, using the slower XLA paths: '
          f'{s.get("error")}{fix}')


# ---------------------------------------------------------------------------------------------
# The convolution.


def supports(dtype, num_spatial: int, padding: Sequence[tuple[int, int]],
             input_dilation: Sequence[int] = (), kernel_dilation: Sequence[int] = (),
             backend: str | None = None) -> bool:
  """Whether :func:`conv` computes this case: float32 on CPU, 1-3 spatial dims, no dilation,
  padding >= 0.

  A pure check of the case: it neither builds nor loads the library (that it is loaded is
  :func:`available`; :func:`ce_jax.models.layers.choose_impl` asks both).

  Args:
    dtype: the computation dtype (only float32 is handled).
    num_spatial: spatial dims (1-3).
    padding: explicit ``(low, high)`` pairs (all >= 0).
    input_dilation, kernel_dilation: all ones.
    backend: ``jax.default_backend()`` if None; only 'cpu'.
  """
  return ((backend or jax.default_backend()) == 'cpu' and jnp.dtype(dtype) == jnp.float32
          and 1 <= num_spatial <= 3 and all(lo >= 0 and hi >= 0 for lo, hi in padding)
          and all(d == 1 for d in tuple(input_dilation) + tuple(kernel_dilation)))


def output_shape(x_shape, w_shape, strides, padding) -> tuple[int, ...]:
  """``(N, *So, O)`` of a convolution of ``x (N, *S, C)`` with ``w (*K, C/G, O)``."""
  nd = len(x_shape) - 2
  spatial = tuple((x_shape[1 + i] + padding[i][0] + padding[i][1] - w_shape[i]) // strides[i] + 1
                  for i in range(nd))
  return (x_shape[0],) + spatial + (w_shape[-1],)


def _attrs(strides, padding, groups):
  return dict(strides=np.asarray(strides, np.int64),
              padding=np.asarray([p for pair in padding for p in pair], np.int64),
              groups=np.int64(groups))


def _check(x, w, strides, padding, groups):
  nd = x.ndim - 2
  if x.dtype != jnp.float32 or w.dtype != jnp.float32:
    raise ValueError(f'ce_jax.models.native.onednn.conv takes float32 operands, got {x.dtype} and {w.dtype}')
  if not 1 <= nd <= 3 or w.ndim != x.ndim:
    raise ValueError(f'ce_jax.models.native.onednn.conv needs (N, *S, C) and (*K, C/G, O) with 1-3 spatial '
                     f'dims, got shapes {x.shape} and {w.shape}')
  if len(strides) != nd or len(padding) != nd or any(lo < 0 or hi < 0 for lo, hi in padding):
    raise ValueError(f'strides {strides} and padding {padding} must have {nd} entries, padding '
                     '>= 0')
  if x.shape[-1] != w.shape[-2] * groups or w.shape[-1] % groups:
    raise ValueError(f'groups {groups} do not match input channels {x.shape[-1]} and kernel '
                     f'{w.shape}')
  if any(s < 1 for s in output_shape(x.shape, w.shape, strides, padding)[1:-1]):
    raise ValueError(f'kernel {w.shape[:nd]} is larger than the padded input {x.shape[1:-1]}')
  if not available():
    raise RuntimeError(f'ce_jax.models.native.onednn is not available: {status()["error"]}')


def conv_forward(x, w, strides, padding, groups: int):
  """``lax.conv_general_dilated(x, w, strides, padding, feature_group_count=groups)``, NHWC/HWIO.

  x: ``(N, *S, G*ci)`` float32; w: ``(*K, ci, G*co)``; returns ``(N, *So, G*co)``.
  """
  out = jax.ShapeDtypeStruct(output_shape(x.shape, w.shape, strides, padding), jnp.float32)
  return jax.ffi.ffi_call(FORWARD_TARGET, out, vmap_method='sequential')(
      x, w, **_attrs(strides, padding, groups))


def conv_backward_data(dy, w, x_shape, strides, padding, groups: int):
  """Input gradient ``(N, *S, G*ci)`` from the output cotangent ``dy`` ``(N, *So, G*co)``."""
  out = jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32)
  return jax.ffi.ffi_call('ce_onednn_conv_bwd_data', out, vmap_method='sequential')(
      dy, w, **_attrs(strides, padding, groups))


def conv_backward_weights(x, dy, w_shape, strides, padding, groups: int):
  """Kernel gradient ``(*K, ci, G*co)`` from the input ``x`` and the output cotangent ``dy``."""
  out = jax.ShapeDtypeStruct(tuple(w_shape), jnp.float32)
  return jax.ffi.ffi_call('ce_onednn_conv_bwd_weights', out, vmap_method='sequential')(
      x, dy, **_attrs(strides, padding, groups))


def conv_backward(x, w, dy, strides, padding, groups: int):
  """``(dx, dw)`` in ONE custom call (the VJP of :func:`conv`; see the C++ for why)."""
  outs = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(w.shape, jnp.float32))
  return jax.ffi.ffi_call('ce_onednn_conv_bwd', outs, vmap_method='sequential')(
      x, w, dy, **_attrs(strides, padding, groups))


def _size(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


def _taps(w_shape) -> int:
  """Multiply-adds per output element: ``prod(*K, C/G)`` of a kernel ``(*K, C/G, O)``."""
  return _size(w_shape) // w_shape[-1]


# FLOPs (2 per multiply-add) of each custom call, as ``count_flops`` counts the convolution it
# replaces: the forward pass and each gradient do the same multiply-adds, one per kernel tap and
# output element.
_FLOP_RULES = {
    'ce_onednn_conv_fwd':         # (x, w) -> y
        lambda e: 2 * _size(e.outvars[0].aval.shape) * _taps(e.invars[1].aval.shape),
    'ce_onednn_conv_bwd_data':    # (dy, w) -> dx
        lambda e: 2 * _size(e.invars[0].aval.shape) * _taps(e.invars[1].aval.shape),
    'ce_onednn_conv_bwd_weights':  # (x, dy) -> dw
        lambda e: 2 * _size(e.invars[1].aval.shape) * _taps(e.outvars[0].aval.shape),
    'ce_onednn_conv_bwd':         # (x, w, dy) -> (dx, dw): both gradients
        lambda e: 4 * _size(e.invars[2].aval.shape) * _taps(e.invars[1].aval.shape),
}
assert set(_FLOP_RULES) == set(TARGETS)
for _target, _rule in _FLOP_RULES.items():
  accounting.register_flop_rule('ffi_call', _rule, target=_target, kind='conv')


COMBINED_BACKWARD = True   # False: two calls (backward data, backward weights); for A/B only


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, groups):
  return conv_forward(x, w, strides, padding, groups)


def _conv_fwd(x, w, strides, padding, groups):
  return conv_forward(x, w, strides, padding, groups), (x, w)


def _conv_bwd(strides, padding, groups, res, dy):
  x, w = res
  dy = dy.astype(jnp.float32)
  if COMBINED_BACKWARD:
    return conv_backward(x, w, dy, strides, padding, groups)
  return (conv_backward_data(dy, w, x.shape, strides, padding, groups),
          conv_backward_weights(x, dy, w.shape, strides, padding, groups))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x, w, strides: Sequence[int], padding: Sequence[tuple[int, int]], groups: int = 1):
  """Differentiable (reverse mode) oneDNN convolution, channels-last, float32.

  Equal to ``lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=(NHWC, HWIO,
  NHWC), feature_group_count=groups)`` in value and gradients (to float32 rounding).

  Args:
    x: ``(N, *S, G*ci)`` float32, 1-3 spatial dims.
    w: ``(*K, ci, G*co)`` float32 (Flax ``nn.Conv`` kernel layout).
    strides: one int per spatial dim.
    padding: one ``(low, high)`` pair of ints >= 0 per spatial dim.
    groups: ``feature_group_count``.

  Returns:
    ``(N, *So, G*co)`` float32.
  """
  strides = tuple(int(s) for s in strides)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  groups = int(groups)
  _check(x, w, strides, padding, groups)
  if x.size == 0 or w.size == 0:   # empty batch or channels: XLA's convolution handles those
    nd = x.ndim - 2
    dn = jax.lax.ConvDimensionNumbers((0, nd + 1) + tuple(range(1, nd + 1)),
                                      (nd + 1, nd) + tuple(range(nd)),
                                      (0, nd + 1) + tuple(range(1, nd + 1)))
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn,
                                        feature_group_count=groups)
  return _conv(x, w, strides, padding, groups)


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m ce_jax.models.native.onednn [build|status]``: build the extension / print its status."""
  args = list(sys.argv[1:] if argv is None else argv) or ['status']
  if args[0] not in ('build', 'status'):
    print(f'usage: python -m ce_jax.models.native.onednn [build|status]; got {args[0]!r}', file=sys.stderr)
    return 2
  if args[0] == 'build':
    import platform  # pylint: disable=g-import-not-at-top
    if sys.platform != 'linux' or platform.machine() != 'x86_64':
      # The pinned oneDNN wheel is Linux x86-64 only; elsewhere XLA's convolutions are used.
      print(f'ce_jax.models.native.onednn: skipped on {sys.platform}/{platform.machine()} (Linux x86-64 only)')
      return 0
    try:
      path = build(force='--force' in args, verbose=True)
    except BuildError as e:
      print(f'ce_jax.models.native.onednn: not built: {e}', file=sys.stderr)
      return 1
    print(f'ce_jax.models.native.onednn: built {path}')
  s = status()
  print(' '.join(f'{k}={v}' for k, v in s.items()))
  return 0 if s['available'] else 1


if __name__ == '__main__':
  sys.exit(main())
