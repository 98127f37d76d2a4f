"""GroupedConv and FastBatchNorm against flax's nn.Conv / nn.BatchNorm (values and gradients)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.experimental  # noqa: F401  (enable_x64 on jax < 0.9)
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import enable_x64
from ce_jax.models.native import onednn
from ce_jax.models import layers
from ce_jax.models.layers import FastBatchNorm, GroupedConv

def enable_x64():
  """``jax.experimental.enable_x64()`` (jax < 0.9) or ``jax.enable_x64(True)`` (newer)."""
  if hasattr(jax.experimental, 'enable_x64'):
    return jax.experimental.enable_x64()
  return jax.enable_x64(True)


TOL = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2, jnp.float64: 1e-11}


def _close(a, b, tol, what):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, what
  scale = max(1.0, float(np.max(np.abs(b))))
  err = float(np.max(np.abs(a - b))) if a.size else 0.0
  assert err <= tol * scale, f'{what}: max error {err:.3g} > {tol:.1g} * {scale:.3g}'


def _conv_case(groups, stride, padding, dtype, impl, chunk=1, ci=2, co=3, use_bias=True):
  """Compares GroupedConv with nn.Conv: params, outputs and both gradients (random cotangent)."""
  key = jax.random.PRNGKey(groups * 7 + stride)
  kx, kr = jax.random.split(key)
  x = jax.random.normal(kx, (2, 7, 6, groups * ci), dtype)
  kw = dict(features=groups * co, kernel_size=(3, 3), strides=stride, padding=padding,
            feature_group_count=groups, use_bias=use_bias, dtype=dtype,
            param_dtype=jnp.float32 if dtype == jnp.bfloat16 else dtype)
  ours, ref = GroupedConv(impl=impl, chunk=chunk, **kw), nn.Conv(**kw)
  p_ours, p_ref = ours.init(key, x), ref.init(key, x)
  assert jax.tree_util.tree_structure(p_ours) == jax.tree_util.tree_structure(p_ref)
  for a, b in zip(jax.tree_util.tree_leaves(p_ours), jax.tree_util.tree_leaves(p_ref)):
    assert a.shape == b.shape and a.dtype == b.dtype and bool(jnp.all(a == b))
  y_ref = ref.apply(p_ref, x)
  r = jax.random.normal(kr, y_ref.shape, dtype)

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
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 5, 6))
  ours = GroupedConv(6, (3, 3), feature_group_count=3, impl='loop')
  ref = nn.Conv(6, (3, 3), feature_group_count=3)
  p = ref.init(jax.random.PRNGKey(1), x)
  _close(jax.jit(ours.apply)(p, x), ref.apply(p, x), 2e-5, 'output')


@pytest.mark.slow
def test_grouped_conv_in_resnext_same_tree_and_gradients():
  from ce_jax.models import resnext
  kw = dict(cardinality=4, base_width=64, num_classes=3, stage_outputs=(16, 32, 64),
            stem_channels=8)
  ours, ref = resnext.ResNeXt29(conv=GroupedConv, layers='stock', **kw), resnext.ResNeXt29(layers='stock', **kw)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  v = ref.init(jax.random.PRNGKey(1), x)
  v_ours = ours.init(jax.random.PRNGKey(1), x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v_ours)
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree_util.tree_leaves(v),
                                                    jax.tree_util.tree_leaves(v_ours)))

  def grads(model):
    def loss(p):
      out, _ = model.apply({'params': p, 'batch_stats': v['batch_stats']}, x, train=True,
                           mutable=['batch_stats'])
      return jnp.sum(out * jnp.arange(3.0))
    return jax.jit(jax.grad(loss))(v['params'])

  for a, b in zip(jax.tree_util.tree_leaves(grads(ours)), jax.tree_util.tree_leaves(grads(ref))):
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
    GroupedConv(4, (3, 3), feature_group_count=2, impl='fast').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='chunk must be'):
    GroupedConv(4, (3, 3), feature_group_count=2, chunk=0).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='must divide'):
    GroupedConv(6, (3, 3), feature_group_count=4).init(jax.random.PRNGKey(0), x)


# ------------------------------------------------------------------------------------------------
# FastBatchNorm


def _bn_pair(**kw):
  return FastBatchNorm(**kw), nn.BatchNorm(**kw)


@pytest.mark.parametrize('kw,shape', [
    (dict(momentum=0.9), (8, 5, 5, 6)),
    (dict(momentum=0.8, epsilon=1e-3, use_fast_variance=False), (6, 4, 4, 3)),
    (dict(axis=1, use_scale=False), (4, 5, 3, 3)),
    (dict(use_bias=False), (16, 7)),
])
def test_fast_batchnorm_train_and_eval_match_flax(kw, shape):
  ours, ref = _bn_pair(**kw)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = 3.0 * jax.random.normal(k1, shape) + 1.5
  v, v_ref = ours.init(k2, x, use_running_average=False), ref.init(k2, x, use_running_average=False)
  assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(jnp.shape, v_ref)
  params = jax.tree_util.tree_map(lambda a: a + jax.random.normal(k3, a.shape), v['params'])
  stats, stats_ref = v['batch_stats'], v_ref['batch_stats']
  for step in range(2):  # running averages over two training steps
    xs = x * (1 + step) - step
    y, new = ours.apply({'params': params, 'batch_stats': stats}, xs, use_running_average=False,
                        mutable=['batch_stats'])
    y_ref, new_ref = ref.apply({'params': params, 'batch_stats': stats_ref}, xs,
                               use_running_average=False, mutable=['batch_stats'])
    _close(y, y_ref, 2e-5, 'train output')
    for name in ('mean', 'var'):
      _close(new['batch_stats'][name], new_ref['batch_stats'][name], 2e-5, name)
    stats, stats_ref = new['batch_stats'], new_ref['batch_stats']
  y = ours.apply({'params': params, 'batch_stats': stats}, x, use_running_average=True)
  y_ref = ref.apply({'params': params, 'batch_stats': stats}, x, use_running_average=True)
  _close(y, y_ref, 2e-5, 'eval output')

  r = jax.random.normal(k3, x.shape)

  def grads(mod):
    def loss(p, x):
      out, _ = mod.apply({'params': p, 'batch_stats': stats}, x, use_running_average=False,
                         mutable=['batch_stats'])
      return jnp.sum(out * r)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  (gp, gx), (gp_ref, gx_ref) = grads(ours), grads(ref)
  _close(gx, gx_ref, 2e-5, 'input gradient')
  for name in gp:
    _close(gp[name], gp_ref[name], 2e-5, f'{name} gradient')


def test_fast_batchnorm_axis_name_under_vmap():
  """Cross-replica statistics (pmap's axis_name) checked with vmap(axis_name=...)."""
  ours, ref = _bn_pair(axis_name='batch', momentum=0.9)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 2, 2, 5)) * 2 + 1  # 3 "devices"
  v = ref.init(jax.random.PRNGKey(1), x[0], use_running_average=False)
  r = jax.random.normal(jax.random.PRNGKey(2), x.shape)

  def step(mod):
    def per_device(x, r):
      def loss(p, x):
        out, new = mod.apply({'params': p, 'batch_stats': v['batch_stats']}, x,
                             use_running_average=False, mutable=['batch_stats'])
        return jnp.sum(out * r), (out, new)
      return jax.grad(loss, argnums=(0, 1), has_aux=True)(v['params'], x)
    return jax.vmap(per_device, axis_name='batch')(x, r)

  (gp, gx), (y, new) = step(ours)
  (gp_ref, gx_ref), (y_ref, new_ref) = step(ref)
  _close(y, y_ref, 2e-5, 'output')
  _close(gx, gx_ref, 2e-5, 'input gradient')
  for name in ('scale', 'bias'):
    _close(gp[name], gp_ref[name], 2e-5, name)
  for name in ('mean', 'var'):
    _close(new['batch_stats'][name], new_ref['batch_stats'][name], 2e-5, name)


