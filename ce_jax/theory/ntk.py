"""Empirical neural tangent kernels: one API, three backends.

The empirical NTK of ``f(params, x)`` at ``params`` is::

    K(x, x') = (1/k) sum_c < d f_c(x) / d params , d f_c(x') / d params >

traced over the ``k`` outputs and, as in neural-tangents, normalized by ``k`` (so that it is
comparable with the per-output infinite-width kernel; for a scalar output nothing changes).
``trace_axes=()`` keeps the output axes: ``K[a, b, c, c']``, not normalized.

Backends (``backend=``):

* ``'nt'``: neural-tangents' ``nt.empirical_ntk_fn`` (implementations ``jacobian_contraction``
  and ``ntk_vector_products``), only when asked for. Imported lazily: this module imports
  without neural-tangents, which needs jax < 0.6 (``pip install 'ce_jax[nt]'``, or the reference
  stack ``requirements/nt.txt``); the tests compare it with the other backends there.
* ``'jax'``: the same two implementations with the public JAX API only (``jax.jacrev``,
  ``jax.vjp``, ``jax.jvp``, ``jax.vmap``); runs on the newest JAX.
* ``'structured'``: closed form for :class:`ce_jax.models.dense.DenseMember` and
  :class:`~ce_jax.models.dense.DenseEnsemble` (pass ``model.apply``). With activations
  ``A_l`` (inputs of weight matrix ``l``), backpropagated pre-activation gradients ``D_l`` and the
  NTK scale ``c_l`` of each layer::

      K = sum_l c_l^2 (A_l A_l^T) * (D_l D_l^T)       (* elementwise; D_l D_l^T traced over k)

  from one forward and one backward pass, never forming a Jacobian (the readout's D is the
  identity). The diagonal is ``sum_l c_l^2 |a_l|^2 |D_l|^2``.
* ``'auto'`` (default): ``'structured'`` where it applies (a dense model's bound ``apply`` with
  ``trace_axes`` ``(-1,)`` or ``()``), else ``'jax'``. Never ``'nt'``: the default needs no
  neural-tangents, and gives the same numbers on every stack.

``apply_fn(params, x)`` maps a batch ``x`` (batch on axis 0, or on ``vmap_axes``' input axis) to
outputs with the batch on axis 0 (or ``vmap_axes``' output axis). ``vmap_axes`` declares that
``f`` acts on each example independently (no batch statistics); it makes the Jacobian
``O(N)`` instead of ``O(N^2)`` and is what makes the ``'jax'`` and ``'nt'`` paths fast: pass it.

Functions return jitted callables; inputs are validated outside ``jit`` (finite, matching
shapes) with one-line ``ValueError``\\ s, and so are the parameters: with ``'structured'``
(what ``'auto'`` picks for a dense model's ``apply``) every kernel is checked against the
model's fields (``widths``, ``num_outputs``, ``m`` and the input dimension of ``x``); with
``'jax'``/``'nt'`` the parameters must trace through ``apply_fn`` on one input
(``jax.eval_shape``, once per parameter shapes), a mismatch naming the leaf and its shapes.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.models import dense as _dense


__all__ = ['BACKENDS', 'IMPLEMENTATIONS', 'available_backends', 'empirical_ntk_fn',
           'ensemble_ntk_fn', 'ntk_diagonal_fn', 'ensemble_ntk_diagonal_fn',
           'structured_applies', 'resolve_backend', 'check_structured_params']

BACKENDS = ('auto', 'nt', 'jax', 'structured')
# neural-tangents' STRUCTURED_DERIVATIVES is not offered: it fails on jax 0.5.3 (it uses the
# removed jax.interpreters.ad.source_info_util).
IMPLEMENTATIONS = ('jacobian_contraction', 'ntk_vector_products')

ApplyFn = Callable[[Any, Any], Any]


# --------------------------------------------------------------------------------------------
# Backend selection.


@functools.lru_cache(maxsize=1)
def _nt_module():
  """neural_tangents, or None when it cannot be imported (not installed, or jax >= 0.6).

  Probed only when backend ``'nt'`` is asked for (or by :func:`available_backends`): importing
  neural-tangents also imports tensorflow, several seconds.
  """
  try:
    import neural_tangents as nt  # pylint: disable=import-outside-toplevel
    return nt
  except Exception:  # ImportError, or AttributeError from an incompatible jax  # noqa: BLE001
    return None


def available_backends() -> tuple[str, ...]:
  """Backends usable in this installation (``'structured'`` applies to dense models only)."""
  return (('nt',) if _nt_module() is not None else ()) + ('jax', 'structured')


def _dense_model(apply_fn) -> Any:
  """The DenseMember/DenseEnsemble whose bound ``apply`` is ``apply_fn``, else None."""
  model = getattr(apply_fn, '__self__', None)
  if isinstance(model, (_dense.DenseMember, _dense.DenseEnsemble)) and getattr(
      apply_fn, '__name__', '') == 'apply':
    return model
  return None


def structured_applies(apply_fn) -> bool:
  """Whether the ``'structured'`` backend can compute the NTK of ``apply_fn``."""
  return _dense_model(apply_fn) is not None


def _norm_trace_axes(trace_axes) -> tuple[int, ...]:
  if isinstance(trace_axes, (int, np.integer)):
    trace_axes = (int(trace_axes),)
  return tuple(int(a) for a in trace_axes)


def resolve_backend(apply_fn, backend: str = 'auto', trace_axes=(-1,)) -> str:
  """The concrete backend ``'auto'`` (or an explicit choice) resolves to for ``apply_fn``.

  ``'auto'``: ``'structured'`` for a dense model's bound ``apply`` (``trace_axes`` ``(-1,)`` or
  ``()``), else ``'jax'``; ``'nt'`` only when asked for (and importable).
  """
  backend = _validate.choice('backend', backend, BACKENDS)
  trace_axes = _norm_trace_axes(trace_axes)
  if backend == 'auto':
    if structured_applies(apply_fn) and trace_axes in ((-1,), ()):
      return 'structured'
    return 'jax'
  if backend == 'nt' and _nt_module() is None:
    raise ValueError("backend 'nt' needs neural-tangents, which cannot be imported here (it "
                     "needs jax < 0.6: pip install 'ce_jax[nt]'); use backend='jax' or 'auto'")
  if backend == 'structured' and not structured_applies(apply_fn):
    raise ValueError("backend 'structured' applies only to DenseMember/DenseEnsemble: pass "
                     f"model.apply of one, got {apply_fn!r}")
  return backend


def _norm_implementation(implementation, backend: str) -> str:
  name = getattr(implementation, 'name', implementation)  # accepts nt.NtkImplementation
  if isinstance(name, str):
    name = name.lower()
  # (ignored by 'structured': the closed form has a single implementation)
  return _validate.choice('implementation', name, IMPLEMENTATIONS)


def _norm_vmap_axes(vmap_axes) -> tuple[int, int] | None:
  """``None`` or ``(in_axis, out_axis)`` for the jax backend (nt's forms are accepted)."""
  if vmap_axes is None:
    return None
  if isinstance(vmap_axes, (int, np.integer)):
    return int(vmap_axes), int(vmap_axes)
  if isinstance(vmap_axes, (tuple, list)) and len(vmap_axes) in (2, 3) and all(
      isinstance(a, (int, np.integer)) for a in vmap_axes[:2]):
    if len(vmap_axes) == 3 and vmap_axes[2]:
      raise ValueError(f'vmap_axes for keyword arguments are not supported, got {vmap_axes!r}')
    return int(vmap_axes[0]), int(vmap_axes[1])
  raise ValueError('vmap_axes must be None, an int or (in_axis, out_axis[, {}]) of ints, '
                   f'got {vmap_axes!r}')


def _vaxes_or_none(vmap_axes):
  try:
    return _norm_vmap_axes(vmap_axes)
  except ValueError:  # a pytree of axes only neural-tangents understands
    return None


def _check_inputs(x1, x2, batch_axis: int = 0):
  _validate.finite_array('x1', x1)
  if np.ndim(x1) < 1:
    raise ValueError(f'x1 must have a batch axis, got shape {np.shape(x1)}')
  if x2 is not None:
    _validate.finite_array('x2', x2)
    s1, s2 = list(np.shape(x1)), list(np.shape(x2))
    if len(s1) != len(s2):
      raise ValueError(f'x1 and x2 must have the same number of dimensions, got shapes '
                       f'{tuple(s1)} and {tuple(s2)}')
    del s1[batch_axis], s2[batch_axis]
    if s1 != s2:
      raise ValueError(f'x1 and x2 must match except along the batch axis {batch_axis}, got '
                       f'shapes {np.shape(x1)} and {np.shape(x2)}')


# --------------------------------------------------------------------------------------------
# Parameters that do not match the model: one line instead of a deep traceback (or, for the
# closed form, which reads the kernels only, instead of a kernel of another model).


def _model_label(model) -> str:
  m = f'm={model.m}, ' if isinstance(model, _dense.DenseEnsemble) else ''
  return (f'{type(model).__name__}({m}widths={tuple(model.widths)}, '
          f'num_outputs={model.num_outputs})')


def _has_keys(tree) -> bool:
  return hasattr(tree, 'keys') and hasattr(tree, '__getitem__')


def check_structured_params(model, params, input_dim: int, stacked: bool = False) -> None:
  """Raises a one-line ``ValueError`` unless ``params`` are parameters of ``model`` (a
  DenseMember/DenseEnsemble) on inputs of dimension ``input_dim``.

  ``stacked``: every leaf carries a leading axis (members or initializations), stripped before
  the comparison. Checks the layer names and every kernel's shape.
  """
  label = _model_label(model)
  ensemble = isinstance(model, _dense.DenseEnsemble)
  wrapped = _has_keys(params) and 'params' in params
  p = params['params'] if wrapped else params
  prefix = "params['params']" if wrapped else 'params'
  depth = model.depth
  names = [f'layer_{i}' for i in range(depth)]
  if not _has_keys(p):
    raise ValueError(f'params must be the parameters of {label} ({{"params": {{"layer_0": '
                     f'...}}}}), got {type(params).__name__}')
  missing = [n for n in names if n not in p]
  extra = sorted(str(k) for k in p if k not in names)
  if missing or extra:
    parts = ([f'no {", ".join(missing)}'] if missing else []) + (
        [f'unexpected {", ".join(extra)}'] if extra else [])
    raise ValueError(f'{prefix} do not match {label} (layers {names[0]}..{names[-1]}): '
                     f'{"; ".join(parts)}')
  dims = (int(input_dim),) + tuple(int(w) for w in model.widths) + (int(model.num_outputs),)
  for i, name in enumerate(names):
    layer = p[name]
    if not _has_keys(layer) or 'kernel' not in layer:
      raise ValueError(f"{prefix}['{name}'] must hold a 'kernel' ({label}), got "
                       f'{sorted(layer) if _has_keys(layer) else type(layer).__name__}')
    others = sorted(str(k) for k in layer if k != 'kernel')
    if others:
      raise ValueError(f"{prefix}['{name}'] has {', '.join(others)} besides 'kernel': not a "
                       f'{label} (no biases)')
    shape = tuple(int(d) for d in np.shape(layer['kernel']))
    want = ((model.m,) if ensemble else ()) + (dims[i], dims[i + 1])
    have = shape[1:] if stacked else shape
    if stacked and not shape:
      raise ValueError(f"{prefix}['{name}']['kernel'] has shape (): stacked parameters need a "
                       f'leading axis')
    if have != want:
      what = f'{shape} (per member {have})' if stacked else f'{shape}'
      per = ' per member' if stacked else ''
      raise ValueError(f"{prefix}['{name}']['kernel'] has shape {what}, but {label} on "
                       f'inputs of dimension {input_dim} expects {want}{per}')


def _flax_module(apply_fn):
  """The Flax module whose bound ``apply`` is ``apply_fn``, else None."""
  module = getattr(apply_fn, '__self__', None)
  if isinstance(module, nn.Module) and getattr(apply_fn, '__name__', '') == 'apply':
    return module
  return None


def _leaf_summary(params, limit: int = 6) -> str:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  items = [f'{jax.tree_util.keystr(path)}: {tuple(np.shape(leaf))}' for path, leaf in
           flat[:limit]]
  more = f', ... ({len(flat)} leaves)' if len(flat) > limit else ''
  return '{' + ', '.join(items) + more + '}'


def _trace_error(e: BaseException, params, x_shape, apply_fn) -> str:
  text = str(e)
  first = (text.strip().splitlines() or [''])[0]
  name = type(e).__name__
  m = re.search(r'expected to generate shape (\([^)]*\)) but got shape (\([^)]*\)) instead '
                r'for parameter "([^"]+)" in "([^"]*)"', text)
  who = 'the model' if _flax_module(apply_fn) is None else _module_label(apply_fn)
  if m:
    given, want, leaf, scope = m.groups()
    path = '/'.join(p for p in scope.split('/') if p) + ('/' if scope.strip('/') else '') + leaf
    return f"params: the parameter '{path}' has shape {given}, but {who} expects {want}"
  m = re.search(r'Could not find parameter named "([^"]+)" in scope "([^"]*)"', text)
  if m:
    leaf, scope = m.groups()
    path = '/'.join(p for p in scope.split('/') if p) + ('/' if scope.strip('/') else '') + leaf
    return f"params: no parameter '{path}', which {who} needs (params {_leaf_summary(params)})"
  first = re.sub(r'\s*\(https?://\S+\)', '', first)
  return (f'params do not fit apply_fn on inputs of shape {tuple(x_shape)}: {name}: {first} '
          f'(params {_leaf_summary(params)})')


def _module_label(apply_fn) -> str:
  module = _flax_module(apply_fn)
  if isinstance(module, (_dense.DenseMember, _dense.DenseEnsemble)):
    return _model_label(module)
  return type(module).__name__ if module is not None else 'apply_fn'


def _struct(leaf, strip: bool):
  shape = tuple(np.shape(leaf))
  dtype = getattr(leaf, 'dtype', None)
  if dtype is None:
    dtype = jnp.result_type(leaf)
  return jax.ShapeDtypeStruct(shape[1:] if strip else shape, dtype)


def _param_checker(apply_fn, backend: str, stacked: bool, in_ax: int, per_example: bool):
  """``check(params, x)``: raises a one-line ``ValueError`` when ``params`` do not match
  ``apply_fn`` (see the module docstring); each parameter signature is traced once."""
  if backend == 'structured':
    model = _dense_model(apply_fn)

    def check_structured(params, x):
      if np.ndim(x) != 2:
        raise ValueError(f'x (the inputs of {_model_label(model)}) must be (N, d), got shape '
                         f'{tuple(np.shape(x))}')
      check_structured_params(model, params, int(np.shape(x)[-1]), stacked=stacked)

    return check_structured
  seen = set()

  def check_traces(params, x):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if stacked:
      if not leaves:
        raise ValueError('stacked params must contain at least one array, got an empty tree')
      bad = [tuple(np.shape(l)) for l in leaves if not np.ndim(l)]
      if bad:
        raise ValueError(f'stacked params need a leading axis on every leaf, got a leaf of '
                         f'shape () (params {_leaf_summary(params)})')
    x_shape = list(np.shape(x))
    if per_example:
      x_shape[in_ax] = 1
    x_dtype = getattr(x, 'dtype', None) or jnp.result_type(x)
    sig = (treedef, tuple((tuple(np.shape(l)), str(getattr(l, 'dtype', type(l))))
                          for l in leaves), tuple(x_shape), str(x_dtype))
    if sig in seen:
      return
    structs = [_struct(l, stacked) for l in leaves]
    p_struct = jax.tree_util.tree_unflatten(treedef, structs)
    try:
      jax.eval_shape(apply_fn, p_struct, jax.ShapeDtypeStruct(tuple(x_shape), x_dtype))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(_trace_error(e, jax.tree_util.tree_unflatten(treedef, structs),
                                    x_shape, apply_fn)) from None
    if len(seen) < 64:
      seen.add(sig)

  return check_traces


# --------------------------------------------------------------------------------------------
# Pure-JAX kernels.


def _flat_out(y, out_axis: int = 0):
  """Outputs with the batch axis first and all other axes flattened: ``(N, k)``."""
  y = jnp.moveaxis(jnp.asarray(y), out_axis, 0)
  return y.reshape(y.shape[0], -1)


def _jacobian(apply_fn, params, x, vaxes):
  """Leaves ``(N, k, *param_shape)``: d f_c(x_n) / d params."""
  if vaxes is None:
    return jax.jacrev(lambda p: _flat_out(apply_fn(p, x)))(params)
  in_ax, out_ax = vaxes

  def single(p, xi):
    y = apply_fn(p, jnp.expand_dims(xi, in_ax))
    return _flat_out(y, out_ax)[0]  # (k,)

  return jax.vmap(jax.jacrev(single), in_axes=(None, in_ax))(params, x)


def _contract(j1, j2, trace: bool):
  """Sum over parameter leaves of J1 J2^T; traced ``(N1, N2)`` or ``(N1, N2, k, k)``."""
  total = None
  for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)):
    n1, k = a.shape[:2]
    n2 = b.shape[0]
    if trace:
      term = (a.reshape(n1, -1) @ b.reshape(n2, -1).T) / k
    else:
      term = jnp.einsum('akp,blp->abkl', a.reshape(n1, k, -1), b.reshape(n2, k, -1))
    total = term if total is None else total + term
  return total


