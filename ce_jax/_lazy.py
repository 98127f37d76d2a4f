"""Lazy submodules for the package ``__init__`` files (``import ce_jax`` stays light)."""

from __future__ import annotations

import importlib
from typing import Callable, Sequence


def submodules(package: str, names: Sequence[str]) -> tuple[Callable, Callable]:
  """``(__getattr__, __dir__)`` for ``package`` that import ``package.<name>`` on first access."""
  names = tuple(names)

  def getattr_(name):
    if name in names:
      return importlib.import_module(f'{package}.{name}')
    raise AttributeError(f'module {package!r} has no attribute {name!r}')

  def dir_():
    return sorted(set(names) | set(vars(importlib.import_module(package))))

  return getattr_, dir_