def test_fast_batchnorm_bfloat16_and_float64():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 3, 4))
  ours, ref = _bn_pair(dtype=jnp.bfloat16)
  v = ref.init(jax.random.PRNGKey(1), x, use_running_average=False)
  xb = x.astype(jnp.bfloat16)
  y, s = ours.apply(v, xb, use_running_average=False, mutable=['batch_stats'])
  y_ref, s_ref = ref.apply(v, xb, use_running_average=False, mutable=['batch_stats'])
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  _close(y, y_ref, 2e-2, 'bfloat16 output')
  _close(s['batch_stats']['var'], s_ref['batch_stats']['var'], 1e-5, 'bfloat16 var')
  with enable_x64():
    ours, ref = _bn_pair(param_dtype=jnp.float64)
    x64 = x.astype(jnp.float64)
    v = ref.init(jax.random.PRNGKey(1), x64, use_running_average=False)
    g = jax.grad(lambda x: jnp.sum(ours.apply(v, x, use_running_average=False,
                                              mutable=['batch_stats'])[0] ** 3))(x64)
    g_ref = jax.grad(lambda x: jnp.sum(ref.apply(v, x, use_running_average=False,
                                                 mutable=['batch_stats'])[0] ** 3))(x64)
    assert g.dtype == jnp.float64
    _close(g, g_ref, 1e-11, 'float64 input gradient')