def _jax_ntk_core(apply_fn, implementation: str, vaxes, trace: bool):
  """``(x1, x2, params) -> K`` with the public JAX API (``x2`` may be None)."""

  def jacobian_contraction(x1, x2, params):
    j1 = _jacobian(apply_fn, params, x1, vaxes)
    j2 = j1 if x2 is None else _jacobian(apply_fn, params, x2, vaxes)
    return _contract(j1, j2, trace)

  def ntk_vector_products(x1, x2, params):
    x2 = x1 if x2 is None else x2
    out_ax = 0 if vaxes is None else vaxes[1]
    f1 = lambda p: _flat_out(apply_fn(p, x1), out_ax)
    f2 = lambda p: _flat_out(apply_fn(p, x2), out_ax)
    y2, vjp2 = jax.vjp(f2, params)
    n2, k = y2.shape
    basis = jnp.eye(n2 * k, dtype=y2.dtype).reshape(n2 * k, n2, k)

    def column(ct):
      (tangent,) = vjp2(ct)
      return jax.jvp(f1, (params,), (tangent,))[1]  # (N1, k) = J1 J2^T ct

    cols = jax.vmap(column)(basis)  # (N2 * k, N1, k)
    n1 = cols.shape[1]
    cols = cols.reshape(n2, k, n1, k)
    if trace:
      return jnp.einsum('bcac->ab', cols) / k
    return jnp.transpose(cols, (2, 0, 3, 1))

  return {'jacobian_contraction': jacobian_contraction,
          'ntk_vector_products': ntk_vector_products}[implementation]


