"""A collegial-ensemble member is any Flax module: its description and its accounting.

A :class:`Member` is a *factory* ``factory(width) -> flax.linen.Module`` (``width`` an int, or a
per-layer tuple of ints), the shape of ONE example input (no batch axis), and optionally
``network(m, width) -> Module``, the whole model with an ensemble of ``m`` members inside (for
integer ``m`` and whole-network counts, Algorithm 2). Everything the search needs is read from
the module itself, never from a closed form:

* ``beta(n)``: parameters of one member (the ``'params'`` collection, by ``jax.eval_shape`` of
  ``init``: nothing is allocated);
* FLOPs of one member on one example (2 per multiply-add of every ``dot_general`` and
  convolution of the jaxpr of ``apply``, as :func:`ce_jax.design.accounting.count_flops`);
* the fan-in sum ``S(n) = sum_l 1 / fan_in_l`` of Assumption 1 (paper Eq. 2 and 9), read from
  the jaxpr of ``apply``.

**Which operations are layers.** A *weight layer* is a ``dot_general`` or a convolution (also
ce_jax's oneDNN convolution) with one operand computed from the parameters only (the weight:
a kernel, possibly scaled or cast) and the other from the input. Its fan-in is the contracted
size *per group*: for a dense layer the contracted dimensions (per block of a block-diagonal
einsum), for a convolution ``'channels'`` the input channels per group ``C / G`` and
``'kernel'`` ``C / G`` times the kernel taps ``kh * kw``. Products of two activations
(attention scores) are not layers; normalization scales and biases are not layers.

**Which layers count in S.** Every weight layer counts once per application, except, when the
member *reads the data* (``reads_data=True``: a whole network such as the paper's dense member),
the layers applied directly to the data (no weight layer between the input and them): their
fan-in is the data dimension, and a fixed input averages nothing out. A *block* (the default,
``reads_data=False``: a ResNet bottleneck path, an MLP block inside a Transformer) reads the
features of the layers before it, so its first layers count too. This rule gives the paper's
two conventions exactly: the dense member of depth L has ``S = (L - 1) / n`` (the first layer,
of fan-in ``n_0``, is left out) and the bottleneck path ``S = 1/256 + 1/n + 1/n`` (channels) or
``1/256 + 1/(9n) + 1/n`` (kernel).

**Exact and fast.** Tracing a module costs milliseconds, a grid of a thousand widths would
cost seconds. Every dimension of every parameter and every layer is, for the modules met in
practice, an affine function of the integer widths (``n``, ``4n``, ``m n``...). The counts are
therefore traced at ``L + 1`` widths (``L`` = number of per-layer widths), the affine
coefficients read off, and the prediction checked against exact traces at further widths (the
smallest, the largest, the baseline and random ones). If any check fails (a width-dependent
structure, a ``floor``), every width is traced. Either way the counts are exact integers.

Normalization: a member is traced (for accounting and for Algorithm 1) with
``apply_kwargs``, e.g. ``{'train': False}``; BatchNorm then uses its running statistics, so the
NTK does not depend on the batch (see :mod:`ce_jax.theory.alpha`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import _validate
from ce_jax.models import layers as _layers
from ce_jax.models.native import onednn

FAN_IN_CONVENTIONS = ('channels', 'kernel')
READOUTS = ('center',)
INPUT_DISTRIBUTIONS = ('gaussian', 'relu', 'center_pixel', 'constant')

Width = Any   # int, or a tuple of ints (one per layer)


def _freeze(d) -> tuple:
  return tuple(sorted(dict(d or {}).items()))


def _built(make: Callable[[], Any], what: str, args: str) -> nn.Module:
  """``make()``; its failure or a non-module result is one line naming ``what`` and ``args``."""
  try:
    module = make()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{what} rejected {args}: {_first_line(e)}') from None
  if not isinstance(module, nn.Module):
    raise ValueError(f'{what} must return a flax.linen.Module, got {type(module).__name__} '
                     f'for {args}')
  return module


@dataclasses.dataclass(frozen=True)
class Member:
  """A member (or block path) of a collegial ensemble, given as a Flax module factory.

  Attributes:
    factory: ``factory(width) -> nn.Module``; ``width`` is an int (or a tuple of per-layer
      widths when the member takes one).
    input_shape: shape of ONE example input, without the batch axis, e.g. ``(32, 32, 64)``.
    network: optional ``network(m, width) -> nn.Module``, the whole model whose ensemble (or
      grouped block) has ``m`` members of ``width``; used for integer ``m`` and whole-network
      parameter / FLOP counts. Without it the "network" is the ``m`` members themselves.
    name: a name for reports.
    reads_data: True when the member reads the data directly (a whole network): the weight
      layers applied to the input then do not count in S (see the module docstring).
    readout: the scalar output whose diagonal NTK entry Algorithm 1 measures: ``'center'``
      (output channel 0 at the central position: ``y[:, 0]`` for ``(batch, features)``,
      ``y[:, H//2, W//2, 0]`` for maps) or a callable ``y -> (batch,)``.
    apply_kwargs: keyword arguments of ``__call__`` for accounting and Algorithm 1 (e.g.
      ``(('train', False),)``; a dict is accepted).
    network_apply_kwargs: the same for ``network`` (defaults to ``apply_kwargs``).
    label: optional ``label(m, width) -> str`` (default ``'{m}x{width}'``).
    input_dtype: dtype of the example input.
    network_input_shape: one example input of ``network`` (default ``input_shape``; e.g. an
      image for a block member whose network is a whole ResNeXt).
  """
  factory: Callable[[Width], nn.Module]
  input_shape: tuple
  network: Callable[[int, Width], nn.Module] | None = None
  name: str = 'member'
  reads_data: bool = False
  readout: Any = 'center'
  apply_kwargs: Any = ()
  network_apply_kwargs: Any = None
  label: Callable[[int, Width], str] | None = None
  input_dtype: Any = jnp.float32
  network_input_shape: tuple | None = None

  def __post_init__(self):
    if not callable(self.factory):
      raise ValueError(f'member factory must be callable (width -> flax Module), got '
                       f'{type(self.factory).__name__}')
    if self.network is not None and not callable(self.network):
      raise ValueError(f'network must be callable (m, width -> flax Module), got '
                       f'{type(self.network).__name__}')
    shape = _validate.int_list('input_shape', self.input_shape)
    object.__setattr__(self, 'input_shape', shape)
    if self.network_input_shape is not None:
      object.__setattr__(self, 'network_input_shape',
                         _validate.int_list('network_input_shape', self.network_input_shape))
    object.__setattr__(self, 'apply_kwargs', _freeze(self.apply_kwargs))
    if self.network_apply_kwargs is not None:
      object.__setattr__(self, 'network_apply_kwargs', _freeze(self.network_apply_kwargs))
    if not (callable(self.readout) or self.readout in READOUTS):
      raise ValueError(f'readout must be one of {", ".join(READOUTS)} or a callable, got '
                       f'{self.readout!r}')

  # -- building -------------------------------------------------------------------------------
  def build(self, width: Width) -> nn.Module:
    """``factory(width)``, checked to be a Flax module."""
    width = canonical_width(width)
    return _built(lambda: self.factory(width), f'member factory {self.name!r}',
                  f'width {width!r}')

  def build_network(self, m: int, width: Width) -> nn.Module:
    """``network(m, width)``, checked to be a Flax module."""
    if self.network is None:
      raise ValueError(f'member {self.name!r} has no network builder')
    width = canonical_width(width)
    return _built(lambda: self.network(int(m), width), f'network builder of {self.name!r}',
                  f'm={m}, width={width!r}')

  def example_input(self, batch: int = 1):
    return jax.ShapeDtypeStruct((batch,) + tuple(self.input_shape), self.input_dtype)

  def network_example_input(self, batch: int = 1):
    shape = self.input_shape if self.network_input_shape is None else self.network_input_shape
    return jax.ShapeDtypeStruct((batch,) + tuple(shape), self.input_dtype)

  def make_label(self, m: int, width: Width) -> str:
    if self.label is not None:
      return self.label(int(m), canonical_width(width))
    w = canonical_width(width)
    if isinstance(w, tuple):
      if len(set(w)) == 1:
        return f'{int(m)}x{w[0]}'
      return f'{int(m)}x[{"-".join(map(str, w))}]'
    return f'{int(m)}x{w}'

  @property
  def kwargs(self) -> dict:
    return dict(self.apply_kwargs)

  @property
  def network_kwargs(self) -> dict:
    kw = self.apply_kwargs if self.network_apply_kwargs is None else self.network_apply_kwargs
    return dict(kw)


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'.rstrip(': ')


def canonical_width(width: Width, name: str = 'width') -> Width:
  """An int width stays an int; a sequence becomes a tuple of ints >= 1."""
  if isinstance(width, (list, tuple, np.ndarray)):
    w = _validate.int_list(name, list(np.asarray(width).ravel()))
    return w[0] if len(w) == 1 and not isinstance(width, (list, tuple)) else w
  return _validate.positive_int(name, width)


def width_vector(width: Width) -> tuple[int, ...]:
  w = canonical_width(width)
  return w if isinstance(w, tuple) else (w,)


# ---------------------------------------------------------------------------------------------
# Reading a jaxpr: layers, fan-ins, FLOPs.


class Layer(NamedTuple):
  """One weight layer found in the jaxpr (one application).

  primitive: 'dot_general', 'conv_general_dilated' or 'onednn_conv'.
  fan_in_channels: contracted size per group (channels convention).
  fan_in_kernel: the same times the kernel taps (kernel convention).
  reads_data: True when no weight layer lies between the input and this layer.
  weight_shape: shape of the weight operand.
  count: applications (scan length).
  scope: the module path of the equation (flax name stack), '' when unknown.
  """
  primitive: str
  fan_in_channels: int
  fan_in_kernel: int
  reads_data: bool
  weight_shape: tuple
  count: int
  scope: str


class _Op(NamedTuple):
  dims: tuple          # FLOPs = 2 * count * prod(dims)
  count: int


class Structure(NamedTuple):
  """What one trace of a module yields; every entry is a tuple of integer dimensions."""
  leaves: tuple        # shapes of the 'params' leaves
  ops: tuple           # _Op per dot_general / convolution
  layers: tuple        # (Layer, channel dims, kernel dims) per weight layer

  def signature(self):
    return (tuple(len(s) for s in self.leaves),
            tuple((len(o.dims), o.count) for o in self.ops),
            tuple((len(c), len(k), l.reads_data, l.count) for l, c, k in self.layers))

  def dims(self) -> np.ndarray:
    out = [d for s in self.leaves for d in s]
    out += [d for o in self.ops for d in o.dims]
    out += [d for _, c, k in self.layers for d in tuple(c) + tuple(k)]
    return np.asarray(out, np.int64)


_CALL_PARAMS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
_WEIGHT_PRIMS = ('dot_general', 'conv_general_dilated')


def _is_onednn(e) -> bool:
  return e.primitive.name == 'ffi_call' and e.params.get('target_name') == onednn.FORWARD_TARGET


def _open(j):
  return j.jaxpr if hasattr(j, 'jaxpr') and hasattr(j.jaxpr, 'eqns') else j


def _has_weight_ops(j) -> bool:
  for e in _open(j).eqns:
    if e.primitive.name in _WEIGHT_PRIMS or _is_onednn(e):
      return True
    for p in e.params.values():
      for v in (p if isinstance(p, (tuple, list)) else (p,)):
        if hasattr(_open(v), 'eqns') and _has_weight_ops(v):
          return True
  return False


def _shape(v) -> tuple:
  return tuple(int(d) for d in v.aval.shape)


class _Walker:
  """Walks a jaxpr, tracking which values depend on the data and through how many layers."""

  def __init__(self):
    self.ops = []
    self.layers = []

  def status(self, env, v):
    if hasattr(v, 'val') and not hasattr(v, 'count'):   # a Literal
      return None
    return env.get(v)

  def walk(self, jaxpr, in_status, count=1, record=True, prefix=''):
    jaxpr = _open(jaxpr)
    env = {}
    for v in getattr(jaxpr, 'constvars', ()):
      env[v] = None
    for v, s in zip(jaxpr.invars, in_status):
      env[v] = s
    for e in jaxpr.eqns:
      ins = [self.status(env, v) for v in e.invars]
      outs = self.eqn(e, ins, count, record, prefix)
      for v, s in zip(e.outvars, outs):
        env[v] = s
    return [self.status(env, v) for v in jaxpr.outvars]

  @staticmethod
  def _max(statuses):
    data = [s for s in statuses if s is not None]
    return max(data) if data else None

  def eqn(self, e, ins, count, record, prefix):
    name = e.primitive.name
    scope = (prefix + str(e.source_info.name_stack)).strip('/')
    n_out = len(e.outvars)
    if name == 'dot_general':
      (lc, rc), _ = e.params['dimension_numbers']
      lhs, rhs = _shape(e.invars[0]), _shape(e.invars[1])
      out = _shape(e.outvars[0])
      if record:
        self.ops.append(_Op(out + tuple(lhs[i] for i in lc), count))
      s_l, s_r = ins
      if (s_l is None) != (s_r is None):                        # a weight layer
        data_dims = tuple(lhs[i] for i in lc) if s_r is None else tuple(rhs[i] for i in rc)
        weight = rhs if s_r is None else lhs
        depth = s_l if s_r is None else s_r
        if record:
          fan = int(np.prod(data_dims, dtype=np.int64))
          self.layers.append((Layer('dot_general', fan, fan, depth == 0, weight, count, scope),
                              data_dims, ()))
        return [depth + 1]
      return [self._max(ins)]
    if name == 'conv_general_dilated' or _is_onednn(e):
      lhs, rhs = _shape(e.invars[0]), _shape(e.invars[1])
      out = _shape(e.outvars[0])
      if name == 'conv_general_dilated':
        spec = e.params['dimension_numbers'].rhs_spec
        o_dim, i_dim, sp = spec[0], spec[1], tuple(spec[2:])
        prim = 'conv_general_dilated'
      else:
        o_dim, i_dim, sp = len(rhs) - 1, len(rhs) - 2, tuple(range(len(rhs) - 2))
        prim = 'onednn_conv'
      if record:
        self.ops.append(_Op(out + tuple(rhs[i] for i in range(len(rhs)) if i != o_dim), count))
      s_l, s_r = ins[0], ins[1]
      if s_r is None and s_l is not None:
        if record:
          c = (rhs[i_dim],)
          k = tuple(rhs[i] for i in sp)
          self.layers.append((Layer(prim, int(c[0]), int(c[0] * int(np.prod(k, dtype=np.int64))),
                                    s_l == 0, rhs, count, scope), c, k))
        return [s_l + 1] * n_out
      return [self._max(ins)] * n_out
    # Control flow and calls: recurse.
    sub_prefix = (scope + '/') if scope else ''
    for key in _CALL_PARAMS:
      sub = e.params.get(key)
      if sub is not None and hasattr(_open(sub), 'eqns'):
        if len(_open(sub).invars) == len(ins):
          mult = count * int(e.params.get('length', 1)) if name == 'scan' else count
          return self.walk(sub, ins, mult, record, sub_prefix)
    if name == 'cond':
      outs = None
      for b, branch in enumerate(e.params['branches']):
        o = self.walk(branch, ins[1:], count, record and b == 0, sub_prefix)
        outs = o if outs is None else [self._max([a, c]) for a, c in zip(outs, o)]
      return outs
    for p in e.params.values():
      for v in (p if isinstance(p, (tuple, list)) else (p,)):
        if hasattr(_open(v), 'eqns') and _has_weight_ops(v):
          raise ValueError(f'member uses {name!r} around a weight layer, which ce_jax cannot '
                           f'account for (use plain Python loops or nn.scan)')
    return [self._max(ins)] * n_out


def trace_structure(module: nn.Module, example, kwargs=None) -> Structure:
  """Traces ``module`` (abstractly) on ``example`` and returns its :class:`Structure`.

  Raises ``ValueError`` (one line) when the module fails to initialize or apply.
  """
  kwargs = dict(kwargs or {})
  rng = jax.random.PRNGKey(0)
  with _layers.reference_convolutions():
    try:
      variables = jax.eval_shape(lambda r, a: module.init(r, a, **kwargs), rng, example)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{type(module).__name__}.init failed on an input of shape '
                       f'{tuple(example.shape)}: {_first_line(e)}') from None
    try:
      closed = jax.make_jaxpr(lambda v, a: module.apply(v, a, **kwargs))(variables, example)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{type(module).__name__}.apply failed on an input of shape '
                       f'{tuple(example.shape)}: {_first_line(e)}') from None
  n_vars = len(jax.tree_util.tree_leaves(variables))
  ins = [None] * n_vars + [0] * (len(closed.jaxpr.invars) - n_vars)
  w = _Walker()
  w.walk(closed, ins)
  leaves = tuple(tuple(int(d) for d in leaf.shape)
                 for leaf in jax.tree_util.tree_leaves(variables.get('params', {})))
  return Structure(leaves, tuple(w.ops), tuple(w.layers))


# ---------------------------------------------------------------------------------------------
# Counts from structures, vectorized over a grid of widths.


class Counts(NamedTuple):
  """Counts of modules on a grid of G integer points (numpy arrays of shape (G,))."""
  params: np.ndarray       # int64
  flops: np.ndarray        # int64, per example
  fan_in_sum: dict         # {'channels': (G,) float64, 'kernel': (G,) float64}


def _counts_from_dims(structure: Structure, dims: np.ndarray, reads_data: bool) -> Counts:
  """Counts for a (G, K) matrix of dimension vectors laid out like ``structure.dims()``."""
  dims = np.asarray(dims, np.int64)
  g = dims.shape[0]
  k = 0
  params = np.zeros(g, np.int64)
  for s in structure.leaves:
    params += np.prod(dims[:, k:k + len(s)], axis=1, dtype=np.int64) if s else 1
    k += len(s)
  flops = np.zeros(g, np.int64)
  for o in structure.ops:
    flops += 2 * o.count * np.prod(dims[:, k:k + len(o.dims)], axis=1, dtype=np.int64)
    k += len(o.dims)
  s_ch = np.zeros(g, np.float64)
  s_k = np.zeros(g, np.float64)
  for layer, c, kd in structure.layers:
    ch = np.prod(dims[:, k:k + len(c)], axis=1, dtype=np.int64)
    k += len(c)
    taps = np.prod(dims[:, k:k + len(kd)], axis=1, dtype=np.int64) if kd else 1
    k += len(kd)
    if reads_data and layer.reads_data:
      continue
    s_ch += layer.count / ch
    s_k += layer.count / (ch * taps)
  return Counts(params, flops, {'channels': s_ch, 'kernel': s_k})


class CountModel:
  """Exact counts of ``build(z)`` for integer vectors ``z`` (see the module docstring).

  ``build(z) -> (module, example_input, kwargs)``. Every dimension is modelled as a polynomial
  in ``u = z - z0`` with the monomials ``terms`` (tuples of variable indices; ``()`` is the
  constant): by default affine, ``[(), (0,), (1,), ...]``. The coefficients come from exact
  traces at ``z0 + sum_{i in T} e_i`` for each term T (Moebius inversion), and the model is
  checked against exact traces at ``check_points``; if a check fails, every point is traced.
  """

  def __init__(self, build, z0, reads_data: bool = False, terms=None):
    self.build = build
    self.z0 = tuple(int(v) for v in z0)
    self.reads_data = reads_data
    self.terms = ([()] + [(i,) for i in range(len(self.z0))]) if terms is None else [
        tuple(sorted(t)) for t in terms]
    self._cache = {}
    self._checked = set()
    self.base = self.structure(self.z0)
    self.exact_only = False
    values = {}
    for t in self.terms:
      z = list(self.z0)
      for i in t:
        z[i] += 1
      st = self.structure(tuple(z))
      if st.signature() != self.base.signature():
        self.exact_only = True
        break
      values[t] = st.dims()
    self.coef = None
    if not self.exact_only:
      self.coef = {}
      for t in self.terms:   # coef_T = sum_{S subset T} (-1)^{|T|-|S|} d(S)
        c = np.zeros_like(values[()])
        for sub in self.terms:
          if set(sub) <= set(t):
            c = c + (-1) ** (len(t) - len(sub)) * values[sub]
        self.coef[t] = c

  def structure(self, z) -> Structure:
    z = tuple(int(v) for v in z)
    if z not in self._cache:
      module, example, kwargs = self.build(z)
      self._cache[z] = trace_structure(module, example, kwargs)
    return self._cache[z]

  def _predict(self, zs: np.ndarray) -> np.ndarray:
    u = np.asarray(zs, np.int64) - np.asarray(self.z0, np.int64)[None, :]
    out = 0
    for t, c in self.coef.items():
      mono = np.prod(u[:, list(t)], axis=1) if t else np.ones(len(u), np.int64)
      out = out + mono[:, None] * c[None, :]
    return out

  def check(self, points) -> bool:
    """True when the model equals exact traces at ``points`` (and structures agree)."""
    if self.exact_only:
      return False
    for z in points:
      z = tuple(int(v) for v in z)
      if z in self._checked:
        continue
      s = self.structure(z)
      if s.signature() != self.base.signature() or not np.array_equal(
          s.dims(), self._predict(np.asarray([z], np.int64))[0]):
        self.exact_only = True
        return False
      self._checked.add(z)
    return True

  def counts(self, zs, check_points=(), progress=None) -> Counts:
    """Exact counts at the rows of ``zs`` ``(G, len(z0))``."""
    zs = np.asarray(zs, np.int64).reshape(-1, len(self.z0))
    if self.check([tuple(p) for p in check_points]):
      dims = self._predict(zs)
      if np.all(dims >= 0):
        return _counts_from_dims(self.base, dims, self.reads_data)
      self.exact_only = True
    parts = []
    for i, z in enumerate(zs):
      s = self.structure(tuple(z))
      parts.append(_counts_from_dims(s, s.dims()[None, :], self.reads_data))
      if progress is not None:
        progress(i + 1, len(zs))
    return Counts(np.concatenate([p.params for p in parts]),
                  np.concatenate([p.flops for p in parts]),
                  {c: np.concatenate([p.fan_in_sum[c] for p in parts])
                   for c in FAN_IN_CONVENTIONS})


def _check_points(zs: np.ndarray, extra=(), num_random: int = 2, seed: int = 0):
  zs = np.asarray(zs, np.int64)
  pts = {tuple(zs[0]), tuple(zs[-1]), tuple(zs[len(zs) // 2])}
  pts |= {tuple(int(v) for v in e) for e in extra}
  rng = np.random.default_rng(seed)
  for i in rng.choice(len(zs), size=min(num_random, len(zs)), replace=False):
    pts.add(tuple(zs[i]))
  return sorted(pts)


@functools.lru_cache(maxsize=64)
def _member_model(member: Member, scalar: bool, z0: tuple) -> CountModel:
  def build(z):
    width = z[0] if scalar else tuple(z)
    return member.build(width), member.example_input(), member.kwargs
  return CountModel(build, z0, member.reads_data)


_NETWORK_MODELS: dict = {}


def _network_model(member: Member, scalar: bool, z0: tuple) -> CountModel:
  """The (cached, one per member and width arity) model of ``network``; see below."""
  key = (member, scalar, len(z0))
  if key not in _NETWORK_MODELS:
    if len(_NETWORK_MODELS) > 64:
      _NETWORK_MODELS.clear()
    _NETWORK_MODELS[key] = _make_network_model(member, scalar, z0)
  return _NETWORK_MODELS[key]


def _make_network_model(member: Member, scalar: bool, z0: tuple) -> CountModel:
  """Counts of ``network(m, width)`` over ``z = (m,) + width``: affine plus m x width terms.

  (A grouped layer of m groups of n channels has a dimension m n; the dense ensemble has
  dimensions m, n_l, n_{l+1}.) Checked at two further points on construction.
  """
  def build(z):
    width = z[1] if scalar else tuple(z[1:])
    return (member.build_network(z[0], width), member.network_example_input(),
            member.network_kwargs)
  k = len(z0)
  terms = [()] + [(i,) for i in range(k)] + [(0, i) for i in range(1, k)]
  model = CountModel(build, z0, reads_data=False, terms=terms)
  far = tuple([3 * z0[0] + 5] + [2 * v + 3 for v in z0[1:]])
  near = tuple([1] + [max(1, v // 2) for v in z0[1:]])
  model.check([far, near])
  return model


def _grid(widths) -> tuple[np.ndarray, bool]:
  """``widths``: ints, or per-layer tuples -> ((G, L) int64, scalar?)."""
  if isinstance(widths, np.ndarray) and widths.ndim == 2:
    arr = widths.astype(np.int64)
    scalar = False
  else:
    ws = list(widths) if not isinstance(widths, (int, np.integer)) else [widths]
    if not ws:
      raise ValueError('widths must be a non-empty list, got []')
    scalar = all(np.ndim(w) == 0 for w in ws)
    if scalar:
      arr = np.asarray([_validate.positive_int('width', w) for w in ws], np.int64)[:, None]
    else:
      rows = [width_vector(w) for w in ws]
      if len({len(r) for r in rows}) != 1:
        raise ValueError(f'per-layer widths must all have the same length, got '
                         f'{sorted({len(r) for r in rows})}')
      arr = np.asarray(rows, np.int64)
  if np.any(arr < 1):
    raise ValueError(f'widths must be integers >= 1, got {arr[arr < 1][:3].tolist()}')
  return arr, scalar


class Profile(NamedTuple):
  """beta(n), FLOPs and S(n) of one member on a grid of widths.

  widths: (G, L) per-layer widths (L = 1 for an int width).  scalar: the member takes an int.
  params: (G,) parameters of one member.  flops: (G,) FLOPs of one member on one example.
  fan_in_sum: {'channels': (G,), 'kernel': (G,)}.
  """
  widths: np.ndarray
  scalar: bool
  params: np.ndarray
  flops: np.ndarray
  fan_in_sum: dict


def profile(member: Member, widths, *, extra_checks=(), progress=None) -> Profile:
  """Exact beta(n), FLOPs and S(n) of ``member`` at each width of ``widths`` (see module doc)."""
  grid, scalar = _grid(widths)
  z0 = tuple(int(v) for v in grid[len(grid) // 2])
  model = _member_model(member, scalar, z0)
  extra = [width_vector(w) for w in extra_checks]
  c = model.counts(grid, _check_points(grid, extra), progress=progress)
  return Profile(grid, scalar, c.params, c.flops, c.fan_in_sum)


def layers(member: Member, width: Width) -> tuple:
  """The weight layers of ``member`` at ``width`` (:class:`Layer` tuples, jaxpr order)."""
  s = trace_structure(member.build(width), member.example_input(), member.kwargs)
  return tuple(l for l, _, _ in s.layers)


def fan_in_sum(member: Member, width: Width, fan_in_convention: str = 'channels') -> float:
  """S of Assumption 1 for ``member`` at ``width`` (one exact trace)."""
  _validate.choice('fan_in_convention', fan_in_convention, FAN_IN_CONVENTIONS)
  s = trace_structure(member.build(width), member.example_input(), member.kwargs)
  c = _counts_from_dims(s, s.dims()[None, :], member.reads_data)
  return float(c.fan_in_sum[fan_in_convention][0])


def network_counts(member: Member, ms, width: Width) -> dict:
  """Whole-network ``{'params', 'flops'}`` (int64 arrays like ``ms``) for ``m`` in ``ms``.

  With ``member.network``: counted on ``network(m, width)`` (one polynomial model of the
  network's dimensions in (m, width), built once per member and checked, see
  :class:`CountModel`). Without: ``m`` times the member's counts.
  """
  ms_arr = np.atleast_1d(np.asarray(ms, np.int64))
  if np.any(ms_arr < 1):
    raise ValueError(f'm must be integers >= 1, got {ms_arr[ms_arr < 1][:3].tolist()}')
  width = canonical_width(width)
  wv = width_vector(width)
  if member.network is None:
    p = profile(member, [width] if not isinstance(width, tuple) else np.asarray([wv]))
    out = {'params': ms_arr * p.params[0], 'flops': ms_arr * p.flops[0]}
  else:
    scalar = not isinstance(width, tuple)
    model = _network_model(member, scalar, (2,) + wv)
    zs = np.concatenate([ms_arr[:, None], np.tile(np.asarray(wv, np.int64), (len(ms_arr), 1))],
                        axis=1)
    c = model.counts(zs)
    out = {'params': c.params, 'flops': c.flops}
  if np.ndim(ms) == 0:
    return {k: int(v[0]) for k, v in out.items()}
  return out


@functools.lru_cache(maxsize=64)
def _network_width_model(member: Member, m: int, z0: int) -> CountModel:
  def build(z):
    return member.build_network(m, z[0]), member.network_example_input(), member.network_kwargs
  return CountModel(build, (z0,), reads_data=False)


def network_width_counts(member: Member, ms, widths) -> dict:
  """``{m: {'params', 'flops'}}`` of ``network(m, n)`` for each int width ``n`` in ``widths``.

  One affine model in n per m (checked at the ends, the middle and random widths).
  """
  if member.network is None:
    raise ValueError(f'member {member.name!r} has no network builder')
  grid, scalar = _grid(list(widths))
  if not scalar:
    raise ValueError('network_width_counts needs int widths')
  out = {}
  for m in ms:
    m = _validate.positive_int('m', m)
    model = _network_width_model(member, m, int(grid[len(grid) // 2, 0]))
    c = model.counts(grid, _check_points(grid))
    out[m] = {'params': c.params, 'flops': c.flops}
  return out


# ---------------------------------------------------------------------------------------------
# Checks of a member, with one-line errors.


def validate(member: Member, width: Width, *, other_width: Width | None = None) -> tuple:
  """Checks that ``member`` can be designed with; returns its layers at ``width``.

  Raises one-line ``ValueError``s when the factory rejects the width or does not return a
  module, the module fails on the example input, it has no weight layer, or its fan-in sum
  does not depend on the width (then no ensemble can be smoother than another).
  """
  if not isinstance(member, Member):
    raise ValueError(f'member must be a ce_jax.design.member.Member, got {type(member).__name__}')
  width = canonical_width(width)
  ls = layers(member, width)
  if not ls:
    raise ValueError(f'member {member.name!r} has no weight layer (dense or convolution with a '
                     f'parameter kernel) at width {width!r}')
  if other_width is None:
    wv = width_vector(width)
    other = tuple(2 * v for v in wv)
    other_width = other if isinstance(width, tuple) else other[0]
  s1 = fan_in_sum(member, width)
  s2 = fan_in_sum(member, other_width)
  if math.isclose(s1, s2, rel_tol=1e-12, abs_tol=0.0):
    raise ValueError(f'the fan-in sum of member {member.name!r} does not depend on the width '
                     f'(S = {s1:.6g} at widths {width!r} and {other_width!r}): the width must '
                     f'set the fan-in of at least one counted weight layer')
  return ls


# ---------------------------------------------------------------------------------------------
# Inputs and the scalar readout for Algorithm 1.


def example_batch(member: Member, key, num_inputs: int = 1,
                  input_distribution: str = 'gaussian'):
  """``(num_inputs,) + input_shape`` inputs for Algorithm 1.

  ``'gaussian'``: i.i.d. N(0, 1); ``'relu'``: relu of them; ``'center_pixel'``: one N(0, 1)
  position at the centre of the spatial dims, zeros elsewhere; ``'constant'``: one N(0, 1)
  position repeated over the spatial dims (the last axis is the channel axis).
  """
  _validate.choice('input_distribution', input_distribution, INPUT_DISTRIBUTIONS)
  num_inputs = _validate.positive_int('num_inputs', num_inputs)
  shape = (num_inputs,) + tuple(member.input_shape)
  dtype = member.input_dtype
  if input_distribution in ('gaussian', 'relu'):
    x = jax.random.normal(key, shape, dtype)
    return jax.nn.relu(x) if input_distribution == 'relu' else x
  if len(shape) < 3:
    raise ValueError(f'input_distribution {input_distribution!r} needs spatial dims, got input '
                     f'shape {tuple(member.input_shape)}')
  pixel_shape = (num_inputs,) + (1,) * (len(shape) - 2) + (shape[-1],)
  pixel = jax.random.normal(key, pixel_shape, dtype)
  if input_distribution == 'constant':
    return jnp.broadcast_to(pixel, shape)
  idx = (slice(None),) + tuple(slice(s // 2, s // 2 + 1) for s in shape[1:-1]) + (slice(None),)
  return jnp.zeros(shape, dtype).at[idx].set(pixel)


def apply_readout(member: Member, y) -> jax.Array:
  """The scalar output ``(batch,)`` of ``member`` from its output ``y``."""
  if callable(member.readout):
    r = member.readout(y)
  else:
    if y.ndim < 2:
      raise ValueError(f'member output must have a batch axis and a feature axis, got shape '
                       f'{tuple(y.shape)}')
    idx = (slice(None),) + tuple(s // 2 for s in y.shape[1:-1]) + (0,)
    r = y[idx]
  if r.ndim != 1 or r.shape[0] != y.shape[0]:
    raise ValueError(f'readout must return one scalar per example, shape ({y.shape[0]},), got '
                     f'{tuple(r.shape)}')
  return r
