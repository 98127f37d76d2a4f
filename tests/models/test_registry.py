"""Tests of the ResNeXt / WRN zoo and the model registry (tiny configurations, CPU)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.models import registry, resnext, wrn

# Tiny ResNeXt-29-like network: stage outputs 16/32/64, stem 8, base width 32 -> group widths
# floor(32 * out / 256) = 2, 4, 8 channels per group.
TINY = dict(stage_outputs=(16, 32, 64), stem_channels=8, base_width=32)


def _img(n=2, size=8, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, size, size, 3))


def _init(model, x, **kw):
  return model.init(jax.random.PRNGKey(0), x, **kw)


def _shapes(model, x, **kw):
  return jax.eval_shape(lambda r, x: model.init(r, x, **kw), jax.random.PRNGKey(0), x)


def _tiny(name='resnext29', cardinality=2, **kw):
  return registry.get(name, cardinality=cardinality, num_classes=5, **{**TINY, **kw})


def test_names_and_unknown_name_lists_valid_names():
  assert set(registry.names()) >= {'resnext29', 'resnext38', 'resnext50', 'resnext101', 'wrn',
                                   'dense', 'dense_ensemble'}
  with pytest.raises(ValueError, match='valid names: .*resnext29') as e:
    registry.get('resnet9000')
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('kw, match', [
    (dict(cardinality=0), 'cardinality'),
    (dict(cardinality=-3), 'cardinality'),
    (dict(base_width=0), 'base_width'),
    (dict(num_classes=0), 'num_classes'),
    (dict(base_width=4, stage_outputs=(16, 32, 64)), 'too small for stage 1'),
    (dict(foo=3), 'unknown hyperparameter'),
])
def test_bad_hyperparameters_one_line_value_error(kw, match):
  with pytest.raises(ValueError, match=match) as e:
    registry.get('resnext29', **kw)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('kw, match', [(dict(depth=27), 'depth'), (dict(widen_factor=0),
                                                                     'widen_factor')])
def test_bad_wrn_hyperparameters(kw, match):
  with pytest.raises(ValueError, match=match):
    registry.get('wrn', **kw)


def test_dense_models_registered():
  m = registry.get('dense', widths=(4, 3))
  e = registry.get('dense_ensemble', m=3, widths=(4, 3))
  x = jnp.ones((2, 5))
  assert m.apply(m.init(jax.random.PRNGKey(0), x), x).shape == (2, 1)
  assert e.apply(e.init(jax.random.PRNGKey(0), x), x).shape == (2, 1)


def test_resnext_structure_grouped_convs_no_biases_shortcuts():
  model = _tiny(cardinality=2)
  v = _shapes(model, _img(), train=False)
  p = v['params']
  assert set(v) == {'params', 'batch_stats'}
  b = p['stage1_block1']
  # Grouped 3x3: kernel (3, 3, D / C, D) with D = C * floor(d * out / 256) = 2 * 2.
  assert b['conv2']['kernel'].shape == (3, 3, 2, 4)
  assert b['conv1']['kernel'].shape == (1, 1, 8, 4)
  assert b['conv3']['kernel'].shape == (1, 1, 4, 16)
  # Projection shortcut only where in != out (first block of each stage).
  assert 'shortcut_conv' in b and 'shortcut_bn' in b
  assert 'shortcut_conv' not in p['stage1_block2']
  assert 'shortcut_conv' in p['stage2_block1']
  assert p['stage3_block1']['conv2']['kernel'].shape == (3, 3, 8, 16)
  # No conv biases anywhere; the classifier has one; BN has scale and bias.
  flat = jax.tree_util.tree_flatten_with_path(p)[0]
  for path, leaf in flat:
    keys = [k.key for k in path]
    if keys[-1] == 'bias':
      assert keys[-2].startswith('bn') or 'bn' in keys[-2] or keys[-2] == 'classifier', keys
  assert p['classifier']['bias'].shape == (5,)
  assert set(b['bn1']) == {'scale', 'bias'}


def test_resnext_train_eval_modes_and_batch_stats():
  model = _tiny(cardinality=2)
  x = _img()
  v = _init(model, x, train=False)
  y_eval = model.apply(v, x, train=False)
  assert y_eval.shape == (2, 5) and y_eval.dtype == jnp.float32
  assert np.all(np.isfinite(y_eval))
  y_train, upd = model.apply(v, x, train=True, mutable=['batch_stats'])
  assert y_train.shape == (2, 5)
  old = v['batch_stats']['stem_bn']['mean']
  new = upd['batch_stats']['stem_bn']['mean']
  assert not np.allclose(old, new)  # running statistics move in train mode
  # Eval mode uses running statistics: independent of the other batch elements.
  y1 = model.apply(v, x[:1], train=False)
  np.testing.assert_allclose(y1, y_eval[:1], rtol=1e-4, atol=1e-5)
  assert not np.allclose(y_train, y_eval, atol=1e-3)  # batch statistics, not running ones


def test_he_normal_fan_in_init():
  block = resnext.Bottleneck(width=4 * 32, out_channels=256, cardinality=4,
                             norm=lambda name: nn.BatchNorm(use_running_average=True, name=name))
  params = _init(block, jnp.zeros((1, 4, 4, 256)))['params']
  k = params['conv2']['kernel']  # (3, 3, D/C, D), fan-in 9 * D / C
  assert k.shape == (3, 3, 32, 128)
  np.testing.assert_allclose(np.std(k), np.sqrt(2.0 / (9 * 32)), rtol=0.05)
  np.testing.assert_allclose(np.mean(k), 0.0, atol=0.01)
  k1 = params['conv1']['kernel']
  np.testing.assert_allclose(np.std(k1), np.sqrt(2.0 / 256), rtol=0.05)


def test_grouped_conv_is_a_block_ensemble():
  """The C-group 3x3 conv equals C independent convs on channel slices (paper Algorithm 2)."""
  C, n = 3, 2
  conv = nn.Conv(C * n, (3, 3), feature_group_count=C, use_bias=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 5, C * n))
  v = conv.init(jax.random.PRNGKey(1), x)
  y = conv.apply(v, x)
  k = v['params']['kernel']
  for j in range(C):
    single = nn.Conv(n, (3, 3), use_bias=False)
    yj = single.apply({'params': {'kernel': k[..., j * n:(j + 1) * n]}},
                      x[..., j * n:(j + 1) * n])
    np.testing.assert_allclose(y[..., j * n:(j + 1) * n], yj, rtol=1e-5, atol=1e-5)


def test_imagenet_stem_and_resnext_variants_shapes():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  for name, stage3 in (('resnext38', 3), ('resnext50', 6), ('resnext101', 23)):
    model = registry.get(name, cardinality=2, base_width=32, stage_outputs=(16, 32, 64, 128),
                         num_classes=3, stem_channels=8)
    v = _shapes(model, x, train=False)
    y = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    assert y.shape == (1, 3)
    assert len([k for k in v['params'] if k.startswith('stage3_')]) == stage3
    assert len([k for k in v['params'] if k.startswith('stage4_')]) == 3
    stem = (3, 3, 3, 8) if name == 'resnext38' else (7, 7, 3, 8)
    assert v['params']['stem_conv']['kernel'].shape == stem


def test_conv_module_is_swappable_without_renaming_params():
  calls = []

  class CountingConv(nn.Conv):
    def __call__(self, x):
      calls.append(self.feature_group_count)
      return super().__call__(x)

  ref = _tiny()
  swapped = _tiny(conv=CountingConv)
  x = _img(1)
  v = _init(ref, x)
  v2 = _shapes(swapped, x)
  assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v2)
  np.testing.assert_allclose(ref.apply(v, x), swapped.apply(v, x), rtol=1e-6)
  assert 2 in calls  # the grouped convs went through the swapped module


def test_dtype_option_bfloat16_compute_float32_params():
  model = _tiny(dtype=jnp.bfloat16)
  x = _img(1)
  v = _shapes(model, x)
  assert v['params']['stage1_block1']['conv2']['kernel'].dtype == jnp.float32
  y = model.apply(_init(model, x), x)
  assert y.dtype == jnp.float32 and np.all(np.isfinite(y))


def test_wrn_structure_and_forward():
  model = registry.get('wrn', depth=10, widen_factor=1, num_classes=4)
  x = _img(2, 8)
  v = _init(model, x)
  p = v['params']
  assert p['stem_conv']['kernel'].shape == (3, 3, 3, 16)
  assert p['stage3_block1']['conv1']['kernel'].shape == (3, 3, 32, 64)
  assert 'shortcut_conv' in p['stage2_block1'] and 'shortcut_conv' not in p['stage1_block1']
  assert 'bias' not in p['stage1_block1']['conv1']
  y, upd = model.apply(v, x, train=True, mutable=['batch_stats'])
  assert y.shape == (2, 4) and 'final_bn' in upd['batch_stats']
  assert wrn.wrn_stages(28) == (3, 4) and wrn.wrn_stages(36) == (4, 4)


def test_stage_width_rule():
  assert resnext.stage_width(1, 128, 256) == 128
  assert resnext.stage_width(37, 10, 1024) == 37 * 40
  assert resnext.stage_width(3, 64, 512) == 3 * 128
  assert resnext.stage_width(60, 6, 256) == 360