# --------------------------------------------------------------------------------------------
# Structured kernel for the dense models.


def _kernels(params, depth: int):
  p = params['params'] if isinstance(params, dict) and 'params' in params else params
  try:
    return [p[f'layer_{i}']['kernel'] for i in range(depth)]
  except (KeyError, TypeError):
    raise ValueError(f'params must be DenseMember/DenseEnsemble parameters with layer_0..'
                     f'layer_{depth - 1}, got keys {list(p) if isinstance(p, dict) else p!r}'
                     ) from None


def _member_factors(kernels, x):
  """Activations ``A_l`` (N, n_l), pre-activation gradients ``G_l`` (N, k, n_{l+1}), scales.

  ``G_l[:, c]`` is d f_c / d z_l with ``z_l = c_l A_l W_l`` the output of weight matrix ``l``
  (None for the readout, whose gradient is the identity).
  """
  widths = [int(w.shape[-1]) for w in kernels[:-1]]
  scales = _dense.layer_scales(x.shape[-1], widths)
  dtype = jnp.result_type(x, *kernels)
  x = jnp.asarray(x, dtype)
  kernels = [jnp.asarray(w, dtype) for w in kernels]
  acts, masks = [x], []
  for w, c in zip(kernels[:-1], scales[:-1]):
    z = c * (acts[-1] @ w)
    masks.append(z > 0)
    acts.append(jnp.maximum(z, 0))
  k = kernels[-1].shape[-1]
  grads = [None] * len(kernels)
  # d f / d z_{L-1} = c_L W_L^T (k, n_L), masked by phi'(z_{L-1}).
  g = jnp.broadcast_to(scales[-1] * kernels[-1].T, (x.shape[0], k, kernels[-1].shape[0]))
  for l in range(len(kernels) - 2, -1, -1):
    g = g * masks[l][:, None, :]
    grads[l] = g
    if l > 0:
      g = scales[l] * jnp.einsum('bko,io->bki', g, kernels[l])
  return acts, grads, scales, k


