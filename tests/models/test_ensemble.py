"""Tests of ``ensemble()``: any Flax member as one collegial-ensemble module (tiny widths)."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.theory import ntk
from ce_jax.models import bottleneck, dense, layers, resnext
from ce_jax.models import ensemble as E
from conftest import enable_x64


# ---------------------------------------------------------------------------------------------
# Members.


class DenseBiasMember(nn.Module):
  """nn.Dense layers with biases, ReLU."""
  widths: tuple = (5, 4)
  k: int = 2
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    for w in self.widths:
      x = nn.relu(nn.Dense(w, param_dtype=self.dtype)(x))
    return nn.Dense(self.k, param_dtype=self.dtype)(x)


class NTKDenseMember(nn.Module):
  """NTKDense layers (one with a bias), GELU."""
  width: int = 6
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(dense.NTKDense(self.width, use_bias=True, param_dtype=self.dtype,
                               bias_init=nn.initializers.normal(0.5), name='fc1')(x))
    h = nn.relu(dense.NTKDense(self.width, param_dtype=self.dtype, name='fc2')(h))
    return dense.NTKDense(3, gain=1.0, param_dtype=self.dtype, name='out')(h)


class ConvMember(nn.Module):
  """nn.Conv (stride 2) -> GroupedConv (groups 1) -> GroupedConv (groups 2) -> pool -> Dense."""
  width: int = 4
  dtype: object = jnp.float32
  norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.Conv(self.width, (3, 3), strides=2, param_dtype=self.dtype, name='conv_a')(x)
    if self.norm:
      h = nn.BatchNorm(use_running_average=not train, momentum=0.8, name='bn_a')(h)
    h = nn.relu(h)
    h = nn.relu(layers.GroupedConv(self.width, (3, 3), param_dtype=self.dtype,
                                   name='conv_b')(h))
    h = layers.GroupedConv(self.width, (3, 3), strides=(2, 1), feature_group_count=2,
                           padding=((1, 1), (0, 0)), param_dtype=self.dtype, name='conv_c')(h)
    if self.norm:
      h = layers.FastBatchNorm(use_running_average=not train, momentum=0.8, name='bn_c')(h)
    h = jnp.mean(nn.relu(h), axis=(1, 2))
    return nn.Dense(2, param_dtype=self.dtype, name='head')(h)


class GroupedFirstMember(nn.Module):
  """A grouped conv on the shared input (tiled m times), an NTKConv with groups on m*C."""
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.relu(layers.GroupedConv(4, (3, 3), feature_group_count=2, param_dtype=self.dtype,
                                   name='first')(x))
    h = nn.relu(bottleneck.NTKConv(6, 3, feature_group_count=2, param_dtype=self.dtype,
                                   name='ntk')(h))
    return dense.NTKDense(2, use_bias=True, param_dtype=self.dtype,
                          bias_init=nn.initializers.normal(1.0), name='out')(jnp.mean(h, (1, 2)))


def _x(shape, seed=0, dtype=jnp.float32):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _members(ens, variables):
  return [E.member_variables(ens, variables, j) for j in range(ens.m)]


def _cases(dtype):
  return {
      'dense_bias': (DenseBiasMember(dtype=dtype), _x((5, 3), dtype=dtype)),
      'ntk_dense': (NTKDenseMember(dtype=dtype), _x((5, 4), dtype=dtype)),
      'conv': (ConvMember(dtype=dtype), _x((3, 6, 6, 2), dtype=dtype)),
      'grouped_first': (GroupedFirstMember(dtype=dtype), _x((2, 5, 5, 4), dtype=dtype)),
      'single_dense': (nn.Dense(3, param_dtype=dtype), _x((4, 3), dtype=dtype)),
  }


# ---------------------------------------------------------------------------------------------
# (a) NTK identity, (b) outputs.


@pytest.mark.parametrize('case', ['dense_bias', 'ntk_dense', 'conv', 'grouped_first'])
def test_network_ntk_is_mean_of_member_ntks(case):
  """K_e = (1/m) sum_j K(theta_j) over ALL parameters of the network-level ensemble."""
  with enable_x64():
    member, x = _cases(jnp.float64)[case]
    m = 3
    ens = E.ensemble(member, m)
    variables = ens.init(jax.random.PRNGKey(1), x)
    k_e = ntk.empirical_ntk_fn(ens.apply, backend='jax')(x, None, variables)
    member_fn = ntk.empirical_ntk_fn(member.apply, backend='jax')
    k_members = [member_fn(x, None, v) for v in _members(ens, variables)]
    assert k_e.shape == (x.shape[0], x.shape[0])
    np.testing.assert_allclose(k_e, sum(k_members) / m, rtol=1e-10, atol=1e-12)
    # The members differ (independent initialization): the identity is not trivial.
    assert np.max(np.abs(k_members[0] - k_members[1])) > 1e-3


@pytest.mark.parametrize('case', ['dense_bias', 'ntk_dense', 'conv', 'grouped_first',
                                  'single_dense'])
@pytest.mark.parametrize('aggregation,normalize,factor', [
    ('network', None, 'sqrt'), ('network', False, 1), ('block', None, 1),
    ('block', True, 'sqrt')])
def test_output_is_sum_of_mapped_members(case, aggregation, normalize, factor):
  with enable_x64():
    member, x = _cases(jnp.float64)[case]
    m = 4
    ens = E.ensemble(member, m, aggregation=aggregation, normalize=normalize)
    variables = ens.init(jax.random.PRNGKey(2), x)
    y = ens.apply(variables, x)
    total = sum(member.apply(v, x) for v in _members(ens, variables))
    c = 1 / np.sqrt(m) if factor == 'sqrt' else 1.0
    assert y.shape == member.apply(_members(ens, variables)[0], x).shape
    np.testing.assert_allclose(y, c * total, rtol=1e-10, atol=1e-12)


def test_variables_round_trip_and_independent_members():
  member, x = _cases(jnp.float32)['conv']
  m = 3
  ens = E.ensemble(member, m)
  members = [member.init(jax.random.PRNGKey(10 + j), x) for j in range(m)]
  variables = E.ensemble_variables(ens, members)
  shapes = jax.tree_util.tree_map(jnp.shape, ens.init(jax.random.PRNGKey(0), x))
  assert jax.tree_util.tree_map(jnp.shape, variables) == shapes
  assert shapes['params']['conv_c'] == {'kernel': (m, 3, 3, 2, 4), 'bias': (m * 4,)}
  np.testing.assert_allclose(ens.apply(variables, x),
                             sum(member.apply(v, x) for v in members) / np.sqrt(m),
                             rtol=1e-5, atol=1e-6)
  for j in range(m):
    jax.tree_util.tree_map(np.testing.assert_array_equal,
                           E.member_variables(ens, variables, j), members[j])


def test_factory_with_width():
  ens = E.ensemble(lambda w: dense.DenseMember(w, num_outputs=2), 3, (4, 5))
  assert ens.member == dense.DenseMember((4, 5), num_outputs=2)
  ens2 = E.ensemble(lambda w: DenseBiasMember((w, w)), 2, 7)
  p = ens2.init(jax.random.PRNGKey(0), _x((2, 3)))['params']
  assert p['Dense_1']['kernel'].shape == (2, 7, 7)


# ---------------------------------------------------------------------------------------------
# (c) The hand-written ensembles.


@pytest.mark.parametrize('widths,k', [((8, 8, 8), 1), ((5, 9, 3), 3)])
def test_equals_dense_ensemble(widths, k):
  m = 4
  x = _x((7, 5))
  hand = dense.DenseEnsemble(m, widths, num_outputs=k)
  ens = E.ensemble(lambda w: dense.DenseMember(w, num_outputs=k), m, widths)
  pe = hand.init(jax.random.PRNGKey(1), x)
  assert (jax.tree_util.tree_map(jnp.shape, ens.init(jax.random.PRNGKey(0), x))
          == jax.tree_util.tree_map(jnp.shape, pe))
  np.testing.assert_allclose(ens.apply(pe, x), hand.apply(pe, x), rtol=1e-5, atol=1e-6)
  for j in range(m):
    jax.tree_util.tree_map(np.testing.assert_array_equal, E.member_variables(ens, pe, j),
                           dense.member_params(pe, j))


def _fast_layers(train: bool):
  """The conv class of ``resnext.layer_modules('fast')`` and its BatchNorm as the Bottleneck's
  (training or evaluation mode)."""
  conv_cls, norm_cls = resnext.layer_modules('fast')
  return conv_cls, functools.partial(norm_cls, use_running_average=not train, momentum=0.9,
                                     epsilon=1e-5)


class _PathDesign(nn.Module):
  """A ResNeXt bottleneck path's width, output channels and stride (of a path, or of each path
  of a block)."""
  width: int
  out_channels: int
  strides: int = 1


class ResNeXtPath(_PathDesign):
  """One ResNeXt bottleneck path with the Bottleneck's layers: 1x1, BN, ReLU, 3x3, BN, ReLU, 1x1."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv_cls, norm = _fast_layers(train)
    conv = functools.partial(conv_cls, use_bias=False, kernel_init=resnext.conv_init)
    y = conv(self.width, (1, 1), name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv(self.width, (3, 3), strides=(self.strides, self.strides), padding=((1, 1), (1, 1)),
             name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    return conv(self.out_channels, (1, 1), name='conv3')(y)


class EnsembleBottleneck(_PathDesign):
  """Block ensemble of m paths, then the Bottleneck's final BN, shortcut, add, ReLU."""
  _: dataclasses.KW_ONLY
  m: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv_cls, norm = _fast_layers(train)
    path = functools.partial(ResNeXtPath, out_channels=self.out_channels, strides=self.strides)
    y = E.ensemble(path, self.m, self.width, aggregation='block', name='paths')(x, train=train)
    y = norm(name='bn3')(y)
    residual = x
    if x.shape[-1] != self.out_channels or self.strides != 1:
      residual = conv_cls(self.out_channels, (1, 1), strides=(self.strides, self.strides),
                          use_bias=False, kernel_init=resnext.conv_init, name='shortcut_conv')(x)
      residual = norm(name='shortcut_bn')(residual)
    return nn.relu(y + residual)


def _concat_out(k):
  """Stacked conv kernel (m, *k, C, O) -> the grouped layout (*k, C, m*O)."""
  k = np.asarray(k)
  return np.moveaxis(k, 0, -2).reshape(k.shape[1:-1] + (-1,))


def _concat_in(k):
  """Stacked conv kernel (m, *k, C, O) -> one conv over all channels (*k, m*C, O)."""
  k = np.asarray(k)
  return np.moveaxis(k, 0, -3).reshape(k.shape[1:-2] + (-1, k.shape[-1]))


@pytest.mark.parametrize('in_ch,out_ch,strides', [(16, 16, 1), (8, 16, 2)])
def test_block_equals_resnext_bottleneck(in_ch, out_ch, strides):
  m, n = 4, 2
  x = _x((3, 6, 6, in_ch))
  ours = EnsembleBottleneck(n, out_ch, strides, m=m)

  def hand(train):
    conv_cls, norm = _fast_layers(train)
    return resnext.Bottleneck(width=m * n, out_channels=out_ch, cardinality=m, strides=strides,
                              conv=conv_cls, norm=norm)

  v = ours.init(jax.random.PRNGKey(3), x)
  p, s = v['params'], v['batch_stats']
  paths = p['paths']
  hp = {'conv1': {'kernel': _concat_out(paths['conv1']['kernel'])},
        'conv2': {'kernel': _concat_out(paths['conv2']['kernel'])},
        'conv3': {'kernel': _concat_in(paths['conv3']['kernel'])},
        'bn1': paths['bn1'], 'bn2': paths['bn2'], 'bn3': p['bn3']}
  hs = {'bn1': s['paths']['bn1'], 'bn2': s['paths']['bn2'], 'bn3': s['bn3']}
  if 'shortcut_conv' in p:
    hp.update(shortcut_conv=p['shortcut_conv'], shortcut_bn=p['shortcut_bn'])
    hs.update(shortcut_bn=s['shortcut_bn'])
  hv = {'params': hp, 'batch_stats': hs}
  ref_shapes = jax.tree_util.tree_map(jnp.shape, hand(False).init(jax.random.PRNGKey(0), x))
  assert jax.tree_util.tree_map(jnp.shape, hv) == ref_shapes
  for train in (True, False):
    y, new = ours.apply(v, x, train=train, mutable=['batch_stats'])
    y_ref, new_ref = hand(train).apply(hv, x, mutable=['batch_stats'])
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(new['batch_stats']['paths']['bn2']['mean'],
                               new_ref['batch_stats']['bn2']['mean'], rtol=1e-5, atol=1e-6)


class NTKPath(nn.Module):
  """One NTK bottleneck path: NTKConv 1x1, ReLU, NTKConv 3x3, ReLU, NTKConv 1x1 (gain 2)."""
  width: int
  out_channels: int = 8
  dtype: object = jnp.float64

  @nn.compact
  def __call__(self, x):
    h = bottleneck.NTKConv(self.width, 1, param_dtype=self.dtype, name='conv1')(x)
    h = bottleneck.NTKConv(self.width, 3, param_dtype=self.dtype, name='conv2')(nn.relu(h))
    return bottleneck.NTKConv(self.out_channels, 1, param_dtype=self.dtype,
                              name='conv3')(nn.relu(h))


def test_block_equals_ntk_bottleneck():
  """NTKBottleneck(cardinality=m) = (1/sqrt m) x the block ensemble of its path."""
  with enable_x64():
    m, n, c = 3, 2, 8
    x = _x((2, 5, 5, c), dtype=jnp.float64)
    ens = E.ensemble(lambda w: NTKPath(w, c), m, n, aggregation='block', normalize=True)
    v = ens.init(jax.random.PRNGKey(4), x)
    hand = bottleneck.NTKBottleneck(cardinality=m, width=n, in_channels=c, out_channels=c,
                                    readout='none', param_dtype=jnp.float64)
    p = v['params']
    hp = {'params': {'conv1': {'kernel': _concat_out(p['conv1']['kernel'])},
                     'conv2': {'kernel': _concat_out(p['conv2']['kernel'])},
                     'conv3': {'kernel': _concat_in(p['conv3']['kernel'])}}}
    assert (jax.tree_util.tree_map(jnp.shape, hp)
            == jax.tree_util.tree_map(jnp.shape, hand.init(jax.random.PRNGKey(0), x)))
    np.testing.assert_allclose(ens.apply(v, x), hand.apply(hp, x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (d) Initialization, (e) BatchNorm training, (g) jit and grad.


def test_members_have_the_member_init_distribution():
  m = 8
  x = _x((2, 6, 6, 12))

  class Member(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(nn.Conv(16, (3, 3), kernel_init=resnext.conv_init, name='he')(x))
      h = nn.relu(layers.GroupedConv(16, (3, 3), feature_group_count=4, name='grouped')(h))
      h = nn.relu(bottleneck.NTKConv(16, 3, name='ntk_conv')(h))
      h = jnp.mean(h, axis=(1, 2))
      h = nn.relu(nn.Dense(300, name='lecun')(h))
      return dense.NTKDense(4, name='ntk_dense')(h)

  ens = E.ensemble(Member(), m)
  p = ens.init(jax.random.PRNGKey(5), x)['params']
  expected = {'he': np.sqrt(2 / (9 * 12)), 'grouped': np.sqrt(1 / (9 * 4)), 'ntk_conv': 1.0,
              'lecun': np.sqrt(1 / 16), 'ntk_dense': 1.0}
  for name, std in expected.items():
    k = np.asarray(p[name]['kernel'])
    assert k.shape[0] == m
    for j in range(m):   # each member: the member layer's initializer on the member shape
      assert abs(k[j].std() / std - 1) < 0.12, (name, j, k[j].std(), std)
      assert abs(k[j].mean()) < 0.2 * std
    assert abs(np.corrcoef(k[0].ravel(), k[1].ravel())[0, 1]) < 0.2   # independent members
  member_p = Member().init(jax.random.PRNGKey(6), x)['params']
  for name in expected:
    assert member_p[name]['kernel'].shape == p[name]['kernel'].shape[1:]


def test_batchnorm_training_matches_members():
  m = 3
  member = ConvMember(norm=True)
  x = _x((4, 6, 6, 2))
  ens = E.ensemble(member, m)
  v = ens.init(jax.random.PRNGKey(7), x)
  assert v['batch_stats']['bn_a']['mean'].shape == (m * 4,)
  y, new = ens.apply(v, x, train=True, mutable=['batch_stats'])
  outs = [member.apply(mv, x, train=True, mutable=['batch_stats']) for mv in _members(ens, v)]
  np.testing.assert_allclose(y, sum(o[0] for o in outs) / np.sqrt(m), rtol=1e-4, atol=1e-5)
  expected = E.ensemble_variables(ens, [o[1] for o in outs])
  jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
                         new, expected)
  assert np.max(np.abs(new['batch_stats']['bn_c']['mean'])) > 0   # the statistics moved
  # Evaluation with the updated statistics.
  v2 = {'params': v['params'], **new}
  y_eval = ens.apply(v2, x)
  y_ref = sum(member.apply(mv, x) for mv in _members(ens, v2)) / np.sqrt(m)
  np.testing.assert_allclose(y_eval, y_ref, rtol=1e-4, atol=1e-5)


def test_jit_and_grad():
  m = 3
  member, x = _cases(jnp.float32)['conv']
  ens = E.ensemble(member, m)
  v = ens.init(jax.random.PRNGKey(8), x)
  np.testing.assert_allclose(jax.jit(ens.apply)(v, x), ens.apply(v, x), rtol=1e-6, atol=1e-6)
  loss = lambda p, fn: jnp.sum(fn.apply(p, x) ** 2)
  value, g = jax.jit(jax.value_and_grad(lambda p: loss(p, ens)))(v)
  assert np.isfinite(value)
  # d/dtheta_j of sum F_e^2 = (2/sqrt m) sum F_e * d f_j / d theta_j.
  f_e = ens.apply(v, x)
  for j, mv in enumerate(_members(ens, v)):
    gj = jax.grad(lambda p: jnp.sum(jax.lax.stop_gradient(f_e) * member.apply(p, x)))(mv)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, 2 / np.sqrt(m) * b, rtol=1e-4, atol=1e-6),
        E.member_variables(ens, g, j), gj)


def test_ntk_dense_layer():
  """NTKDense: N(0, 1) kernel, y = sqrt(gain / fan_in) x W (+ b), no bias by default."""
  layer = dense.NTKDense(3, gain=2.0)
  x = _x((4, 5))
  p = layer.init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_map(jnp.shape, p) == {'params': {'kernel': (5, 3)}}
  np.testing.assert_allclose(layer.apply(p, x), np.sqrt(2 / 5) * x @ p['params']['kernel'],
                             rtol=1e-6)
  pb = dense.NTKDense(3, use_bias=True).init(jax.random.PRNGKey(0), x)
  assert pb['params']['bias'].shape == (3,)


# ---------------------------------------------------------------------------------------------
# (f) Bad members and arguments.


class RawParam(nn.Module):
  @nn.compact
  def __call__(self, x):
    w = self.param('w', nn.initializers.lecun_normal(), (x.shape[-1], 3))
    return nn.Dense(2)(nn.relu(x @ w))


class Transposed(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x).T


class Flattened(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(3, (3, 3))(x))
    return nn.Dense(2)(h.reshape(h.shape[0], -1))


class WithLayerNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(nn.LayerNorm(use_scale=False, use_bias=False)(nn.Dense(4)(x)))


class InputResidual(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x + nn.Dense(x.shape[-1])(nn.relu(nn.Dense(4)(x)))


class OpsAfterLast(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(2)(nn.relu(nn.Dense(4)(x))))


class NoWeights(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(x)


@pytest.mark.parametrize('member,x_shape,kwargs,match', [
    (RawParam(), (2, 3), {}, r"member variable params/w is not created by a weight layer"),
    (Transposed(), (2, 3), {}, 'not channels-last compatible'),
    (Flattened(), (2, 4, 4, 2), {}, 'flatten, reshape or concatenation across channels'),
    (WithLayerNorm(), (2, 3), {}, 'LayerNorm .* mixes channels'),
    (InputResidual(), (2, 3), {}, 'residual from the member input'),
    (OpsAfterLast(), (2, 3), {'aggregation': 'block'}, "must return that layer's output"),
    (NoWeights(), (2, 3), {}, 'calls no weight layer'),
])
def test_bad_members(member, x_shape, kwargs, match):
  ens = E.ensemble(member, 3, **kwargs)
  with pytest.raises(ValueError, match=match) as info:
    ens.init(jax.random.PRNGKey(0), jnp.ones(x_shape))
  assert '\n' not in str(info.value)


@pytest.mark.parametrize('build,match', [
    (lambda: E.ensemble(DenseBiasMember(), 0), 'm must be an integer >= 1'),
    (lambda: E.ensemble(lambda w: DenseBiasMember((w,)), 2), 'width is required'),
    (lambda: E.ensemble(DenseBiasMember(), 2, 4), 'width must be None'),
    (lambda: E.ensemble(lambda w: 'not a module', 2, 4), 'must return a flax.linen.Module'),
    (lambda: E.ensemble(DenseBiasMember(), 2, aggregation='layer'), 'aggregation must be one of'),
    (lambda: E.ensemble(lambda w: DenseBiasMember(w), 2, (3, 0)), r'width\[1\]'),
    (lambda: E.member_variables(E.ensemble(DenseBiasMember(), 2), {}, 2), 'j must be'),
    (lambda: E.ensemble_variables(E.ensemble(DenseBiasMember(), 2), [{}]), 'must hold m = 2'),
])
def test_bad_arguments(build, match):
  with pytest.raises(ValueError, match=match) as info:
    build()
  assert '\n' not in str(info.value)
