"""Infinite-width NTK and NNGP kernels of the dense member.

The member (paper Eq. 3, NTK parameterization, ``depth`` weight matrices, ReLU, no biases)::

    h_1 = sqrt(2/n_0) W_1 x,   h_{l+1} = sqrt(2/n_l) W_{l+1} phi(h_l),
    f   = sqrt(1/n_L) W_out phi(h_L)

has, as all hidden widths go to infinity, the ReLU arc-cosine recursion (Cho & Saul 2009,
Jacot et al. 2018). With ``w2_l = 2`` for hidden layers and ``w2 = 1`` for the readout::

    Sigma_1(x, x') = 2 <x, x'> / n_0                      Theta_1 = Sigma_1
    c = Sigma_l(x, x') / sqrt(Sigma_l(x, x) Sigma_l(x', x')),  t = arccos(c)
    E[phi(u) phi(v)]   = sqrt(Sigma_l(x,x) Sigma_l(x',x')) (sin t + (pi - t) cos t) / (2 pi)
    E[phi'(u) phi'(v)] = (pi - t) / (2 pi)
    Sigma_{l+1} = w2 E[phi phi],   Theta_{l+1} = Sigma_{l+1} + w2 E[phi' phi'] Theta_l

The returned NTK is ``Theta_depth``, the kernel of ONE output (for ``k`` outputs the infinite NTK
is ``Theta_depth * I_k``; the trace convention of the empirical NTK gives ``k * Theta_depth``).
Useful closed form: ``Theta_depth(x, x) = depth * |x|^2 / n_0``.

Two backends compute the same kernel: ``'jax'`` (this recursion in pure JAX, runs on any JAX)
and ``'nt'`` (``neural_tangents.stax``: ``Dense(n, W_std=sqrt(2), parameterization='ntk')``
hidden layers and ``Dense(k, W_std=1)`` readout, no bias; needs neural-tangents, i.e. jax < 0.6:
``pip install 'ce_jax[nt]'`` or the reference stack ``requirements/nt.txt``, where the tests
cross-check the two). ``'auto'`` is ``'jax'``: ``'nt'`` only when asked for.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from ce_jax import _validate
from ce_jax.theory import ntk


BACKENDS = ('auto', 'jax', 'nt')


class InfiniteKernels(NamedTuple):
  """Infinite-width kernels of one output, each ``(N1, N2)``."""
  ntk: jnp.ndarray
  nngp: jnp.ndarray


def _arccos_step(sigma, q1, q2):
  """One ReLU layer: returns (E[phi phi], E[phi' phi']) for covariance ``sigma`` and variances.

  ``sigma``: (N1, N2); ``q1``: (N1,); ``q2``: (N2,). Zero-variance inputs give zero kernels.
  """
  norm = jnp.sqrt(q1[:, None] * q2[None, :])
  safe = jnp.where(norm > 0, norm, 1.0)
  c = jnp.clip(sigma / safe, -1.0, 1.0)
  t = jnp.arccos(c)
  e_phi = jnp.where(norm > 0, norm * (jnp.sin(t) + (jnp.pi - t) * c) / (2 * jnp.pi), 0.0)
  e_dphi = jnp.where(norm > 0, (jnp.pi - t) / (2 * jnp.pi), 0.0)
  return e_phi, e_dphi


def _kernels_jax(x1, x2, depth: int) -> InfiniteKernels:
  x1 = jnp.asarray(x1)
  x2 = jnp.asarray(x2)
  n0 = x1.shape[1]
  sigma = 2.0 * (x1 @ x2.T) / n0
  q1 = 2.0 * jnp.sum(x1 * x1, axis=1) / n0
  q2 = 2.0 * jnp.sum(x2 * x2, axis=1) / n0
  theta = sigma
  for layer in range(1, depth):
    w2 = 1.0 if layer == depth - 1 else 2.0
    e_phi, e_dphi = _arccos_step(sigma, q1, q2)
    # Diagonal variances: E[phi(u)^2] = q / 2 for a centered Gaussian u of variance q.
    q1, q2 = w2 * q1 / 2.0, w2 * q2 / 2.0
    sigma = w2 * e_phi
    theta = sigma + w2 * e_dphi * theta
  return InfiniteKernels(ntk=theta, nngp=sigma)


def stax_member(depth: int, width: int = 1024, num_outputs: int = 1):
  """The neural-tangents ``stax`` triple ``(init_fn, apply_fn, kernel_fn)`` of the member.

  Needs neural-tangents (imported here, lazily). ``width`` only matters for ``init_fn``.
  """
  depth = _validate.positive_int('depth', depth, minimum=2)
  width = _validate.positive_int('width', width)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  if ntk._nt_module() is None:  # pylint: disable=protected-access  (same probe as ce_jax.theory.ntk)
    raise ValueError("backend 'nt' (neural_tangents.stax) needs neural-tangents, which cannot be "
                     "imported here (it needs jax < 0.6: pip install 'ce_jax[nt]'); use "
                     "backend='jax' or 'auto'")
  from neural_tangents import stax  # pylint: disable=g-import-not-at-top
  layers = []
  for _ in range(depth - 1):
    layers += [stax.Dense(width, W_std=math.sqrt(2.0), parameterization='ntk'), stax.Relu()]
  layers += [stax.Dense(num_outputs, W_std=1.0, parameterization='ntk')]
  return stax.serial(*layers)


def _kernels_nt(x1, x2, depth: int) -> InfiniteKernels:
  _, _, kernel_fn = stax_member(depth)
  k = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), ('ntk', 'nngp'))
  return InfiniteKernels(ntk=k.ntk, nngp=k.nngp)


def _resolve_backend(backend: str) -> str:
  """``'auto'`` -> ``'jax'`` (the recursion, on any JAX); ``'nt'`` only when asked for."""
  _validate.choice('backend', backend, BACKENDS)
  return 'jax' if backend == 'auto' else backend


def infinite_kernels(x1, x2=None, *, depth: int, backend: str = 'auto') -> InfiniteKernels:
  """Infinite-width NTK and NNGP of the depth-``depth`` dense member, one output.

  Args:
    x1: inputs ``(N1, n_0)``.
    x2: inputs ``(N2, n_0)``; ``None`` means ``x1``.
    depth: number of weight matrices (>= 2).
    backend: ``'auto'`` (= ``'jax'``), ``'jax'`` (pure JAX) or ``'nt'`` (neural-tangents
      ``stax``, needs the ``nt`` extra).

  Returns:
    ``InfiniteKernels(ntk, nngp)``, each ``(N1, N2)``, dimensionless (f is O(1)).
  """
  depth = _validate.positive_int('depth', depth, minimum=2)
  x1, x2 = _validate.input_pair(x1, x2)
  backend = _resolve_backend(backend)
  if backend == 'nt':
    return _kernels_nt(x1, x2, depth)
  return _kernels_jax(x1, x2, depth)


def infinite_ntk(x1, x2=None, depth: int = 4, backend: str = 'auto') -> jnp.ndarray:
  """Infinite-width NTK ``(N1, N2)`` of the dense member (see :func:`infinite_kernels`)."""
  return infinite_kernels(x1, x2, depth=depth, backend=backend).ntk


def infinite_nngp(x1, x2=None, depth: int = 4, backend: str = 'auto') -> jnp.ndarray:
  """Infinite-width NNGP kernel ``(N1, N2)`` of the dense member's output."""
  return infinite_kernels(x1, x2, depth=depth, backend=backend).nngp
