"""Fig. 2 of the paper: the NTK of an ensemble converges to the Neural Mean Kernel as m grows.

:func:`ntk_convergence` computes, over angles gamma, K(x_0, x_gamma) of collegial ensembles of m
dense members (Eq. 4), the Monte-Carlo Neural Mean Kernel (Eq. 5) and the infinite-width NTK;
``experiments/ntk_convergence.py`` is its binary and :func:`ce_jax.studies.plotting.plot_ntk_convergence`
its figure.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ce_jax import _validate
from ce_jax.theory import infinite
from ce_jax.theory import variance


class Convergence(NamedTuple):
  """Fig. 2: K(x_0, x_gamma) of ensembles, the Neural Mean Kernel and the infinite-width NTK.

  gamma: (A,) angles in [-pi, pi]; x_0 = (1, 0), x_gamma = (cos gamma, sin gamma).
  ensemble_ntk: {m (str): (A,) K_e of ONE ensemble of m independent members (Eq. 4)}.
  nmk, nmk_stderr: (A,) Monte-Carlo NMK (Eq. 5) over ``nmk_samples`` inits of width ``nmk_width``.
  infinite_ntk: (A,) the infinite-width NTK (ReLU arc-cosine recursion).
  """
  gamma: np.ndarray
  depth: int
  width: int
  ensemble_ntk: dict
  nmk: np.ndarray
  nmk_stderr: np.ndarray
  nmk_samples: int
  nmk_width: int
  infinite_ntk: np.ndarray


def ntk_convergence(key, *, depth: int = 4, width: int = 1000, multiplicities=(1, 10, 100),
                    num_angles: int = 101, nmk_samples: int = 1000, nmk_width: int | None = None,
                    chunk_size: int = 32, progress=None, on_ensemble=None) -> Convergence:
  """Fig. 2 of the paper: the ensemble NTK converges to the Neural Mean Kernel as m grows.

  Members are the dense member of ``ce_jax.models.dense`` (``depth`` weight matrices, hidden width
  ``width``, scalar output). The ensemble of size m averages the NTKs of m independent members
  (chunk by chunk: memory does not grow with m); the NMK uses independent initializations.

  Args:
    key: PRNG key; ensemble i uses ``fold_in(key, i + 1)``, the NMK ``fold_in(key, 0)``.
    depth, width: member shape (depth >= 2, width >= 1).
    multiplicities: ensemble sizes m (each >= 1).
    num_angles: number of angles (>= 2).  nmk_samples: NMK initializations (>= 2).
    nmk_width: NMK member width (default ``width``).
    chunk_size: initializations per vmapped chunk (lowered where a chunk would not fit in
      memory; a width whose single member cannot fit is refused with a one-line error).
    progress: optional ``progress(what: str, done: int, total: int)``.
    on_ensemble: optional ``on_ensemble(m, kernel)`` after each ensemble (to save results as
      they come; ``kernel`` is ``(num_angles,)``).
  """
  depth = _validate.positive_int('depth', depth, minimum=2)
  width = _validate.positive_int('width', width)
  ms = _validate.distinct('multiplicities', _validate.int_list('multiplicities', multiplicities))
  num_angles = _validate.positive_int('num_angles', num_angles, minimum=2)
  nmk_samples = _validate.positive_int('nmk_samples', nmk_samples, minimum=2)
  nmk_width = width if nmk_width is None else _validate.positive_int('nmk_width', nmk_width)
  chunk_size = _validate.positive_int('chunk_size', chunk_size)
  # Memory: the curves (float64, num_angles each), and per member of a chunk its weights,
  # gradients and the activations of the num_angles + 1 inputs (float32).
  _validate.fits_in_memory(f'num_angles={num_angles}', 8.0 * num_angles * (len(ms) + 16))
  chunks = {}
  for w in {width, nmk_width}:
    params = 3.0 * w + (depth - 2) * float(w) * w
    per_member = 4.0 * (3 * params + 4 * (num_angles + 1) * w * depth) + 1e5
    _validate.fits_in_memory(f'width {w} (depth {depth}, {num_angles} angles: '
                             f'{params:,.0f} parameters per member)', per_member)
    budget = 0.25 * (_validate.memory_bytes() or 8 * 2 ** 30)
    chunks[w] = int(max(1, min(chunk_size, budget // per_member)))

  def cb(what):
    return None if progress is None else (lambda done, total: progress(what, done, total))

  gamma = np.linspace(-np.pi, np.pi, num_angles)
  x0 = np.array([[1.0, 0.0]])
  xg = np.stack([np.cos(gamma), np.sin(gamma)], axis=1)
  sampler = variance.dense_ntk_sampler((width,) * (depth - 1), x0, xg)
  inf = np.asarray(infinite.infinite_ntk(x0, xg, depth=depth, backend='jax'), np.float64)[0]
  ens = {}
  for i, m in enumerate(ms):
    ens[str(m)] = variance.ensemble_mean(sampler, jax.random.fold_in(key, i + 1), m,
                                chunk_size=chunks[width], progress=cb(f'ensemble m={m}'))[0]
    if on_ensemble is not None:
      on_ensemble(m, ens[str(m)])
  nmk_sampler = sampler if nmk_width == width else variance.dense_ntk_sampler(
      (nmk_width,) * (depth - 1), x0, xg)
  nmk = variance.neural_mean_kernel(nmk_sampler, jax.random.fold_in(key, 0), nmk_samples,
                           chunk_size=chunks[nmk_width], progress=cb('NMK'))
  return Convergence(gamma, depth, width, ens, np.asarray(nmk.mean)[0],
                     np.asarray(nmk.stderr)[0], nmk_samples, nmk_width, inf)
