"""Tests of parameter / FLOP accounting against the paper's tables and independent references."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ce_jax.design import accounting, blocks
from ce_jax.models import registry, resnext

# The paper's parameter columns, millions: (model, C, d, classes, M params).
PAPER_TABLE = [
    ('resnext29', 1, 128, 10, 13.78), ('resnext29', 3, 64, 10, 13.35),
    ('resnext29', 37, 10, 10, 13.74), ('resnext29', 10, 10, 10, 4.22),
    ('resnext29', 44, 8, 10, 12.71), ('resnext29', 60, 6, 10, 12.57),
    ('resnext29', 1, 128, 1000, 14.79), ('resnext29', 3, 64, 1000, 14.36),
    ('resnext29', 37, 10, 1000, 14.76), ('resnext29', 10, 10, 1000, 5.24),
    ('resnext29', 3, 40, 1000, 7.99),
    ('resnext38', 1, 96, 1000, 37.50), ('resnext38', 2, 64, 1000, 38.98),
    ('resnext38', 22, 10, 1000, 36.25), ('resnext38', 8, 10, 1000, 16.27),
    ('resnext38', 1, 128, 1000, 57.79), ('resnext38', 3, 64, 1000, 56.05),
    ('resnext38', 37, 10, 1000, 57.67), ('resnext38', 10, 10, 1000, 19.13),
]


def _x(size, batch=1):
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def test_paper_table_closed_form_to_0_01m():
  for name, c, d, k, expected in PAPER_TABLE:
    got = accounting.resnext_params(name, c, d, k) / 1e6
    assert abs(got - expected) <= 0.0051, (name, c, d, k, got, expected)


@pytest.mark.parametrize('name, c, d, k, expected', PAPER_TABLE[::3] + [PAPER_TABLE[-2]])
def test_paper_table_module_eval_shape(name, c, d, k, expected):
  model = registry.get(name, cardinality=c, base_width=d, num_classes=k)
  size = accounting.default_image_size(name)
  pc = accounting.count_params(model, _x(size), train=False)
  assert abs(pc.params / 1e6 - expected) <= 0.0051
  cf = accounting.resnext_cost(accounting.resnext_config(name), c, d, k, size)
  assert pc.params == cf['params'] and pc.batch_stats == cf['batch_stats']
  assert sum(pc.by_scope.values()) == pc.params


def test_wrn_rows_of_the_appendix_tables():
  # Table 1 (ImageNet 32x32): WRN-28-10 37.1M, WRN-28-5 9.5M; Table 2 (64x64): WRN-36-5 37.6M.
  for depth, k, size, expected in ((28, 10, 32, 37.1), (28, 5, 32, 9.5), (36, 5, 64, 37.6)):
    model = registry.get('wrn', depth=depth, widen_factor=k, num_classes=1000)
    got = accounting.count_params(model, _x(size), train=False).params / 1e6
    assert abs(got - expected) < 0.05, (depth, k, got)
  # WRN-28-10 on CIFAR-10: 36.5M (Zagoruyko & Komodakis).
  model = registry.get('wrn', depth=28, widen_factor=10, num_classes=10)
  assert abs(accounting.count_params(model, _x(32), train=False).params / 1e6 - 36.48) < 0.01


def test_resnet50_and_resnext101_without_allocation():
  # Torchvision: ResNet-50 25,557,032; ResNeXt-50 32x4d 25,028,904; ResNeXt-101 32x8d 88,791,336.
  assert accounting.resnext_params('resnext50', 1, 64) == 25_557_032
  assert accounting.resnext_params('resnext50', 32, 4) == 25_028_904
  before = len(jax.live_arrays())
  model = registry.get('resnext101', cardinality=32, base_width=8)
  pc = accounting.count_params(model, _x(224), train=False)
  fc = accounting.count_flops(model, _x(224), train=False)
  assert pc.params == 88_791_336
  assert len(jax.live_arrays()) <= before + 2  # nothing of the 88M weights was materialized
  assert fc.total == accounting.resnext_flops('resnext101', 32, 8)
  assert abs(fc.total / 2e9 - 16.5) < 0.1  # ~16.5 G multiply-adds (ResNeXt paper)


def test_flops_independent_references():
  dense = nn.Dense(7)
  fc = accounting.count_flops(dense, jnp.zeros((3, 5)))
  assert fc.total == fc.dense == 2 * 3 * 5 * 7
  conv = nn.Conv(12, (3, 3), strides=(2, 2), feature_group_count=4, use_bias=False)
  fc = accounting.count_flops(conv, jnp.zeros((2, 9, 9, 8)))
  # output 2 x 5 x 5 x 12, each output sums 3*3*(8/4) products.
  assert fc.total == fc.conv == 2 * (2 * 5 * 5 * 12) * (9 * 2)


def test_table3_gflops():
  # Appendix Table 3 (CIFAR, 2 FLOPs per multiply-add): 4.19, 4.15, 4.20, 4.17 GFLOPs. The
  # paper's counter adds ~0.01 GFLOPs (elementwise work); convolutions and dense layers only here.
  for c, d, g in ((1, 128, 4.19), (3, 64, 4.15), (44, 8, 4.20), (60, 6, 4.17)):
    got = accounting.resnext_flops('resnext29', c, d, 10) / 1e9
    assert 0 <= g - got < 0.015, (c, d, got)


def test_module_flops_match_closed_form():
  for name, c, d, size in (('resnext29', 3, 64, 32), ('resnext38', 2, 8, 64),
                           ('resnext50', 4, 4, 64)):
    model = registry.get(name, cardinality=c, base_width=d, num_classes=7)
    fc = accounting.count_flops(model, _x(size), train=False)
    cf = accounting.resnext_cost(accounting.resnext_config(name), c, d, 7, size)
    assert fc.total == cf['flops'], name
    per_stage = {}
    for scope, f in fc.by_scope.items():
      key = scope.split('_block')[0] if scope.startswith('stage') else scope.split('_')[0]
      per_stage[key] = per_stage.get(key, 0) + f
    assert per_stage['stage1'] == cf['stage_flops']['stage1']
  # Batch of 4: 4x the FLOPs.
  model = registry.get('resnext29', cardinality=2, base_width=4, num_classes=10)
  assert (accounting.count_flops(model, _x(32, 4), train=False).total
          == 4 * accounting.resnext_flops('resnext29', 2, 4, 10))


def _block(m, n, in_ch, out_ch, stride):
  norm = lambda name: nn.BatchNorm(use_running_average=True, name=name)  # noqa: E731
  return resnext.Bottleneck(width=m * n, out_channels=out_ch, cardinality=m, strides=stride,
                            norm=norm)


@pytest.mark.parametrize('m, n, in_ch, out_ch, stride, size', [
    (5, 3, 256, 256, 1, 8), (4, 6, 64, 256, 1, 8), (3, 4, 256, 512, 2, 8)])
def test_block_closed_forms_beta_flops_and_fan_in(m, n, in_ch, out_ch, stride, size):
  block = _block(m, n, in_ch, out_ch, stride)
  x = jax.ShapeDtypeStruct((1, size, size, in_ch), jnp.float32)
  v = accounting.abstract_variables(block, x)['params']
  path = ('conv1', 'conv2', 'conv3')
  conv_weights = sum(int(np.prod(v[k]['kernel'].shape)) for k in path)
  assert conv_weights == m * blocks.bottleneck_path_params(n, in_ch, out_ch)
  fc = accounting.count_flops(block, x)
  path_flops = sum(f for s, f in fc.by_scope.items() if s.split('/')[-1] in path)
  assert path_flops == m * accounting.bottleneck_path_flops(n, in_ch, out_ch, size, stride)
  if stride == 1:  # FLOPs of a stride-1 path are 2 H W beta(n)
    assert path_flops == m * 2 * size * size * blocks.bottleneck_path_params(n, in_ch, out_ch)
  # S(n): 1/fan-in of each conv of ONE path, from the kernel shapes (kh, kw, in/groups, out);
  # a path's share of the final 1x1 conv reads the n channels of that path (in = m n = D).
  shapes = [v[k]['kernel'].shape for k in path]
  per_path_in = [shapes[0][2], shapes[1][2], shapes[2][2] // m]
  assert per_path_in == [in_ch, n, n]
  s_channels = sum(1.0 / c for c in per_path_in)
  s_kernel = sum(1.0 / (s[0] * s[1] * c) for s, c in zip(shapes, per_path_in))
  np.testing.assert_allclose(s_channels, blocks.bottleneck_fan_in_sum(n, in_ch, 'channels'))
  np.testing.assert_allclose(s_kernel, blocks.bottleneck_fan_in_sum(n, in_ch, 'kernel'))


def test_dense_closed_forms_match_module():
  widths = (7, 5, 3)
  model = registry.get('dense', widths=widths, num_outputs=2)
  x = jnp.zeros((1, 11))
  assert (accounting.count_params(model, x).params
          == accounting.dense_params(11, widths, 2)
          == blocks.dense_member_params(11, widths, 2))
  assert accounting.count_flops(model, x).total == accounting.dense_flops(11, widths, 2)
  ens = registry.get('dense_ensemble', m=4, widths=widths, num_outputs=2)
  assert accounting.count_params(ens, x).params == accounting.dense_params(11, widths, 2, m=4)
  assert accounting.count_flops(ens, x).total == accounting.dense_flops(11, widths, 2, m=4)
  np.testing.assert_allclose(blocks.dense_uniform_params(48, 748, 6, 1), 748 * 48 + 4 * 48**2 + 48)


def test_resnext_cost_is_affine_in_cardinality():
  cfg = accounting.resnext_config('resnext29')
  ms = np.arange(1, 6)
  p = accounting.resnext_cost(cfg, ms, 10, 10)['params']
  assert np.all(np.diff(p, 2) == 0)
  assert [int(q) for q in p] == [accounting.resnext_params('resnext29', int(m), 10, 10)
                                 for m in ms]


def test_flop_rule_registry():
  """count_flops counts what has a rule: the built-in conv / dot rules, and any primitive or
  custom-call target registered with register_flop_rule (replaced by a second registration)."""
  assert accounting.flop_rule('conv_general_dilated')[0] == 'conv'
  assert accounting.flop_rule('dot_general')[0] == 'dense'
  assert accounting.flop_rule('ffi_call', 'ce_test_no_such_target') is None
  out = jax.ShapeDtypeStruct((4, 3), jnp.float32)

  class Calls(nn.Module):   # a matmul-like custom call and an unregistered one, named scopes
    @nn.compact
    def __call__(self, x):
      y = jax.ffi.ffi_call('ce_test_matmul', out)(x)
      z = jax.ffi.ffi_call('ce_test_unregistered', out)(x)
      return nn.Dense(2, name='head')(y + z)

  x = jnp.zeros((4, 5))
  dense = 2 * 4 * 3 * 2
  before = accounting.count_flops(Calls(), x)
  assert before == accounting.FlopCount(dense, 0, dense, {'head': dense})   # no rule: not counted

  def matmul(e):   # (4, 5) -> (4, 3): 2 FLOPs per multiply-add, 5 per output
    return 2 * int(np.prod(e.outvars[0].aval.shape)) * e.invars[0].aval.shape[-1]

  accounting.register_flop_rule('ffi_call', matmul, target='ce_test_matmul', kind='dense')
  assert accounting.flop_rule('ffi_call', 'ce_test_matmul') == ('dense', matmul)
  fc = accounting.count_flops(Calls(), x)
  assert fc == accounting.FlopCount(dense + 120, 0, dense + 120, {'head': dense, 'Calls': 120})
  # Inside a scan the rule counts once per iteration; a new registration replaces the old one.
  accounting.register_flop_rule('ffi_call', lambda e: 7, target='ce_test_matmul', kind='conv')
  jaxpr = jax.make_jaxpr(lambda x: lax.scan(
      lambda c, _: (c, jax.ffi.ffi_call('ce_test_matmul', out)(c)), x, None, length=6))(x)
  assert accounting.jaxpr_flops(jaxpr) == accounting.FlopCount(42, 42, 0, {'': 42})
  # The oneDNN module registers its custom calls itself (accounting does not know them).
  from ce_jax.models.native import onednn
  for target in onednn.TARGETS:
    assert accounting.flop_rule('ffi_call', target)[0] == 'conv'


@pytest.mark.parametrize('args, kwargs, match', [
    (('', len), {}, "primitive must be a primitive name .*got ''"),
    (('ffi_call', len), {'target': ''}, "target must be None or a custom-call target name, got ''"),
    (('ffi_call', 3), {}, 'rule must be a callable eqn -> FLOPs, got int'),
    (('ffi_call', len), {'kind': 'sparse'}, "kind must be one of conv, dense; got 'sparse'"),
])
def test_register_flop_rule_rejects_bad_input(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    accounting.register_flop_rule(*args, **kwargs)