def _member_structured(kernels, x1, x2, trace: bool):
  a1, g1, scales, k = _member_factors(kernels, x1)
  a2, g2, _, _ = (a1, g1, scales, k) if x2 is None else _member_factors(kernels, x2)
  total = None
  for l, c in enumerate(scales):
    aa = a1[l] @ a2[l].T  # (N1, N2)
    if g1[l] is None:  # readout: <e_c, e_c'> = delta_cc'
      eye = jnp.eye(k, dtype=aa.dtype)
      term = (c * c) * aa if trace else (c * c) * aa[:, :, None, None] * eye
    elif trace:
      n1, n2 = g1[l].shape[0], g2[l].shape[0]
      term = (c * c / k) * aa * (g1[l].reshape(n1, -1) @ g2[l].reshape(n2, -1).T)
    else:
      term = (c * c) * aa[:, :, None, None] * jnp.einsum('akn,bln->abkl', g1[l], g2[l])
    total = term if total is None else total + term
  return total


def _member_structured_diag(kernels, x, trace: bool):
  a, g, scales, k = _member_factors(kernels, x)
  total = None
  for l, c in enumerate(scales):
    aa = jnp.sum(a[l] * a[l], axis=-1)  # (N,)
    if g[l] is None:
      eye = jnp.eye(k, dtype=aa.dtype)
      term = (c * c) * aa if trace else (c * c) * aa[:, None, None] * eye
    elif trace:
      term = (c * c / k) * aa * jnp.sum(g[l] * g[l], axis=(1, 2))
    else:
      term = (c * c) * aa[:, None, None] * jnp.einsum('akn,aln->akl', g[l], g[l])
    total = term if total is None else total + term
  return total


