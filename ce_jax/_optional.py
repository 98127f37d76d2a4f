"""Optional dependencies: imported on first use, with a one-line error naming the extra.

The core (``ntk``, ``variance``, ``infinite``, ``alpha``, ``blocks``, ``accounting``, ``solver``,
``models``) needs only jax, flax, numpy and absl-py. The rest comes with an extra of ce_jax
(``setup.cfg``): ``nt`` (neural-tangents), ``data`` (tensorflow-datasets, tensorflow),
``experiments`` (optax, scikit-learn, scipy, matplotlib), ``train`` (both, plus orbax, clu,
ml_collections, tensorboard), ``onednn``, ``all``.
"""

from __future__ import annotations

import importlib
from typing import Any


class MissingExtraError(ImportError):
  """An optional package is missing; the message names the extra that installs it."""


def hint(extra: str) -> str:
  return f"pip install 'ce_jax[{extra}]'"


def require(module: str, extra: str, *, package: str | None = None, what: str = '') -> Any:
  """``importlib.import_module(module)``, or :class:`MissingExtraError` naming ``extra``.

  Args:
    module: the module to import (``'tensorflow_datasets'``).
    extra: the ce_jax extra that installs it (``'data'``).
    package: its name on the package index, if not ``module``.
    what: what needs it, for the message (``'the tfds pipelines'``).
  """
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtraError(f'{what or "this"} needs {package or module}, which is not installed '
                            f'({e}): {hint(extra)}') from None
