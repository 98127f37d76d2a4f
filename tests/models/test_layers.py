"""GroupedConv and FastBatchNorm against flax's nn.Conv / nn.BatchNorm (values and gradients)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import enable_x64
from ce_jax.models.native import onednn
from ce_jax.models import layers, registry, resnext, wrn
from ce_jax.models.layers import FastBatchNorm, GroupedConv

# Test data comes from numpy and the variables are initialized with 'rbg' keys: on XLA:CPU a
# threefry jax.random.normal compiles one program per shape (0.3-0.7 s each, the largest part of
# this file's cold time); numpy draws compile nothing and rbg's sampler compiles ~4x faster. Every
# comparison below initializes both sides with the same key, whichever PRNG it is.


def _key(seed):
  return jax.random.key(seed, impl='rbg')


def _normal(seed, shape, dtype=np.float32, scale=1.0, shift=0.0):
  """``scale * N(0, 1) + shift`` of ``shape`` and ``dtype`` from numpy's generator ``seed``."""
  return np.asarray(scale * np.random.default_rng(seed).standard_normal(shape) + shift, dtype)


def _equal(a, b):
  """Same shape, dtype and values (compared in numpy: an eager ``a == b`` compiles per shape)."""
  a, b = np.asarray(a), np.asarray(b)
  return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


TOL = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2, jnp.float64: 1e-11}


def _close(a, b, tol, what):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, what
  scale = max(1.0, float(np.max(np.abs(b))))
  err = float(np.max(np.abs(a - b))) if a.size else 0.0
  assert err <= tol * scale, f'{what}: max error {err:.3g} > {tol:.1g} * {scale:.3g}'


def _conv_case(groups, stride, padding, dtype, impl, chunk=1, ci=2, co=3, use_bias=True):
  """Compares GroupedConv with nn.Conv: params, outputs and both gradients (random cotangent)."""
  seed = groups * 7 + stride
  key = _key(seed)
  x = _normal(seed, (2, 7, 6, groups * ci), dtype)
  kw = dict(features=groups * co, kernel_size=(3, 3), strides=stride, padding=padding,
            feature_group_count=groups, use_bias=use_bias, dtype=dtype,
            param_dtype=jnp.float32 if dtype == jnp.bfloat16 else dtype)
  ours, ref = GroupedConv(impl=impl, chunk=chunk, **kw), nn.Conv(**kw)
  p_ours, p_ref = ours.init(key, x), ref.init(key, x)
  assert jax.tree_util.tree_structure(p_ours) == jax.tree_util.tree_structure(p_ref)
  for a, b in zip(jax.tree_util.tree_leaves(p_ours), jax.tree_util.tree_leaves(p_ref)):
    assert _equal(a, b)
  y_ref = ref.apply(p_ref, x)
  r = _normal(seed + 1, y_ref.shape, dtype)

  def loss(mod):
    return jax.jit(jax.value_and_grad(
        lambda p, x: jnp.sum((mod.apply(p, x) * r).astype(jnp.float32)), argnums=(0, 1)))

  y = ours.apply(p_ref, x)
  assert y.dtype == y_ref.dtype
  tol = TOL[dtype]
  _close(y, y_ref, tol, 'output')
  (_, (gp, gx)), (_, (gp_ref, gx_ref)) = loss(ours)(p_ref, x), loss(ref)(p_ref, x)
  _close(gx, gx_ref, tol, 'input gradient')
  _close(gp['params']['kernel'], gp_ref['params']['kernel'], tol, 'kernel gradient')
  if use_bias:
    _close(gp['params']['bias'], gp_ref['params']['bias'], tol, 'bias gradient')


EXPLICIT = ((1, 1), (0, 2))


@pytest.mark.parametrize('groups,stride,padding', [
    (1, 1, 'SAME'), (1, 2, EXPLICIT), (2, 1, 'VALID'), (2, 2, 'SAME'), (3, 1, EXPLICIT),
    (3, 2, 'VALID'), (10, 1, 'SAME'), (10, 2, EXPLICIT), (37, 1, 'VALID'), (37, 2, 'SAME')])
