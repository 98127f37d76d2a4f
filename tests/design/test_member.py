"""Members: accounting read from the module equals the closed forms; layers; bad factories."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ce_jax.design import accounting, blocks, member, presets
from ce_jax.models.layers import GroupedConv


def test_dense_member_counts_equal_closed_forms_at_every_width():
  n = np.arange(1, 257)
  p = member.profile(presets.dense(6, 748), list(n))
  np.testing.assert_array_equal(p.params, blocks.dense_uniform_params(n, 748, 6))
  np.testing.assert_array_equal(p.flops, 2 * blocks.dense_uniform_params(n, 748, 6))
  for conv in member.FAN_IN_CONVENTIONS:   # no spatial taps: both conventions agree
    np.testing.assert_allclose(p.fan_in_sum[conv], blocks.dense_uniform_fan_in_sum(n, 6),
                               rtol=1e-14)


def test_heterogeneous_dense_member_counts():
  widths = np.array([[3, 5, 7], [10, 20, 30], [64, 32, 16]])
  p = member.profile(presets.dense(4, 50, num_outputs=3), widths)
  for i, w in enumerate(widths):
    assert p.params[i] == blocks.dense_member_params(50, tuple(w), 3)
    assert p.fan_in_sum['channels'][i] == pytest.approx(blocks.dense_fan_in_sum(tuple(w)))


@pytest.mark.parametrize('conv', ['channels', 'kernel'])
def test_bottleneck_path_counts_equal_closed_forms_at_every_width(conv):
  n = np.arange(1, 257)
  p = member.profile(presets.bottleneck(), list(n))
  np.testing.assert_array_equal(p.params, blocks.bottleneck_path_params(n, 256, 256))
  np.testing.assert_array_equal(p.flops, accounting.bottleneck_path_flops(n, 256, 256, spatial=3))
  np.testing.assert_allclose(p.fan_in_sum[conv],
                             blocks.bottleneck_fan_in_sum(n.astype(float), 256, conv), rtol=1e-14)


def test_affine_model_equals_exact_traces():
  """The fast model and tracing every width give identical counts."""
  b = presets.bottleneck(in_channels=16, out_channels=8)
  fast = member.profile(b, list(range(1, 20)))
  for w in (1, 7, 19):
    s = member.trace_structure(b.build(w), b.example_input(), b.kwargs)
    c = member._counts_from_dims(s, s.dims()[None, :], b.reads_data)  # pylint: disable=protected-access
    assert c.params[0] == fast.params[w - 1] and c.flops[0] == fast.flops[w - 1]
    assert c.fan_in_sum['kernel'][0] == pytest.approx(fast.fan_in_sum['kernel'][w - 1])


def test_network_counts_equal_resnext_closed_forms():
  b = presets.bottleneck('resnext29')
  ms = np.arange(1, 50)
  for d in (4, 10, 64):
    c = member.network_counts(b, ms, d)
    ref = accounting.resnext_cost(accounting.resnext_config('resnext29'), ms, d, 10, 32)
    np.testing.assert_array_equal(c['params'], ref['params'])
    np.testing.assert_array_equal(c['flops'], ref['flops'])
  assert member.network_counts(b, 37, 10)['params'] == 13_743_646      # ResNeXt-29 37x10d


class _FloorBlock(nn.Module):
  """A width-dependent structure (an extra layer above width 8) and a floor: not affine."""
  width: int

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(self.width // 3 + 1, use_bias=False)(x))
    if self.width > 8:
      h = nn.relu(nn.Dense(self.width, use_bias=False)(h))
    return nn.Dense(4, use_bias=False)(h)


def test_non_affine_member_falls_back_to_exact_traces():
  m = member.Member(_FloorBlock, (6,))
  p = member.profile(m, list(range(1, 30)))
  for w in (1, 8, 9, 29):
    k = w // 3 + 1
    params = 6 * k + (k * w + w * 4 if w > 8 else k * 4)
    s = 1 / 6 + (1 / k + 1 / w if w > 8 else 1 / k)
    assert p.params[w - 1] == params
    assert p.fan_in_sum['channels'][w - 1] == pytest.approx(s)


class _Attention(nn.Module):
  """Products of two activations are not weight layers; grouped convs count per group."""
  width: int

  @nn.compact
  def __call__(self, x):
    q = nn.Dense(self.width, use_bias=False, name='q')(x)
    k = nn.Dense(self.width, use_bias=False, name='k')(x)
    scores = jnp.einsum('bd,bd->b', q, k)[:, None]
    return nn.Dense(1, use_bias=False, name='out')(q * scores)


def test_layers_and_reads_data_rule():
  m = member.Member(_Attention, (12,))
  ls = member.layers(m, 5)
  assert [l.scope.split('/')[-1] for l in ls] == ['q', 'k', 'out']
  assert [l.fan_in_channels for l in ls] == [12, 12, 5] and [l.reads_data for l in ls] == [
      True, True, False]
  assert member.fan_in_sum(m, 5) == pytest.approx(1 / 12 + 1 / 12 + 1 / 5)
  as_network = member.Member(_Attention, (12,), reads_data=True)
  assert member.fan_in_sum(as_network, 5) == pytest.approx(1 / 5)


class _Grouped(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    h = GroupedConv(2 * self.width, (3, 3), feature_group_count=2, use_bias=False)(x)
    h = nn.Conv(self.width, (1, 1), strides=2, use_bias=False)(nn.relu(h))
    return nn.Conv(3, (3, 3), feature_group_count=1, use_bias=False)(h)


def test_grouped_conv_fan_in_is_per_group():
  m = member.Member(_Grouped, (8, 8, 4))
  ls = member.layers(m, 6)
  assert [(l.fan_in_channels, l.fan_in_kernel) for l in ls] == [(2, 18), (12, 12), (6, 54)]
  flops = accounting.count_flops(_Grouped(6), jnp.ones((1, 8, 8, 4))).total
  assert member.profile(m, [6]).flops[0] == flops


def test_scan_layers_count_once_per_application():
  class Scanned(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
      class Cell(nn.Module):
        width: int

        @nn.compact
        def __call__(self, h, _):
          return nn.relu(nn.Dense(self.width, use_bias=False)(h)), None
      h = nn.Dense(self.width, use_bias=False)(x)
      h, _ = nn.scan(Cell, variable_axes={'params': 0}, split_rngs={'params': True},
                     length=3)(self.width)(h, None)
      return nn.Dense(1, use_bias=False)(h)
  m = member.Member(Scanned, (5,))
  assert member.fan_in_sum(m, 4) == pytest.approx(1 / 5 + 3 / 4 + 1 / 4)
  assert member.profile(m, [4]).params[0] == 5 * 4 + 3 * 16 + 4


class _NoWeights(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return x * self.width


class _ConstantFanIn(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, use_bias=False)(jnp.tile(x, (1, 1)))


@pytest.mark.parametrize('make, match', [
    (lambda: member.Member('notcallable', (3,)), 'factory must be callable'),
    (lambda: member.validate(member.Member(lambda w: 'x', (3,)), 4),
     'must return a flax.linen.Module, got str'),
    (lambda: member.validate(member.Member(lambda w: 1 / 0, (3,)), 4),
     'rejected width 4: ZeroDivisionError'),
    (lambda: member.validate(member.Member(_NoWeights, (3,)), 4), 'has no weight layer'),
    (lambda: member.validate(member.Member(_ConstantFanIn, (3,)), 4),
     'does not depend on the width'),
    (lambda: member.validate(member.Member(lambda w: nn.Dense(w), (3, 0)), 4),
     r'input_shape\[1\] must be an integer >= 1'),
    (lambda: member.validate(member.Member(lambda w: nn.Conv(w, (3, 3)), (5,)), 4),
     'apply failed|init failed'),
    (lambda: member.profile(presets.dense(), [0, 3]), 'width must be an integer >= 1, got 0'),
    (lambda: member.Member(lambda w: nn.Dense(w), (3,), readout='mean'), 'readout must be'),
])
def test_bad_members_one_line_errors(make, match):
  with pytest.raises(ValueError, match=match) as e:
    make()
  assert '\n' not in str(e.value)


def test_readout_and_inputs():
  m = member.Member(lambda w: nn.Conv(w, (3, 3)), (5, 5, 2))
  key = jax.random.PRNGKey(0)
  y = jnp.arange(2 * 5 * 5 * 3.0).reshape(2, 5, 5, 3)
  np.testing.assert_array_equal(member.apply_readout(m, y), y[:, 2, 2, 0])
  c = np.asarray(member.example_batch(m, key, 2, 'center_pixel'))
  assert np.count_nonzero(c[0, ..., 0]) == 1 and c[0, 2, 2, 0] != 0
  k = np.asarray(member.example_batch(m, key, 1, 'constant'))
  np.testing.assert_array_equal(k[0], np.broadcast_to(k[0, 0, 0], (5, 5, 2)))
  with pytest.raises(ValueError, match='needs spatial dims'):
    member.example_batch(presets.dense(), key, 1, 'constant')


def test_accounting_of_a_huge_network_allocates_no_weights():
  """ResNeXt-50 96x8d (134M parameters) is counted from abstract values only (ResNeXt-50: half
  the blocks of ResNeXt-101 to trace for the count model, as huge)."""
  before = {id(a) for a in jax.live_arrays()}
  c = member.network_counts(presets.bottleneck('resnext50'), [96], 8)
  assert c['params'][0] == accounting.resnext_params('resnext50', 96, 8) > 100_000_000
  new = [a for a in jax.live_arrays() if id(a) not in before]
  assert all(a.size < 1_000_000 for a in new), [a.shape for a in new if a.size >= 1_000_000]