def _structured_core(model, trace: bool, diagonal: bool = False):
  depth = model.depth
  ensemble = isinstance(model, _dense.DenseEnsemble)

  def member(kernels, x1, x2):
    if diagonal:
      return _member_structured_diag(kernels, x1, trace)
    return _member_structured(kernels, x1, x2, trace)

  def fn(x1, x2, params):
    kernels = _kernels(params, depth)
    if not ensemble:
      return member(kernels, x1, x2)
    # K_e = (1/m) sum_j K(theta_j): the 1/sqrt(m) output scale, squared.
    per = jax.vmap(member, in_axes=(0, None, None))(kernels, x1, x2)
    return jnp.mean(per, axis=0)

  return fn


# --------------------------------------------------------------------------------------------
# Public API.


def _ntk_core(apply_fn, backend, implementation, vmap_axes, trace_axes):
  """Un-jitted ``(x1, x2, params) -> K`` for a resolved backend, and the batch input axis."""
  trace_axes = _norm_trace_axes(trace_axes)
  backend = resolve_backend(apply_fn, backend, trace_axes)
  implementation = _norm_implementation(implementation, backend)
  if backend == 'nt':
    nt = _nt_module()
    impl = getattr(nt.NtkImplementation, implementation.upper())
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, vmap_axes=vmap_axes,
                             implementation=impl)
    try:
      vaxes = _norm_vmap_axes(vmap_axes)
    except ValueError:  # a pytree of axes that only neural-tangents understands
      vaxes = None
    return ((lambda x1, x2, params: fn(x1, x2, params)), (0 if vaxes is None else vaxes[0]),
            backend)
  vaxes = _norm_vmap_axes(vmap_axes)
  if trace_axes not in ((-1,), ()):
    raise ValueError(f"trace_axes must be (-1,) (trace over outputs) or () with backend "
                     f"'{backend}', got {trace_axes!r}")
  trace = trace_axes == (-1,)
  if backend == 'structured':
    return _structured_core(_dense_model(apply_fn), trace), 0, backend
  return (_jax_ntk_core(apply_fn, implementation, vaxes, trace),
          (0 if vaxes is None else vaxes[0]), backend)