def test_grouped_conv_matches_flax_float32(groups, stride, padding):
  _conv_case(groups, stride, padding, jnp.float32, 'auto')


@pytest.mark.parametrize('impl', ['loop', 'grouped_loop', 'grouped_transposed'])
@pytest.mark.parametrize('groups,stride,padding', [(3, 1, 'SAME'), (5, 2, ((2, 0), (1, 1)))])
def test_every_impl_matches_flax(impl, groups, stride, padding):
  _conv_case(groups, stride, padding, jnp.float32, impl, use_bias=False)


@pytest.mark.parametrize('chunk', [2, 4])
def test_chunked_loop_matches_flax(chunk):
  _conv_case(10, 2, 'SAME', jnp.float32, 'loop', chunk=chunk)


@pytest.mark.parametrize('groups,stride,padding', [(1, 1, 'SAME'), (4, 2, 'SAME'),
                                                   (10, 1, ((1, 1), (1, 1)))])
def test_grouped_conv_bfloat16(groups, stride, padding):
  _conv_case(groups, stride, padding, jnp.bfloat16, 'loop')


@pytest.mark.parametrize('impl', ['loop', 'grouped_transposed'])
@pytest.mark.parametrize('groups,stride,padding', [(3, 2, 'SAME'), (10, 1, 'VALID')])
def test_grouped_conv_float64(impl, groups, stride, padding):
  with enable_x64():
    _conv_case(groups, stride, padding, jnp.float64, impl)


def test_grouped_conv_under_jit_and_extra_batch_dims():
  x = _normal(0, (2, 3, 5, 5, 6))
  ours = GroupedConv(6, (3, 3), feature_group_count=3, impl='loop')
  ref = nn.Conv(6, (3, 3), feature_group_count=3)
  p = ref.init(_key(1), x)
  _close(jax.jit(ours.apply)(p, x), ref.apply(p, x), 2e-5, 'output')


# One small ResNeXt-29 (4 groups of 4, 8, 16 channels; 8x8 inputs) for the ResNeXt tests of this
# file: the stock variables are initialized once (module fixture), and the models with other
# layers, of the same shapes, reuse the compiled ops.
RESNEXT = dict(cardinality=4, base_width=64, num_classes=3, stage_outputs=(16, 32, 64),
               stem_channels=8)


@pytest.fixture(scope='module')
def stock_resnext():
  """``(model, x, variables)``: the stock (nn.Conv, nn.BatchNorm) ResNeXt, a batch, its init."""
  model = resnext.ResNeXt29(layers='stock', **RESNEXT)
  x = _normal(0, (4, 8, 8, 3))
  return model, x, model.init(_key(1), x)


@pytest.mark.slow
def test_grouped_conv_in_resnext_same_tree_and_gradients(stock_resnext):
  """GroupedConv in a ResNeXt: nn.Conv's variable tree and values, and float32 gradients equal to
  the float64 gradients of the nn.Conv model. (The reference is float64, not nn.Conv in float32:
  on this batch the nn.Conv model's own float32 gradient (XLA:CPU's convolutions) is 0.4% off in
  the stem kernel (0.104 of 24.8), GroupedConv's 1.3e-5 of the largest entry.)"""
  ref, x, v = stock_resnext
  ours = resnext.ResNeXt29(conv=GroupedConv, layers='stock', **RESNEXT)
  v_ours = ours.init(_key(1), x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v_ours)
  assert all(_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(v),
                                           jax.tree_util.tree_leaves(v_ours)))

  def grads(model, v, x):
    def loss(p):
      out, _ = model.apply({'params': p, 'batch_stats': v['batch_stats']}, x, train=True,
                           mutable=['batch_stats'])
      return jnp.sum(out * jnp.arange(3.0))
    return jax.jit(jax.grad(loss))(v['params'])

  got = grads(ours, v, x)
  with enable_x64():
    ref64 = resnext.ResNeXt29(layers='stock', dtype=jnp.float64, **RESNEXT)
    v64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v)
    want = grads(ref64, v64, np.asarray(x, np.float64))
    want = jax.tree_util.tree_map(np.asarray, want)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert a.dtype == jnp.float32
    _close(a, b, 1e-4, 'resnext gradient')


