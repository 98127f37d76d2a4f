"""Helpers for the absl binaries in ``experiments/``: usage errors without tracebacks, JSON out."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import numpy as np


def run_main(main: Callable[[list[str]], Any]) -> None:
  """``absl.app.run(main)`` where a ``ValueError`` becomes a one-line usage error (exit 2).

  So does a missing optional package (:class:`ce_jax._optional.MissingExtraError`, which names
  the extra to install).
  """
  from absl import app

  from ce_jax import _optional  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, _optional.MissingExtraError) as e:
      print(f'{os.path.basename(sys.argv[0])}: error: {e}', file=sys.stderr)
      sys.exit(2)

  try:
    app.run(wrapped)
  except app.UsageError as e:  # unknown flags / bad flag values are already one line
    print(f'{os.path.basename(sys.argv[0])}: error: {e}', file=sys.stderr)
    sys.exit(2)


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