def empirical_ntk_fn(apply_fn: ApplyFn, *, backend: str = 'auto',
                     implementation: Any = 'jacobian_contraction', vmap_axes: Any = None,
                     trace_axes: int | Sequence[int] = (-1,)):
  """Returns ``ntk_fn(x1, x2, params)``: the empirical NTK of ``apply_fn`` at ``params``.

  Args:
    apply_fn: ``f(params, x)``; a Flax module's ``model.apply`` works.
    backend: ``'auto'`` (``'structured'`` where it applies, else ``'jax'``), ``'nt'``,
      ``'jax'`` or ``'structured'`` (see the module docstring).
    implementation: ``'jacobian_contraction'`` or ``'ntk_vector_products'``; the matching
      ``nt.NtkImplementation`` members are accepted.
    vmap_axes: ``None``, an int, or ``(in_axis, out_axis)``: the batch axis of inputs and
      outputs when ``f`` acts on examples independently (pass 0 for the models of ce_jax).
    trace_axes: ``(-1,)`` traces over the outputs (normalized by k) -> ``(N1, N2)``; ``()``
      keeps them -> ``(N1, N2, k, k)``.

  Returns:
    ``ntk_fn(x1, x2=None, params)``; ``x2=None`` means ``x2 = x1``.
  """
  core, in_ax, resolved = _ntk_core(apply_fn, backend, implementation, vmap_axes, trace_axes)
  jitted = jax.jit(core)
  check = _param_checker(apply_fn, resolved, False, in_ax,
                         per_example=_vaxes_or_none(vmap_axes) is not None)

  def ntk_fn(x1, x2, params):
    _check_inputs(x1, x2, in_ax)
    check(params, x1)
    return jitted(x1, x2, params)

  return ntk_fn


