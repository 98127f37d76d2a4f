"""Input validation shared by the library: one-line ``ValueError``s that name the bad value.

Every public function of ce_jax validates its arguments with these helpers, so that a user sees
``ValueError: width must be an integer >= 1, got 0`` instead of a deep traceback or a silent
wrong answer. Binaries catch ``ValueError`` and turn it into a usage error (see
:func:`ce_jax.tools.cli.run_main`).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
  """Returns ``value`` as an int, or raises if it is not an integer >= ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
      value = int(value)
    else:
      raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
  if value < minimum:
    raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
  return int(value)


def int_list(name: str, values: Any, minimum: int = 1) -> tuple[int, ...]:
  """Validates a non-empty list of integers >= ``minimum`` (a comma string is accepted)."""
  if isinstance(values, str):
    parts = [p.strip() for p in values.split(',') if p.strip()]
    ints = []
    for p in parts:
      try:
        ints.append(int(p))
      except ValueError:
        raise ValueError(f'{name} must be a comma-separated list of integers, got {values!r} '
                         f'({p!r} is not an integer)') from None
    values = ints
  if isinstance(values, (int, np.integer)):
    values = [values]
  values = list(values)
  for i, v in enumerate(values):  # absl DEFINE_list gives strings
    if isinstance(v, str):
      try:
        values[i] = int(v.strip())
      except ValueError:
        raise ValueError(f'{name}[{i}] must be an integer >= {minimum}, got {v!r}') from None
  if not values:
    raise ValueError(f'{name} must be a non-empty list of integers >= {minimum}, got []')
  return tuple(positive_int(f'{name}[{i}]', v, minimum) for i, v in enumerate(values))


def design_list(name: str, text: str, parts: tuple[str, str] = ('m', 'n'), *,
                allow_empty: bool = False, suffix: str = '') -> list[tuple[int, int]]:
  """``'1x128,37x10'`` -> ``[(1, 128), (37, 10)]``: a comma list of ``AxB`` designs.

  ``parts`` names A and B in the messages (e.g. ``('groups', 'width')``); an optional trailing
  ``suffix`` on each item is accepted (``'d'``: ``37x10d``). One-line ``ValueError`` naming the
  bad item; an empty list is refused unless ``allow_empty``.
  """
  form = f'{parts[0].upper()}x{parts[1].upper()}{suffix}'
  out = []
  for part in [p.strip() for p in str(text).split(',') if p.strip()]:
    body = part.lower()[:-len(suffix)] if suffix and part.lower().endswith(suffix) else part.lower()
    bits = body.split('x')
    if len(bits) != 2 or not all(re.fullmatch(r'[+-]?\d+', b.strip()) for b in bits):
      raise ValueError(f'{name} must be a comma list of {form} like 3x64{suffix}, got {part!r}')
    out.append((positive_int(parts[0], int(bits[0])), positive_int(parts[1], int(bits[1]))))
  if not out and not allow_empty:
    raise ValueError(f'{name} must be a non-empty comma list of {form}, got {text!r}')
  return out


def positive_values(name: str, values: Any, minimum: float = 1) -> Any:
  """Returns ``values`` (a scalar or an array, e.g. widths of a vectorized closed form) after
  checking that every entry is a finite number >= ``minimum``; traced values are not checked."""
  try:
    arr = np.asarray(values)
  except Exception:  # a tracer: cannot check values  # pylint: disable=broad-except
    return values
  if arr.dtype == object or arr.dtype.kind not in 'biuf':
    raise ValueError(f'{name} must be numbers >= {minimum}, got {values!r}')
  if arr.size == 0:
    raise ValueError(f'{name} must not be empty, got {values!r}')
  bad = ~np.isfinite(arr.astype(np.float64)) | (arr < minimum)
  if np.any(bad):
    first = arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
    shown = values if arr.ndim == 0 else first.item()
    raise ValueError(f'{name} must be >= {minimum} (and finite), got {shown!r}')
  return values


def distinct(name: str, values: Sequence[Any]) -> Sequence[Any]:
  """Raises if ``values`` holds an entry twice (e.g. the same width in a fit)."""
  seen = set()
  for v in values:
    k = tuple(v) if isinstance(v, (list, tuple, np.ndarray)) else v
    if k in seen:
      raise ValueError(f'{name} must be distinct, got {v!r} twice in {list(values)!r}')
    seen.add(k)
  return values


def finite_positive(name: str, value: Any) -> float:
  """Returns ``value`` as a float, or raises if it is not finite and > 0."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}') from None
  if not math.isfinite(v) or v <= 0:
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
  return v


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
  """Raises unless ``value`` is one of ``allowed``."""
  allowed = list(allowed)
  if value not in allowed:
    raise ValueError(f'{name} must be one of {", ".join(map(str, allowed))}; got {value!r}')
  return value


def finite_array(name: str, x: Any, ndim: int | Sequence[int] | None = None):
  """Raises if ``x`` has non-finite entries or the wrong number of dimensions.

  Only checks concrete arrays (inside ``jit`` the check is skipped, shapes are still checked).
  """
  shape = np.shape(x)
  if ndim is not None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in allowed:
      raise ValueError(f'{name} must have {" or ".join(map(str, allowed))} dimensions, '
                       f'got shape {shape}')
  try:
    arr = np.asarray(x)
  except Exception:  # a tracer: cannot check values
    return x
  if arr.dtype.kind in 'fc' and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f'{name} must be finite, got {bad} non-finite entries (shape {shape})')
  return x


def input_pair(x1: Any, x2: Any = None):
  """Validates two input batches ``(N1, d)``, ``(N2, d)`` (``x2=None`` means ``x1``).

  Returns ``(x1, x2)``; raises if either is not 2-D or not finite, if the input dimensions
  differ, or if ``d < 1``.
  """
  finite_array('x1', x1, ndim=2)
  x2 = x1 if x2 is None else x2
  finite_array('x2', x2, ndim=2)
  if np.shape(x1)[1] != np.shape(x2)[1]:
    raise ValueError(f'x1 and x2 must have the same input dimension, got shapes '
                     f'{np.shape(x1)} and {np.shape(x2)}')
  if np.shape(x1)[1] < 1:
    raise ValueError(f'inputs must have input dimension >= 1, got shape {np.shape(x1)}')
  return x1, x2


def memory_bytes() -> int:
  """Physical memory of this machine in bytes (0 when unknown)."""
  try:
    return int(os.sysconf('SC_PHYS_PAGES')) * int(os.sysconf('SC_PAGE_SIZE'))
  except (ValueError, OSError, AttributeError):
    return 0


def format_bytes(n: float) -> str:
  for unit in ('B', 'KB', 'MB', 'GB', 'TB', 'PB'):
    if abs(n) < 1024 or unit == 'PB':
      return f'{n:.3g} {unit}' if unit != 'B' else f'{int(n)} B'
    n /= 1024
  return f'{n:.3g} PB'


def fits_in_memory(what: str, need_bytes: float, fraction: float = 0.5) -> None:
  """Raises a one-line ``ValueError`` when ``need_bytes`` exceed ``fraction`` of the memory."""
  total = memory_bytes()
  if total and need_bytes > fraction * total:
    raise ValueError(f'{what} would need {format_bytes(need_bytes)} of memory; this machine has '
                     f'{format_bytes(total)} (at most {fraction:.0%} may be used): ask for less')
