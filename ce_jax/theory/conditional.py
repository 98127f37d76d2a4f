"""Exact-in-law samplers of one diagonal NTK entry by Gaussian conditioning (Algorithm 1, fast).

Algorithm 1 needs the law of ONE diagonal entry ``K(x, x) = |d y(x) / d theta|^2`` over random
initializations, at one input per trial. Sampling every weight makes a trial cost
``O(sum n_l n_{l-1})`` normals and matrix-vector products, while the entry only touches each
weight matrix ``W`` (i.i.d. N(0, 1), ``d_in x d_out``) through two vectors: the forward product
``W^T a`` with the layer's input ``a`` and the backward product ``W delta`` with the gradient
``delta = dy/dh`` of its output. With ``q = a / |a|`` and ``P = I - q q^T``::

    W = q (q^T W) + P W,     q^T W ~ N(0, I_{d_out}),   P W independent of q^T W,

so, given the layers below (which fix ``a``): the forward product is ``h = c |a| z`` with
``z ~ N(0, I_{d_out})``, and, given everything that fixes ``delta`` (``z`` and the layers
above, all independent of ``P W``)::

    dy/da = c W delta = c (q (z . delta) + |delta| P u),   u ~ N(0, I_{d_in}),
    |dy/dW|^2 = c^2 |a|^2 |delta|^2.

Drawing ``z`` layer by layer going up and ``u`` going down reproduces the joint law of every
quantity the entry depends on, so the sampled ``K`` has EXACTLY the law of the full-weight
computation, at ``O(sum n_l)`` normals per trial (about 20 n for the bottleneck path instead of
``9 n^2 + 512 n``). A layer applied to ``r`` fixed data rows ``X`` (the bottleneck's first 1x1
convolution sees the 9 pixels of its window) samples ``X W`` as ``B Z`` with ``B B^T = X X^T``
and ``Z`` an ``r x d_out`` standard normal, and ``|dy/dW|^2 = c^2 |B^T Delta|_F^2``.

The samplers here are for the library's NTK-parameterized modules (N(0, 1) weights, ReLU),
at ONE input; :func:`sampler_for` picks one for a module when it applies
(:func:`ce_jax.theory.alpha.member_sampler` and :func:`ce_jax.theory.alpha.estimate_alpha` use it by
default). The draws differ from the full-weight samplers', the law does not (tested against
them in ``tests/theory/test_conditional.py``).

**Several widths in one program.** A sampler takes a LIST of widths and returns
``key -> (len(widths),)``, the entry of each width from the same trial key, in one small
program (compilation, not sampling, was then most of the fit's time): the widths' channels
are laid side by side on one axis and every per-width sum is a segment sum, so a trial costs
the sum of the widths, not their number times the largest. Channel ``j`` of layer ``l`` of
width ``n`` draws its normals from ``fold_in(fold_in(fold_in(key, n), l), j)``: an entry
depends on its trial key and its width only, not on which other widths share the program, the
chunk size or the device count.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.models import bottleneck as bottleneck_lib
from ce_jax.models import dense as dense_lib

SampleFn = Callable[[jax.Array], jax.Array]


def _norm(v, axis=-1):
  return jnp.sqrt(jnp.sum(v * v, axis=axis))


def _one_input(x, ndim: int, dtype):
  """The one input as a concrete array of ``dtype`` (the samplers precompute from it)."""
  x = _validate.finite_array('x', x, ndim=ndim)
  if np.shape(x)[0] != 1:
    raise ValueError(f'x: the conditional sampler takes ONE input per trial, got '
                     f'{np.shape(x)[0]} inputs (shape {np.shape(x)}); use the full-weight '
                     f'sampler for several')
  return jnp.asarray(x, dtype)


class _Layout(NamedTuple):
  """Channels of several widths side by side: ``segment`` and ``entry`` ids per channel."""
  segment: np.ndarray     # (T,) segment (entry, group) of each channel, sorted
  entry: np.ndarray       # (T,) entry (width) of each channel
  index: np.ndarray       # (T,) channel index within its entry's layer
  num_segments: int


def _layout(sizes, groups: int = 1) -> _Layout:
  """``sizes[e]`` channels per group, ``groups`` groups, for each entry ``e``."""
  seg, ent, idx = [], [], []
  for e, n in enumerate(sizes):
    seg.append(np.repeat(e * groups + np.arange(groups), n))
    ent.append(np.full(groups * n, e))
    idx.append(np.arange(groups * n))
  return _Layout(np.concatenate(seg), np.concatenate(ent), np.concatenate(idx),
                 len(sizes) * groups)


def _segment_sum(v, ids, num):
  return jax.ops.segment_sum(v, jnp.asarray(ids), num, indices_are_sorted=True)


def _channel_normals(key, tags, layer: int, layout: _Layout, count: int, dtype):
  """``(T, count)`` normals, channel ``j`` of entry ``e``: ``fold_in(fold_in(fold_in(key,
  tags[e]), layer), j)``, so a channel's draws depend on its entry's tag and position only."""
  tags = jnp.asarray(np.asarray(tags)[layout.entry], jnp.uint32)
  index = jnp.asarray(layout.index, jnp.uint32)

  def one(tag, j):
    k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, tag), layer), j)
    return jax.random.normal(k, (count,), dtype)
  return jax.vmap(one)(tags, index)


def dense_diagonal_sampler(members: Sequence[Sequence[int]], x, *, dtype=jnp.float32
                           ) -> SampleFn:
  """``key -> (M,)``: ``K(x, x)`` of each of ``M`` dense members (one output), in law.

  Args:
    members: the hidden widths ``(n_1, ..., n_L)`` of each
      :class:`~ce_jax.models.dense.DenseMember` (all of the same depth; ``[(16, 16)]`` for one
      member).
    x: ``(1, n_0)``, the one input.
    dtype: computation dtype.

  Layer ``l`` is ``h_l = c_l W_l a_l`` with ``c_l`` from
  :func:`ce_jax.models.dense.layer_scales`, ReLU between layers, scalar readout. Per trial and
  member: ``2 sum_l n_l`` normals and no matrix product. Member ``e`` draws with tag ``n_1``
  (its first width): members with the same ``n_1`` share the first layers' draws.
  """
  members = [tuple(_validate.int_list(f'members[{i}]', w)) for i, w in enumerate(members)]
  if not members or len({len(w) for w in members}) != 1:
    raise ValueError(f'members must be a non-empty list of hidden-width tuples of one depth, '
                     f'got {members!r}')
  x = _one_input(x, 2, dtype)
  num, num_hidden = len(members), len(members[0])
  dims = np.asarray([(x.shape[1],) + w for w in members], np.float64)    # (M, L + 1)
  # scales[l] (M,): sqrt(2 / dim(a_l)) for the hidden layers, sqrt(1 / n_L) for the readout.
  scales = [jnp.asarray(np.sqrt(2.0 / dims[:, l]), dtype) for l in range(num_hidden)]
  scales.append(jnp.asarray(np.sqrt(1.0 / dims[:, -1]), dtype))
  layouts = [_layout([w[l] for w in members]) for l in range(num_hidden)]
  tags = [w[0] for w in members]
  x_norm = jnp.full((num,), float(np.linalg.norm(np.asarray(x[0], np.float64))), dtype)

  def sample_fn(key):
    # Channel j of layer l draws (z_l[j], v[j]): v is u of layer l + 1's input, or, for the
    # last hidden layer, the readout's weight on it.
    draws = [_channel_normals(key, tags, l, layouts[l], 2, dtype) for l in range(num_hidden)]
    norms, hs, acts = [x_norm], [], []
    for l in range(num_hidden):                       # forward: h_l = c_l |a_l| z_l
      e = layouts[l].entry
      hs.append((scales[l] * norms[-1])[e] * draws[l][:, 0])
      acts.append(jax.nn.relu(hs[-1]))
      norms.append(jnp.sqrt(_segment_sum(acts[-1] ** 2, e, num)))
    last = layouts[-1].entry
    k = scales[-1] ** 2 * norms[-1] ** 2                               # the readout's weights
    delta = scales[-1][last] * draws[-1][:, 1] * (hs[-1] > 0)         # dy/dh_{L-1}
    for l in range(num_hidden - 1, -1, -1):
      e = layouts[l].entry
      dsq = _segment_sum(delta * delta, e, num)
      k = k + scales[l] ** 2 * norms[l] ** 2 * dsq
      if l:
        prev = layouts[l - 1].entry
        a, u = acts[l - 1], draws[l - 1][:, 1]
        q = a / jnp.where(norms[l] > 0, norms[l], 1)[prev]
        along = _segment_sum(draws[l][:, 0] * delta, e, num)
        qu = _segment_sum(q * u, prev, num)
        grad = scales[l][prev] * (q * along[prev] + jnp.sqrt(dsq)[prev] * (u - q * qu[prev]))
        delta = grad * (hs[l - 1] > 0)
    return k

  return sample_fn


def center_window(x) -> np.ndarray:
  """``(1, H, W, C)`` -> ``(9, C)``: the 3x3 window (zero-padded) that the centre output sees.

  Rows in kernel order ``(dy, dx)``, row-major; the centre is ``(H // 2, W // 2)`` as in the
  centre readout. numpy (the input is fixed data: no compilation).
  """
  x = np.asarray(x)
  _, h, w, _ = x.shape
  padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
  cy, cx = h // 2, w // 2
  return padded[cy:cy + 3, cx:cx + 3].reshape(9, x.shape[-1])


def bottleneck_diagonal_sampler(widths: Sequence[int], x, *, cardinality: int = 1,
                                dtype=jnp.float32) -> SampleFn:
  """``key -> (len(widths),)``: ``K(x, x)`` of :class:`~ce_jax.models.bottleneck.NTKBottleneck`.

  The entry of output channel 0 at the centre pixel (``readout='center'``) of the block
  ``in -> D -> D -> out`` with ``D = cardinality * n`` and the grouped 3x3 convolution, for
  each width ``n`` in ``widths`` (an int is one width); ``x``: ``(1, H, W, in)``. Per trial and
  width: ``(r + 11) D`` normals (``r = min(9, in)``), one ``9 x r`` by ``r x D`` product and no
  convolution. ``out`` does not enter (only channel 0's column of the last kernel has a
  gradient).
  """
  if isinstance(widths, (int, np.integer)):
    widths = [widths]
  widths = [_validate.positive_int(f'widths[{i}]', n) for i, n in enumerate(widths)]
  if not widths:
    raise ValueError('widths must be a non-empty list of widths, got []')
  m = _validate.positive_int('cardinality', cardinality)
  x = _one_input(x, 4, dtype)
  c_in, num = x.shape[-1], len(widths)
  window = center_window(x).astype(np.float64)              # (9, C)
  u_svd, s_svd, _ = np.linalg.svd(window, full_matrices=False)
  factor = jnp.asarray(u_svd * s_svd, dtype)                 # (9, r): factor factor^T = X X^T
  r = factor.shape[1]
  lay = _layout(widths, m)        # segments: (width, group); channel order = kernel order
  n_arr = np.asarray(widths, np.float64)
  c1 = math.sqrt(2.0 / c_in)
  c2 = jnp.asarray(np.sqrt(2.0 / (9 * n_arr)), dtype)       # (W,)
  c3 = jnp.asarray(np.sqrt(2.0 / (m * n_arr)), dtype)
  c2_ch, c3_ch = c2[lay.entry], c3[lay.entry]               # (T,)
  seg, ent, num_seg = lay.segment, lay.entry, lay.num_segments

  def sample_fn(key):
    # Channel j draws r normals for conv1's kernel seen through the window, 1 for conv2's
    # forward product, 1 for conv3's column 0, 9 for conv2's backward product.
    draws = _channel_normals(key, widths, 0, lay, r + 11, dtype)     # (T, r + 11)
    z1, z2, w3, u = draws[:, :r].T, draws[:, r], draws[:, r + 1], draws[:, r + 2:].T
    h1 = c1 * (factor @ z1)                                           # (9, T): conv1, 9 pixels
    a1 = jax.nn.relu(h1)
    norm1 = jnp.sqrt(_segment_sum(jnp.sum(a1 * a1, axis=0), seg, num_seg))   # (W m,)
    h2 = c2_ch * norm1[seg] * z2                                      # conv2 at the centre
    a2 = jax.nn.relu(h2)
    k = c3 ** 2 * _segment_sum(a2 * a2, ent, num)                     # conv3's column 0
    delta2 = c3_ch * w3 * (h2 > 0)
    dsq = _segment_sum(delta2 * delta2, seg, num_seg)
    k = k + c2 ** 2 * jnp.sum((norm1 ** 2 * dsq).reshape(num, m), axis=1)
    q = a1 / jnp.where(norm1 > 0, norm1, 1)[seg]
    along = _segment_sum(z2 * delta2, seg, num_seg)
    qu = _segment_sum(jnp.sum(q * u, axis=0), seg, num_seg)
    grad1 = c2_ch * (q * along[seg] + jnp.sqrt(dsq)[seg] * (u - q * qu[seg]))
    delta1 = grad1 * (h1 > 0)                                         # (9, T)
    return k + c1 ** 2 * _segment_sum(jnp.sum(jnp.square(factor.T @ delta1), axis=0), ent, num)

  return sample_fn


def _eligible(module, x, dtype) -> Optional[str]:
  if jnp.dtype(getattr(module, 'param_dtype', None) or jnp.float32) != dtype:
    return None
  if type(module) is dense_lib.DenseMember and module.num_outputs == 1 and np.ndim(x) == 2:
    return 'dense'
  if (type(module) is bottleneck_lib.NTKBottleneck and np.ndim(x) == 4
      and np.shape(x)[-1] == module.in_channels):
    return 'bottleneck'
  return None


def sampler_for(modules, x, *, readout='center', apply_kwargs=()) -> Optional[SampleFn]:
  """The conditional sampler of the modules' entries at ``x``, ``key -> (len(modules),)``.

  ``modules``: one module or a list (widths of one member; a single module gives ``(1,)``).
  None where no conditional sampler applies. It applies to the library's NTK-parameterized
  members exactly (not subclasses), all of one kind: :class:`~ce_jax.models.dense.DenseMember`
  with one output (one depth), or :class:`~ce_jax.models.bottleneck.NTKBottleneck` (one
  cardinality and input width) read at channel 0 of the centre pixel (``readout='center'``
  of the member, or the module's own); one input; ``x``'s dtype equal to the parameters'; no
  apply keyword arguments.
  """
  modules = list(modules) if isinstance(modules, (list, tuple)) else [modules]
  if (not modules or apply_kwargs or readout != 'center' or np.ndim(x) < 2
      or np.shape(x)[0] != 1):
    return None
  dtype = jnp.asarray(x).dtype
  kinds = {_eligible(mod, x, dtype) for mod in modules}
  if kinds == {'dense'} and len({mod.depth for mod in modules}) == 1:
    return dense_diagonal_sampler([mod.widths for mod in modules], x, dtype=dtype)
  if (kinds == {'bottleneck'} and len({(mod.cardinality, mod.in_channels)
                                        for mod in modules}) == 1):
    return bottleneck_diagonal_sampler([mod.width for mod in modules], x,
                                       cardinality=modules[0].cardinality, dtype=dtype)
  return None