def ensemble_ntk_fn(member_apply_fn: ApplyFn, *, backend: str = 'auto',
                    implementation: Any = 'jacobian_contraction', vmap_axes: Any = None,
                    trace_axes: int | Sequence[int] = (-1,),
                    member_batch_size: int | str | None = 'auto'):
  """Returns ``fn(x1, x2, stacked_params)``: the collegial-ensemble NTK (Eq. 4).

  ``K_e = (1/m) sum_j K(theta_j)``, computed with ``jax.vmap`` over the leading member axis of
  ``stacked_params`` (e.g. :func:`ce_jax.models.dense.stack_member_params`, or a
  ``DenseEnsemble``'s params directly). Equals the NTK of the aggregated model
  ``(1/sqrt(m)) sum_j f(x; theta_j)`` over the concatenated parameters.

  ``member_batch_size``: members vmapped at once (``jax.lax.map`` chunks); ``'auto'`` bounds
  the members' Jacobians held at once to about 2 MB (no chunking for ``'structured'``, which
  forms no Jacobian); ``None``: all members in one vmap.
  """
  core, in_ax, resolved = _ntk_core(member_apply_fn, backend, implementation, vmap_axes,
                                    trace_axes)
  if member_batch_size is not None and member_batch_size != 'auto':
    member_batch_size = _validate.positive_int('member_batch_size', member_batch_size)
  if member_batch_size == 'auto' and resolved == 'structured':
    member_batch_size = None

  @jax.jit
  def mean_ntk(x1, x2, stacked_params):
    m = _dense.num_members(stacked_params)
    size = member_batch_size
    if size == 'auto':
      n = np.shape(x1)[in_ax] + (0 if x2 is None else np.shape(x2)[in_ax])
      size = max(1, _AUTO_JACOBIAN_FLOATS // (n * _num_params(stacked_params, True)))
    if size is None or size >= m:
      per = jax.vmap(core, in_axes=(None, None, 0))(x1, x2, stacked_params)
    else:
      per = jax.lax.map(lambda p: core(x1, x2, p), stacked_params, batch_size=size)
    return jnp.mean(per, axis=0)

  check = _param_checker(member_apply_fn, resolved, True, in_ax,
                         per_example=_vaxes_or_none(vmap_axes) is not None)

  def fn(x1, x2, stacked_params):
    _check_inputs(x1, x2, in_ax)
    _dense.num_members(stacked_params)  # validates the leading member axis
    check(stacked_params, x1)
    return mean_ntk(x1, x2, stacked_params)

  return fn


def _diag_core(apply_fn, backend, vmap_axes, trace_axes):
  """Un-jitted ``(x, params) -> K(x_n, x_n)`` evaluating ``f`` on each example alone."""
  trace_axes = _norm_trace_axes(trace_axes)
  backend = resolve_backend(apply_fn, backend, trace_axes)
  if trace_axes not in ((-1,), ()):
    raise ValueError(f'trace_axes must be (-1,) or () for the diagonal, got {trace_axes!r}')
  trace = trace_axes == (-1,)
  if backend == 'structured':
    core = _structured_core(_dense_model(apply_fn), trace, diagonal=True)
    return (lambda x, params: core(x, None, params)), 0, backend
  vaxes = _norm_vmap_axes(0 if vmap_axes is None else vmap_axes)
  in_ax, out_ax = vaxes
  if backend == 'nt':
    nt = _nt_module()
    ntk = nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, vmap_axes=vmap_axes,
                              implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)

    def nt_diag(x, params):
      def one(xi):
        xi = jnp.expand_dims(xi, in_ax)
        return ntk(xi, None, params)[0, 0]
      return jax.vmap(one, in_axes=in_ax)(x)

    return nt_diag, in_ax, backend

  def single(p, xi):
    return _flat_out(apply_fn(p, jnp.expand_dims(xi, in_ax)), out_ax)[0]  # (k,)

  def jac_k(jac):
    return jax.tree_util.tree_leaves(jac)[0].shape[0]

  def one(params, xi):
    jac = jax.jacrev(single)(params, xi)  # leaves (k, *param_shape)
    if trace:
      return sum(jnp.sum(j * j) for j in jax.tree_util.tree_leaves(jac)) / jac_k(jac)
    return sum(jnp.einsum('kp,lp->kl', j.reshape(j.shape[0], -1), j.reshape(j.shape[0], -1))
               for j in jax.tree_util.tree_leaves(jac))

  def jax_diag(x, params):
    return jax.vmap(one, in_axes=(None, in_ax))(params, x)

  return jax_diag, in_ax, backend


# Per-example gradients (or members' Jacobians) materialized at once when a chunk size is
# 'auto': 2^19 floats (2 MB in float32) keeps the working set in cache. Measured on the 2-core
# CPU (docs/PERFORMANCE.md): 4-7x faster than materializing all of them for the diagonal at
# N = 256 of the m = 16 ensemble; 2-4x faster over stacked initializations (vmapping a
# convolution over its kernels becomes a grouped convolution, slow on XLA:CPU); for the
# ensemble NTK (one member's 64 x 6,176 Jacobian per chunk) 23.4 vs 30.7 ms of CPU time for the
# pure-JAX backend (vmap of all 16 members at once), 23.2 vs 26.7 ms with neural-tangents.
_AUTO_GRADIENT_FLOATS = 2 ** 19
_AUTO_JACOBIAN_FLOATS = 2 ** 19