def test_choose_impl_rule_and_validation():
  # With the oneDNN extension (main suite) float32 CPU convolutions go to it; without it (the
  # compat stack has no oneDNN) the XLA rule applies. tests/models/test_onednn.py checks the former.
  fast = onednn.available()
  assert layers.choose_impl(1, 'cpu') == ('onednn' if fast else 'stock')
  assert layers.choose_impl(4, 'cpu') == ('onednn' if fast else 'loop')
  assert layers.choose_impl(4, 'cpu', dtype=jnp.bfloat16) == 'loop'
  assert layers.choose_impl(4, 'gpu') == 'stock'
  assert layers.choose_impl(4, 'cpu', kernel_dilation=(2, 2)) == 'stock'
  # The one decision covers explicit requests too (GroupedConv re-decides nothing).
  assert layers.choose_impl(4, 'gpu', impl='grouped_transposed') == 'grouped_transposed'
  assert layers.choose_impl(1, 'gpu', impl='loop') == 'stock'
  assert layers.choose_impl(4, 'cpu', kernel_dilation=(2, 2), impl='grouped_loop') == 'stock'
  with layers.reference_convolutions():
    assert layers.choose_impl(4, 'cpu') == 'stock'
    assert layers.choose_impl(4, 'cpu', impl='loop') == 'loop'
  x = jnp.ones((1, 4, 4, 4))
  with pytest.raises(ValueError, match='impl must be one of'):
    GroupedConv(4, (3, 3), feature_group_count=2, impl='fast').init(_key(0), x)
  with pytest.raises(ValueError, match='chunk must be'):
    GroupedConv(4, (3, 3), feature_group_count=2, chunk=0).init(_key(0), x)
  with pytest.raises(ValueError, match='must divide'):
    GroupedConv(6, (3, 3), feature_group_count=4).init(_key(0), x)


# ------------------------------------------------------------------------------------------------
# FastBatchNorm


def _bn_pair(**kw):
  return FastBatchNorm(**kw), nn.BatchNorm(**kw)


# The BatchNorm tests run each call as one jitted program: cold, a few programs compile in half
# the time of the eager calls' dozens of small ones (same values to rounding).


def _bn_init(mod, x):
  return jax.jit(functools.partial(mod.init, use_running_average=False))(_key(2), x)


def _bn_train(mod):
  return jax.jit(functools.partial(mod.apply, use_running_average=False, mutable=['batch_stats']))