def test_resnext_defaults_to_fast_layers_with_stock_numerics():
  from ce_jax.models import registry, resnext
  kw = dict(cardinality=3, base_width=64, num_classes=4, stage_outputs=(12, 24, 48),
            stem_channels=8)
  fast, stock = resnext.ResNeXt29(**kw), resnext.ResNeXt29(layers='stock', **kw)
  assert fast.layers == 'fast' and resnext.layer_modules('fast')[0] is GroupedConv
  assert resnext.layer_modules('stock') == (nn.Conv, nn.BatchNorm)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  v = stock.init(jax.random.PRNGKey(1), x)
  v_fast = fast.init(jax.random.PRNGKey(1), x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v_fast)
  for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(v_fast)):
    assert a.shape == b.shape and bool(jnp.all(a == b))  # same init, same keys
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
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 6))
  ours = GroupedConv(9, (3, 3), strides=2, padding='SAME', feature_group_count=3, impl='loop')
  ref = nn.Conv(9, (3, 3), strides=2, padding='SAME', feature_group_count=3)
  p = ref.init(jax.random.PRNGKey(1), x)
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
  p = ref.init(jax.random.PRNGKey(2), x)
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
  from ce_jax.models import registry, wrn
  kw = dict(depth=10, widen_factor=1, num_classes=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  fast, stock = wrn.WideResNet(**kw), wrn.WideResNet(layers='stock', **kw)
  pair, calls = _counting_layers()
  custom = registry.get('wrn', layers=pair, **kw)
  assert fast.layers == 'fast' and custom.layers == pair
  v = stock.init(jax.random.PRNGKey(1), x)
  for model in (fast, custom):   # the same variables (names, shapes, values) whatever the layers
    v2 = model.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_structure(v2) == jax.tree_util.tree_structure(v)
    for a, b in zip(jax.tree_util.tree_leaves(v2), jax.tree_util.tree_leaves(v)):
      assert a.shape == b.shape and bool(jnp.all(a == b))
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
  wrn.WideResNet(conv=nn.Conv, layers=pair2, **kw).init(jax.random.PRNGKey(1), x)
  assert calls2 == [c for c in expected if c[0] == 'bn']
  assert registry.get('wrn', layers='stock', **kw).layers == 'stock'
  with pytest.raises(ValueError, match=r"layers must be one of fast, stock or a .* got 'slow'"):
    registry.get('wrn', layers='slow', **kw)
  with pytest.raises(ValueError, match=r'layers must be one of .* got \(1, 2\)'):
    wrn.WideResNet(layers=(1, 2), **kw)


def test_resnext_takes_a_layers_pair():
  from ce_jax.models import resnext
  kw = dict(cardinality=2, base_width=64, num_classes=3, stage_outputs=(8, 16, 32),
            stem_channels=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  pair, calls = _counting_layers()
  custom, fast = resnext.ResNeXt29(layers=pair, **kw), resnext.ResNeXt29(**kw)
  v = fast.init(jax.random.PRNGKey(1), x)
  v2 = custom.init(jax.random.PRNGKey(1), x)
  assert jax.tree_util.tree_structure(v2) == jax.tree_util.tree_structure(v)
  # 1 stem + 9 blocks x 3 convs + 2 shortcuts (stages 2, 3; stage 1 keeps 8 channels); as many
  # BatchNorms.
  assert sum(c[0] == 'conv' for c in calls) == sum(c[0] == 'bn' for c in calls) == 30
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
    v = bn.init(jax.random.PRNGKey(0), x)
    y, _ = bn.apply(v, x, mutable=['batch_stats'])
    return float(np.max(np.abs(np.asarray(y, np.float64) - ref)))

  accurate = error() if module == 'fast' else error(use_fast_variance=False)
  one_pass = error(use_fast_variance=True)
  assert accurate < 2e-4, accurate           # a float32 ulp of 30 is 2e-6; the spread is 0.05
  assert one_pass > 10 * accurate, (one_pass, accurate)


def test_resnext_train_mode_float32_matches_float64():
  """The whole model in training mode: float32 logits agree with the float64 computation."""
  from ce_jax.models import resnext
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
  with enable_x64():
    m64 = resnext.resnext('resnext29', cardinality=2, base_width=4, num_classes=10,
                          dtype=jnp.float64)
    v = m64.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float64), train=False)
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
    y64, _ = m64.apply(v, jnp.asarray(x, jnp.float64), train=True, mutable=['batch_stats'])
    y64 = np.asarray(y64)
  m32 = resnext.resnext('resnext29', cardinality=2, base_width=4, num_classes=10)
  v32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), v)
  y32, _ = m32.apply(v32, x, train=True, mutable=['batch_stats'])
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