def _num_params(params, stacked: bool) -> int:
  leaves = jax.tree_util.tree_leaves(params)
  total = sum(int(np.prod(np.shape(l))) for l in leaves)
  if stacked and leaves:
    total //= max(int(np.shape(leaves[0])[0]), 1)
  return max(total, 1)


def ntk_diagonal_fn(apply_fn: ApplyFn, *, backend: str = 'auto', vmap_axes: Any = 0,
                    trace_axes: int | Sequence[int] = (-1,), stacked: bool = False,
                    batch_size: int | str | None = 'auto'):
  """Returns ``fn(x, params)``: the diagonal ``K(x_n, x_n)``, shape ``(N,)``, without N x N.

  ``K(x, x) = (1/k) sum_c |d f_c(x) / d params|^2``: per-example squared gradient norms
  (``jax.vmap`` of ``jax.jacrev`` over examples; closed form ``sum_l c_l^2 |a_l|^2 |D_l|^2`` for
  the dense models with ``'structured'``). ``f`` is evaluated on each example alone (models
  without batch statistics).

  Args:
    apply_fn, backend, vmap_axes, trace_axes: as :func:`empirical_ntk_fn` (``trace_axes=()``
      gives ``(N, k, k)``).
    stacked: if True, ``params`` carries a leading axis of ``T`` initializations and the
      result is ``(T, N)``: the Monte-Carlo path (one vmapped computation for all trials).
    batch_size: per-example gradients computed at once (examples, or for ``stacked``
      initializations x examples), in ``jax.lax.map`` chunks; ``'auto'`` bounds them to about
      2 MB (no chunking for ``'structured'``, which forms no per-example gradients); ``None``:
      all at once.
  """
  core, in_ax, resolved = _diag_core(apply_fn, backend, vmap_axes, trace_axes)
  if batch_size is not None and batch_size != 'auto':
    batch_size = _validate.positive_int('batch_size', batch_size)
  if batch_size == 'auto' and resolved == 'structured':
    batch_size = None

  def chunk(params, n_per_item: int) -> int | None:
    """Items (examples or initializations) per chunk; None = no chunking."""
    if batch_size is None:
      return None
    if batch_size == 'auto':
      return max(1, _AUTO_GRADIENT_FLOATS // (_num_params(params, stacked) * n_per_item))
    return max(1, batch_size // n_per_item)

  def run(x, params):
    if stacked:
      n_init = _dense.num_members(params)
      size = chunk(params, x.shape[in_ax])
      if size is None or size >= n_init:
        return jax.vmap(core, in_axes=(None, 0))(x, params)
      return jax.lax.map(lambda p: core(x, p), params, batch_size=size)
    size = chunk(params, 1)
    if size is None or in_ax != 0 or size >= x.shape[0]:
      return core(x, params)
    return jax.lax.map(lambda xi: core(xi[None], params)[0], x, batch_size=size)

  jitted = jax.jit(run)
  check = _param_checker(apply_fn, resolved, stacked, in_ax, per_example=True)

  def fn(x, params):
    _check_inputs(x, None, in_ax)
    if stacked:
      _dense.num_members(params)
    check(params, x)
    return jitted(x, params)

  return fn


def ensemble_ntk_diagonal_fn(member_apply_fn: ApplyFn, *, backend: str = 'auto',
                             vmap_axes: Any = 0, trace_axes: int | Sequence[int] = (-1,)):
  """Returns ``fn(x, stacked_params)``: the diagonal of the ensemble NTK, ``(N,)``.

  ``K_e(x, x) = (1/m) sum_j K(x, x; theta_j)`` over the leading member axis.
  """
  core, in_ax, resolved = _diag_core(member_apply_fn, backend, vmap_axes, trace_axes)
  jitted = jax.jit(lambda x, sp: jnp.mean(jax.vmap(core, in_axes=(None, 0))(x, sp), axis=0))
  check = _param_checker(member_apply_fn, resolved, True, in_ax, per_example=True)

  def fn(x, stacked_params):
    _check_inputs(x, None, in_ax)
    _dense.num_members(stacked_params)
    check(stacked_params, x)
    return jitted(x, stacked_params)

  return fn