@pytest.mark.parametrize('kw,shape', [
    (dict(momentum=0.9), (8, 5, 5, 6)),
    (dict(momentum=0.8, epsilon=1e-3, use_fast_variance=False), (6, 4, 4, 3)),
    (dict(axis=1, use_scale=False), (4, 5, 3, 3)),
    (dict(use_bias=False), (16, 7)),
])
def test_fast_batchnorm_train_and_eval_match_flax(kw, shape):
  ours, ref = _bn_pair(**kw)
  x = _normal(0, shape, scale=3.0, shift=1.5)
  v, v_ref = _bn_init(ours, x), _bn_init(ref, x)
  assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(jnp.shape, v_ref)
  params = {name: _normal(3 + i, a.shape, shift=np.asarray(a))  # scale 1 / bias 0, perturbed
            for i, (name, a) in enumerate(sorted(v['params'].items()))}
  stats, stats_ref = v['batch_stats'], v_ref['batch_stats']
  train, train_ref = _bn_train(ours), _bn_train(ref)
  for step in range(2):  # running averages over two training steps
    xs = x * (1 + step) - step
    y, new = train({'params': params, 'batch_stats': stats}, xs)
    y_ref, new_ref = train_ref({'params': params, 'batch_stats': stats_ref}, xs)
    _close(y, y_ref, 2e-5, 'train output')
    for name in ('mean', 'var'):
      _close(new['batch_stats'][name], new_ref['batch_stats'][name], 2e-5, name)
    stats, stats_ref = new['batch_stats'], new_ref['batch_stats']
  y, y_ref = (jax.jit(functools.partial(mod.apply, use_running_average=True))(
      {'params': params, 'batch_stats': stats}, x) for mod in (ours, ref))
  _close(y, y_ref, 2e-5, 'eval output')

  r = _normal(1, x.shape)

  def grads(mod):
    def loss(p, x):
      out, _ = mod.apply({'params': p, 'batch_stats': stats}, x, use_running_average=False,
                         mutable=['batch_stats'])
      return jnp.sum(out * r)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

  (gp, gx), (gp_ref, gx_ref) = grads(ours), grads(ref)
  _close(gx, gx_ref, 2e-5, 'input gradient')
  for name in gp:
    _close(gp[name], gp_ref[name], 2e-5, f'{name} gradient')


def test_fast_batchnorm_axis_name_under_vmap():
  """Cross-replica statistics (pmap's axis_name) checked with vmap(axis_name=...)."""
  ours, ref = _bn_pair(axis_name='batch', momentum=0.9)
  x = _normal(0, (3, 4, 2, 2, 5), scale=2.0, shift=1.0)  # 3 "devices"
  v = _bn_init(ref, x[0])
  r = _normal(2, x.shape)

  def step(mod):
    def per_device(x, r):
      def loss(p, x):
        out, new = mod.apply({'params': p, 'batch_stats': v['batch_stats']}, x,
                             use_running_average=False, mutable=['batch_stats'])
        return jnp.sum(out * r), (out, new)
      return jax.grad(loss, argnums=(0, 1), has_aux=True)(v['params'], x)
    return jax.jit(jax.vmap(per_device, axis_name='batch'))(x, r)

  (gp, gx), (y, new) = step(ours)
  (gp_ref, gx_ref), (y_ref, new_ref) = step(ref)
  _close(y, y_ref, 2e-5, 'output')
  _close(gx, gx_ref, 2e-5, 'input gradient')
  for name in ('scale', 'bias'):
    _close(gp[name], gp_ref[name], 2e-5, name)
  for name in ('mean', 'var'):
    _close(new['batch_stats'][name], new_ref['batch_stats'][name], 2e-5, name)


def test_fast_batchnorm_bfloat16_and_float64():
  x = _normal(0, (8, 3, 3, 4), np.float64)
  ours, ref = _bn_pair(dtype=jnp.bfloat16)
  v = _bn_init(ref, x.astype(np.float32))
  xb = x.astype(jnp.bfloat16)
  y, s = _bn_train(ours)(v, xb)
  y_ref, s_ref = _bn_train(ref)(v, xb)
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  _close(y, y_ref, 2e-2, 'bfloat16 output')
  _close(s['batch_stats']['var'], s_ref['batch_stats']['var'], 1e-5, 'bfloat16 var')
  with enable_x64():
    ours, ref = _bn_pair(param_dtype=jnp.float64)
    v = _bn_init(ref, x)
    g, g_ref = (jax.jit(jax.grad(lambda x, mod=mod: jnp.sum(_bn_train(mod)(v, x)[0] ** 3)))(x)
                for mod in (ours, ref))
    assert g.dtype == jnp.float64
    _close(g, g_ref, 1e-11, 'float64 input gradient')


def test_resnext_defaults_to_fast_layers_with_stock_numerics(stock_resnext):
  stock, x, v = stock_resnext
  kw = RESNEXT
  fast = resnext.ResNeXt29(**kw)
  assert fast.layers == 'fast' and resnext.layer_modules('fast')[0] is GroupedConv
  assert resnext.layer_modules('stock') == (nn.Conv, nn.BatchNorm)
  v_fast = fast.init(_key(1), x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v_fast)
  for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(v_fast)):
    assert _equal(a, b)  # same init, same keys
  out_s, st_s = stock.apply(v, x, train=True, mutable=['batch_stats'])
  out_f, st_f = fast.apply(v, x, train=True, mutable=['batch_stats'])
  _close(out_f, out_s, 1e-4, 'train-mode logits')
  for a, b in zip(jax.tree_util.tree_leaves(st_f), jax.tree_util.tree_leaves(st_s)):
    _close(a, b, 1e-4, 'running statistics')
  _close(fast.apply(v, x), stock.apply(v, x), 1e-4, 'eval-mode logits')
  assert registry.get('resnext29', layers='stock', **kw).layers == 'stock'
  with pytest.raises(ValueError, match="layers must be one of fast, stock or a .conv, "
                     "batch_norm. pair of module classes; got 'slow'"):
    resnext.ResNeXt29(layers='slow', **kw)


def test_grouped_conv_runs_what_choose_impl_decides(monkeypatch):
  """GroupedConv asks choose_impl once per call, with its case, and runs what it returns."""
  asked = []
  real = layers.choose_impl

  def spy(*args, **kwargs):
    asked.append((args, kwargs))
    return 'grouped_transposed'
  monkeypatch.setattr(layers, 'choose_impl', spy)
  x = _normal(0, (2, 7, 6, 6))
  ours = GroupedConv(9, (3, 3), strides=2, padding='SAME', feature_group_count=3, impl='loop')
  ref = nn.Conv(9, (3, 3), strides=2, padding='SAME', feature_group_count=3)
  p = ref.init(_key(1), x)
  jaxpr = str(jax.make_jaxpr(ours.apply)(p, x))
  assert len(asked) == 1
  (groups, backend, in_dil, k_dil, dtype, pads, nsp), kwargs = asked[0]
  assert (groups, backend, in_dil, k_dil, nsp, kwargs) == (3, None, (1, 1), (1, 1), 2,
                                                            {'impl': 'loop'})
  assert jnp.dtype(dtype) == jnp.float32 and pads == ((1, 1), (0, 1))   # SAME, stride 2, 7x6
  assert 'custom_vjp_call' in jaxpr and 'ce_onednn' not in jaxpr
  _close(ours.apply(p, x), ref.apply(p, x), 2e-5, 'output')
  monkeypatch.setattr(layers, 'choose_impl', real)
  # Dilated, named padding: the pairs are lax's (kernel dilated), and the result is 'stock'.
  conv = GroupedConv(6, (3, 3), kernel_dilation=2, padding='SAME', feature_group_count=3)
  ref = nn.Conv(6, (3, 3), kernel_dilation=2, padding='SAME', feature_group_count=3)
  p = ref.init(_key(2), x)
  _close(conv.apply(p, x), ref.apply(p, x), 2e-5, 'dilated output')


def _counting_layers():
  """A (conv, batch_norm) pair that records every call (same computation as the fast pair)."""
  calls = []

  class CountingConv(GroupedConv):
    def __call__(self, x):
      calls.append(('conv', self.name))
      return super().__call__(x)

  class CountingBatchNorm(FastBatchNorm):
    def __call__(self, x, use_running_average=None):
      calls.append(('bn', self.name))
      return super().__call__(x, use_running_average)

  return (CountingConv, CountingBatchNorm), calls


def test_wrn_honours_layers():
  kw = dict(depth=10, widen_factor=1, num_classes=3)
  x = _normal(0, (4, 8, 8, 3))
  fast, stock = wrn.WideResNet(**kw), wrn.WideResNet(layers='stock', **kw)
  pair, calls = _counting_layers()
  custom = registry.get('wrn', layers=pair, **kw)
  assert fast.layers == 'fast' and custom.layers == pair
  v = stock.init(_key(1), x)
  for model in (fast, custom):   # the same variables (names, shapes, values) whatever the layers
    v2 = model.init(_key(1), x)
    assert jax.tree_util.tree_structure(v2) == jax.tree_util.tree_structure(v)
    for a, b in zip(jax.tree_util.tree_leaves(v2), jax.tree_util.tree_leaves(v)):
      assert _equal(a, b)
  # Which modules ran: 1 stem + 2 per block + 2 shortcuts (stages 2, 3); 2 BN per block + final.
  block = [('bn', 'bn1'), ('conv', 'conv1'), ('bn', 'bn2'), ('conv', 'conv2')]
  expected = ([('conv', 'stem_conv')] + block + (block + [('conv', 'shortcut_conv')]) * 2
              + [('bn', 'final_bn')])
  assert calls == expected
  del calls[:]
  out_c, st_c = custom.apply(v, x, train=True, mutable=['batch_stats'])
  assert calls == expected
  out_f, st_f = fast.apply(v, x, train=True, mutable=['batch_stats'])
  out_s, st_s = stock.apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(np.asarray(out_c), np.asarray(out_f))   # same computation
  _close(out_f, out_s, 1e-4, 'train-mode logits (fast vs stock)')
  for a, b, c in zip(*(jax.tree_util.tree_leaves(t) for t in (st_c, st_f, st_s))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _close(b, c, 1e-4, 'running statistics')
  _close(fast.apply(v, x), stock.apply(v, x), 1e-4, 'eval-mode logits')
  # The fast layers are what ran by default: GroupedConv's calls in the jaxpr (oneDNN or XLA).
  jaxpr = str(jax.make_jaxpr(lambda v: fast.apply(v, x))(v))
  assert ('ce_onednn_conv_fwd' in jaxpr) == onednn.available()
  # conv= overrides the convolution of the choice; the BatchNorm stays layers'.
  pair2, calls2 = _counting_layers()
  wrn.WideResNet(conv=nn.Conv, layers=pair2, **kw).init(_key(1), x)
  assert calls2 == [c for c in expected if c[0] == 'bn']
  assert registry.get('wrn', layers='stock', **kw).layers == 'stock'
  with pytest.raises(ValueError, match=r"layers must be one of fast, stock or a .* got 'slow'"):
    registry.get('wrn', layers='slow', **kw)
  with pytest.raises(ValueError, match=r'layers must be one of .* got \(1, 2\)'):
    wrn.WideResNet(layers=(1, 2), **kw)


def test_resnext_takes_a_layers_pair(stock_resnext):
  _, x, v = stock_resnext   # the fast layers' variables too (test above)
  pair, calls = _counting_layers()
  custom, fast = resnext.ResNeXt29(layers=pair, **RESNEXT), resnext.ResNeXt29(**RESNEXT)
  v2 = custom.init(_key(1), x)
  assert jax.tree_util.tree_structure(v2) == jax.tree_util.tree_structure(v)
  # 1 stem + 9 blocks x 3 convs + 3 shortcuts (the first block of each stage: 8 -> 16, 16 -> 32,
  # 32 -> 64 channels); as many BatchNorms.
  assert sum(c[0] == 'conv' for c in calls) == sum(c[0] == 'bn' for c in calls) == 31
  np.testing.assert_array_equal(np.asarray(custom.apply(v, x)), np.asarray(fast.apply(v, x)))


@pytest.mark.parametrize('module', ['fast', 'stock'])
def test_batchnorm_float32_train_mode_is_accurate_when_the_mean_is_large(module):
  """Post-ReLU-like activations (mean 30, spread 0.05): the float32 batch-normalized output is
  within a few float32 ulps of the float64 computation; the one-pass E[x^2] - E[x]^2 is not."""
  rng = np.random.default_rng(0)
  x = (30.0 + 0.05 * rng.standard_normal((64, 6, 6, 5))).astype(np.float32)
  xd = x.astype(np.float64)
  mean = xd.mean((0, 1, 2))
  ref = (xd - mean) / np.sqrt(((xd - mean) ** 2).mean((0, 1, 2)) + 1e-5)
  cls = FastBatchNorm if module == 'fast' else nn.BatchNorm

  def error(**kw):
    bn = cls(use_running_average=False, **kw)
    v = bn.init(_key(0), x)
    y, _ = bn.apply(v, x, mutable=['batch_stats'])
    return float(np.max(np.abs(np.asarray(y, np.float64) - ref)))

  accurate = error() if module == 'fast' else error(use_fast_variance=False)
  one_pass = error(use_fast_variance=True)
  assert accurate < 2e-4, accurate           # a float32 ulp of 30 is 2e-6; the spread is 0.05
  assert one_pass > 10 * accurate, (one_pass, accurate)


def test_resnext_train_mode_float32_matches_float64():
  """The whole model in training mode: float32 logits agree with the float64 computation."""
  x = _normal(1, (8, 32, 32, 3))
  m32 = resnext.resnext('resnext29', cardinality=2, base_width=4, num_classes=10)
  # float32 variables of the model's shapes (eval_shape: nothing runs), drawn by numpy: He-normal
  # kernels, BatchNorm scales 1 + 0.1 N(0, 1) and biases 0.1 N(0, 1) (model.init would compile
  # ~40 samplers, 6 s cold). Each forward pass is one jitted program (a third of the compile time
  # of the eager calls' per-layer ops).
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name, n = path[-1].key, rng.standard_normal(leaf.shape)
    if name == 'kernel':
      return np.sqrt(2 / np.prod(leaf.shape[:-1])) * n   # fan-in: all but the output axis
    return {'scale': 1 + 0.1 * n, 'bias': 0.1 * n, 'mean': 0 * n, 'var': 1 + 0 * n}[name]

  shapes = jax.eval_shape(m32.init, _key(0), x)
  v32 = jax.tree_util.tree_map_with_path(lambda p, a: np.asarray(draw(p, a), np.float32), shapes)
  train = dict(train=True, mutable=['batch_stats'])
  with enable_x64():
    m64 = resnext.resnext('resnext29', cardinality=2, base_width=4, num_classes=10,
                          dtype=jnp.float64)
    v64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v32)
    y64, _ = jax.jit(functools.partial(m64.apply, **train))(v64, np.asarray(x, np.float64))
    y64 = np.asarray(y64)
  y32, _ = jax.jit(functools.partial(m32.apply, **train))(v32, x)
  err = np.max(np.abs(np.asarray(y32, np.float64) - y64)) / np.max(np.abs(y64))
  assert err < 1e-4, err


def test_batchnorm_statistics_are_accurate_over_many_rows():
  """Over 32768 rows a GEMV's one float32 accumulator per column loses ~4e-6 of a column sum;
  FastBatchNorm's batch statistics stay at float32 rounding (a tree reduction)."""
  from ce_jax.models import layers as layers_lib
  rng = np.random.default_rng(1)
  x = (1.0 + rng.standard_normal((32768, 16))).astype(np.float32)
  xd = x.astype(np.float64)
  gemv = np.asarray(layers_lib._column_sums(jnp.asarray(x)), np.float64)  # pylint: disable=protected-access
  assert np.max(np.abs(gemv - xd.sum(0)) / np.abs(xd).sum(0)) > 1e-6   # what the GEMV loses
  mean, var = layers_lib._batch_stats(jnp.asarray(x), False, None, None)  # pylint: disable=protected-access
  assert np.max(np.abs(np.asarray(mean, np.float64) - xd.mean(0))) < 5e-7
  assert np.max(np.abs(np.asarray(var, np.float64) / xd.var(0) - 1)) < 1e-6
