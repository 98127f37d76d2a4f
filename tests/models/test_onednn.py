"""ce_jax.models.native.onednn: the compiled oneDNN convolution against lax.conv_general_dilated.

On the pinned stack (Linux x86-64, onednn-cpu-gomp installed by `make install`) the extension must
build and load: these tests fail, never skip, when it does not. Building is explicit
(``onednn.build()`` / ``python -m ce_jax.models.native.onednn build``): nothing compiles while a
model is traced, and without a build the convolutions take the XLA paths.
"""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import REPO
from conftest import enable_x64
from conftest import xla_flags
from ce_jax.design import accounting
from ce_jax.models.native import onednn
from ce_jax.models import layers
from ce_jax.models import resnext

DN = {1: ('NHC', 'HIO', 'NHC'), 2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(1e-30, np.max(np.abs(b))))


def test_extension_builds_loads_and_reports():
  path = onednn.build()   # explicit, as `make install` does; returns the existing build at once
  s = onednn.status()
  assert s['available'], s['error']
  assert s['library'] == str(path) and onednn.fallback_notice() is None
  assert s['onednn_version'].startswith('3.'), s
  assert os.path.exists(s['library']) and onednn.library_name() in s['library']


# (batch, spatial, groups, ci, co, kernel, strides, padding)
CASES = [
    (2, (9, 7), 3, 4, 5, (3, 3), (1, 1), ((1, 1), (1, 1))),
    (3, (8, 8), 5, 2, 3, (3, 3), (2, 2), ((1, 1), (1, 1))),
    (2, (9, 6), 1, 6, 4, (1, 1), (2, 2), ((0, 0), (0, 0))),
    (2, (10, 10), 2, 3, 3, (3, 5), (2, 1), ((0, 2), (2, 1))),
    (1, (8, 8), 4, 4, 4, (3, 3), (2, 2), ((0, 1), (0, 1))),
    (2, (6, 6), 37, 2, 2, (3, 3), (1, 1), ((1, 1), (1, 1))),
    (2, (11,), 4, 3, 2, (3,), (2,), ((1, 0),)),
    (1, (5, 4, 6), 2, 2, 3, (3, 1, 3), (1, 2, 1), ((1, 1), (0, 0), (2, 1))),
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: f'g{c[2]}k{c[5]}s{c[6]}p{c[7]}')
def test_forward_and_both_gradients_match_lax(case):
  n, sp, g, ci, co, k, strides, padding = case
  kx, kw, kr = jax.random.split(jax.random.PRNGKey(len(sp) * 10 + g), 3)
  x = jax.random.normal(kx, (n,) + sp + (g * ci,))
  w = jax.random.normal(kw, k + (ci, g * co))

  def ref(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN[len(sp)],
                                    feature_group_count=g, precision=lax.Precision.HIGHEST)

  y_ref, vjp_ref = jax.vjp(ref, x, w)
  r = jax.random.normal(kr, y_ref.shape)
  y, vjp = jax.vjp(lambda x, w: onednn.conv(x, w, strides, padding, g), x, w)
  assert y.shape == y_ref.shape == onednn.output_shape(x.shape, w.shape, strides, padding)
  assert _rel(y, y_ref) < 1e-5
  want_x, want_w = vjp_ref(r)
  for got, want in zip(vjp(r), (want_x, want_w)):   # the combined backward call
    assert got.shape == want.shape and _rel(got, want) < 1e-5
  # The two single-gradient calls (public API) agree too.
  assert _rel(onednn.conv_backward_data(r, w, x.shape, strides, padding, g), want_x) < 1e-5
  assert _rel(onednn.conv_backward_weights(x, r, w.shape, strides, padding, g), want_w) < 1e-5
  # jit and grad of a scalar loss go through the same custom VJP.
  g_x, g_w = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv(x, w, strides, padding, g) * r),
                              argnums=(0, 1)))(x, w)
  assert _rel(g_x, want_x) < 1e-5 and _rel(g_w, want_w) < 1e-5


def test_vmap_and_concurrent_independent_calls():
  g, strides, padding = 4, (1, 1), ((1, 1), (1, 1))
  xs = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 6, 6, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 8))

  def ref(x):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN[2],
                                    feature_group_count=g, precision=lax.Precision.HIGHEST)

  got = jax.jit(jax.vmap(lambda x: onednn.conv(x, w, strides, padding, g)))(xs)
  assert _rel(got, jax.vmap(ref)(xs)) < 1e-5
  # Several independent convolutions in one program (XLA may run them concurrently; the
  # library serializes them): every result is right.
  outs = jax.jit(lambda xs: [onednn.conv(xs[i], w, strides, padding, g) for i in range(3)])(xs)
  for i, o in enumerate(outs):
    assert _rel(o, ref(xs[i])) < 1e-5


def test_empty_batch_goes_to_xla():
  x, w = jnp.ones((0, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
  y, g = jax.value_and_grad(lambda w: jnp.sum(onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)), 2)))(w)
  assert float(y) == 0.0 and g.shape == w.shape and float(jnp.abs(g).max()) == 0.0


def test_bad_input_is_one_line_error():
  x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
  with pytest.raises(ValueError, match='padding >= 0'):
    onednn.conv(x, w, (1, 1), ((-1, 0), (0, 0)), 2)
  with pytest.raises(ValueError, match='groups 3 do not match'):
    onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)), 3)
  with pytest.raises(ValueError, match='larger than the padded input'):
    onednn.conv(jnp.ones((1, 2, 2, 4)), w, (1, 1), ((0, 0), (0, 0)), 2)
  with enable_x64():
    with pytest.raises(ValueError, match='float32 operands, got float64'):
      onednn.conv(x.astype(jnp.float64), w.astype(jnp.float64), (1, 1), ((1, 1), (1, 1)), 2)
  with pytest.raises(ValueError, match="impl='onednn' needs float32"):
    layers.GroupedConv(4, (3, 3), feature_group_count=2, impl='onednn',
                       dtype=jnp.bfloat16).init(jax.random.PRNGKey(0), x)


def test_build_errors_and_stale_builds(monkeypatch, tmp_path):
  name = onednn.library_name()
  src = tmp_path / 'onednn_conv.cc'
  src.write_text(onednn.SOURCE.read_text() + '\n// changed\n')
  monkeypatch.setattr(onednn, 'SOURCE', src)
  assert onednn.library_name() != name   # a changed source never loads the old binary
  monkeypatch.setattr(onednn, '_compiler', lambda: None)
  monkeypatch.setenv('CE_JAX_BUILD_DIR', str(tmp_path / 'build'))
  with pytest.raises(onednn.BuildError, match='no C.. compiler'):
    onednn.build()
  monkeypatch.setenv('CE_JAX_ONEDNN_ROOT', str(tmp_path))
  with pytest.raises(onednn.BuildError, match='oneDNN not found under'):
    onednn.build()


def test_compiler_fallback_chain(monkeypatch):
  # $CXX first, then g++ / c++, then zig's clang from the `cxx` extra (machines without g++).
  monkeypatch.setenv('CXX', sys.executable)
  assert onednn._compiler() == [sys.executable]
  monkeypatch.delenv('CXX')
  monkeypatch.setattr(onednn.shutil, 'which', lambda name: None)
  monkeypatch.setitem(sys.modules, 'ziglang', object())
  assert onednn._compiler() == [sys.executable, '-m', 'ziglang', 'c++']
  monkeypatch.setitem(sys.modules, 'ziglang', None)   # import fails
  assert onednn._compiler() is None


def test_choose_impl_prefers_onednn_on_cpu_float32():
  assert layers.choose_impl(1, 'cpu') == 'onednn'
  assert layers.choose_impl(37, 'cpu', padding=((1, 1), (1, 1))) == 'onednn'
  assert layers.choose_impl(4, 'cpu', dtype=jnp.bfloat16) == 'loop'
  assert layers.choose_impl(4, 'cpu', kernel_dilation=(2, 2)) == 'stock'
  assert layers.choose_impl(4, 'cpu', padding=((-1, 0), (0, 0))) == 'loop'
  assert layers.choose_impl(4, 'gpu') == 'stock'
  # Explicit requests are kept, except the loop formulations where they equal the plain conv.
  assert layers.choose_impl(4, 'cpu', impl='onednn') == 'onednn'
  for impl in ('stock', 'loop', 'grouped_loop', 'grouped_transposed'):
    assert layers.choose_impl(4, 'cpu', impl=impl) == impl
    assert layers.choose_impl(1, 'cpu', impl=impl) == 'stock'
    assert layers.choose_impl(4, 'cpu', input_dilation=(1, 2), impl=impl) == 'stock'
  # reference_convolutions() turns 'auto' into one lax convolution; explicit requests stay.
  with layers.reference_convolutions():
    assert layers.choose_impl(4, 'cpu') == 'stock'
    assert layers.choose_impl(4, 'cpu', impl='onednn') == 'onednn'
  assert layers.choose_impl(4, 'cpu') == 'onednn'
  with pytest.raises(ValueError, match=r"impl='onednn' needs .*got bfloat16, 2 spatial dims"):
    layers.choose_impl(4, 'cpu', dtype=jnp.bfloat16, impl='onednn')
  with pytest.raises(ValueError, match="impl='onednn' needs .*backend gpu"):
    layers.choose_impl(4, 'gpu', impl='onednn')
  with pytest.raises(ValueError, match=r"impl must be one of auto, onednn, .*; got 'fast'"):
    layers.choose_impl(4, 'cpu', impl='fast')


def test_supports_is_a_pure_check_of_the_case(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError('supports() must not build, load or run anything')
  for name in ('build', 'load', 'available', 'status'):
    monkeypatch.setattr(onednn, name, forbidden)
  monkeypatch.setattr(onednn.subprocess, 'run', forbidden)
  monkeypatch.setattr(onednn.ctypes, 'CDLL', forbidden)
  pads = ((1, 1), (1, 1))
  assert onednn.supports(jnp.float32, 2, pads, (1, 1), (1, 1), 'cpu') is True
  assert onednn.supports(jnp.float32, 3, pads + ((0, 0),), backend='cpu') is True
  assert onednn.supports(jnp.bfloat16, 2, pads, backend='cpu') is False
  assert onednn.supports(jnp.float32, 4, pads * 2, backend='cpu') is False
  assert onednn.supports(jnp.float32, 2, ((-1, 0), (0, 0)), backend='cpu') is False
  assert onednn.supports(jnp.float32, 2, pads, (1, 1), (2, 1), 'cpu') is False
  assert onednn.supports(jnp.float32, 2, pads, backend='gpu') is False


def test_environment_switch_values(monkeypatch):
  for value, on in (('0', False), ('off', False), ('False', False), ('no', False), ('1', True),
                    ('yes', True), ('', True), ('on', True)):
    monkeypatch.setenv('CE_JAX_ONEDNN', value)
    assert onednn.enabled() is on, value
  monkeypatch.delenv('CE_JAX_ONEDNN')
  assert onednn.enabled() is True
  monkeypatch.setenv('CE_JAX_ONEDNN', 'maybe')
  with pytest.raises(ValueError, match="CE_JAX_ONEDNN must be one of 0, .*got 'maybe'"):
    layers.choose_impl(4, 'cpu')


@pytest.mark.parametrize('strides', [(1, 1), (2, 2)])
@pytest.mark.parametrize('combined', [True, False])
def test_flop_rules_of_the_custom_calls(monkeypatch, strides, combined):
  """onednn registers a rule per custom call; accounting has no knowledge of them."""
  for target in onednn.TARGETS:
    kind, rule = accounting.flop_rule('ffi_call', target)
    assert kind == 'conv' and rule is onednn._FLOP_RULES[target]  # pylint: disable=protected-access
  monkeypatch.setattr(onednn, 'COMBINED_BACKWARD', combined)
  x, w, pad = jnp.ones((2, 8, 8, 8)), jnp.ones((3, 3, 2, 12)), ((1, 1), (1, 1))

  def ours(x, w):
    return jnp.sum(onednn.conv(x, w, strides, pad, 4))

  def ref(x, w):
    return jnp.sum(lax.conv_general_dilated(x, w, strides, pad, dimension_numbers=DN[2],
                                            feature_group_count=4))

  def flops(f):
    return accounting.jaxpr_flops(jax.make_jaxpr(f)(x, w))

  out = 2 * 8 * 8 // (strides[0] * strides[1]) * 12    # output elements
  fwd = 2 * out * 3 * 3 * 2                              # 2 FLOPs x (3 x 3 x 8/4) taps each
  assert flops(ours) == flops(ref) == accounting.FlopCount(fwd, fwd, 0, {'': fwd})
  grad_ours = flops(jax.grad(ours, argnums=(0, 1)))
  grad_ref = flops(jax.grad(ref, argnums=(0, 1)))
  # Forward + input gradient + kernel gradient: three times the multiply-adds.
  assert grad_ours.conv == grad_ours.total == 3 * fwd
  if strides == (1, 1):   # XLA's transposed convolutions count the same; strided, they count
    assert grad_ref.conv == grad_ours.conv   # the zeros of the dilated cotangent too
  else:
    assert grad_ref.conv > grad_ours.conv


@pytest.mark.parametrize('groups,stride,padding', [(1, 1, 'SAME'), (3, 2, ((2, 0), (1, 1))),
                                                   (10, 1, 'VALID'), (37, 2, 'SAME')])
def test_grouped_conv_onednn_equals_flax_conv(groups, stride, padding):
  kx, kr = jax.random.split(jax.random.PRNGKey(groups))
  x = jax.random.normal(kx, (2, 7, 6, groups * 2))
  kw = dict(features=groups * 3, kernel_size=(3, 3), strides=stride, padding=padding,
            feature_group_count=groups)
  ours, ref = layers.GroupedConv(impl='onednn', **kw), nn.Conv(**kw)
  p = ref.init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_structure(p)
  y_ref = ref.apply(p, x)
  r = jax.random.normal(kr, y_ref.shape)

  def grads(mod):
    return jax.jit(jax.grad(lambda p, x: jnp.sum(mod.apply(p, x) * r), argnums=(0, 1)))(p, x)

  assert _rel(ours.apply(p, x), y_ref) < 2e-5
  (gp, gx), (gp_ref, gx_ref) = grads(ours), grads(ref)
  assert _rel(gx, gx_ref) < 2e-5
  for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gp_ref)):
    assert _rel(a, b) < 2e-5


def test_resnext_uses_onednn_and_counts_the_same_flops():
  kw = dict(cardinality=4, base_width=64, num_classes=3, stage_outputs=(16, 32, 64),
            stem_channels=8)
  x = jnp.ones((1, 8, 8, 3))
  fast, stock = resnext.ResNeXt29(**kw), resnext.ResNeXt29(layers='stock', **kw)
  v = stock.init(jax.random.PRNGKey(0), x)
  jaxpr = jax.make_jaxpr(lambda v: fast.apply(v, x))(v)
  assert 'ce_onednn_conv_fwd' in str(jaxpr)
  f_fast, f_stock = accounting.count_flops(fast, x), accounting.count_flops(stock, x)
  assert f_fast.conv == f_stock.conv > 0 and f_fast.total == f_stock.total
  assert f_fast.by_scope == f_stock.by_scope


def _run(code, env):
  full = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', **env)
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                        text=True, env=full, timeout=300, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_pmap_over_two_cpu_devices_matches_lax():
  out = _run("""
      import jax, jax.numpy as jnp, numpy as np
      from jax import lax
      from ce_jax.models.native import onednn
      assert jax.device_count() == 2
      x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 6, 6, 8))
      w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 8))
      def loss(conv):
        def f(w, x):
          return lax.psum(jnp.sum(conv(x, w) ** 2), 'i')
        return jax.pmap(jax.grad(f), axis_name='i', in_axes=(None, 0))(w, x)
      ours = loss(lambda x, w: onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)), 4))
      ref = loss(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=4,
          precision=lax.Precision.HIGHEST))
      print(float(jnp.max(jnp.abs(ours - ref)) / jnp.max(jnp.abs(ref))))
  """, {'XLA_FLAGS': xla_flags('--xla_force_host_platform_device_count=2')})
  assert float(out.strip().splitlines()[-1]) < 1e-5


def test_avx2_gemm_path_under_jit_matches_lax():
  """oneDNN restricted to AVX2 (what an AVX2-only CPU runs; AVX-512 hosts pick other kernels):
  grouped convolutions with few channels per group take the gemm forward, whose im2col buffers
  live in the scratchpad. With oneDNN's library-managed scratchpad that forward crashed on a null
  buffer when XLA ran it from a jitted step; the extension passes its own scratchpad instead.
  The value and both gradients under jit match lax, and the log shows the gemm kernel ran."""
  out = _run("""
      import jax, jax.numpy as jnp, numpy as np
      from ce_jax.models.layers import GroupedConv
      for g, stride, padding in ((10, 1, 'SAME'), (37, 2, ((1, 1), (0, 2)))):
        x = np.random.default_rng(g).standard_normal((2, 7, 6, 2 * g)).astype(np.float32)
        r = None
        grads = []
        for impl in ('onednn', 'stock'):
          m = GroupedConv(3 * g, (3, 3), strides=stride, padding=padding,
                          feature_group_count=g, impl=impl)
          p = m.init(jax.random.key(0, impl='rbg'), x)
          if r is None:
            r = np.random.default_rng(g + 1).standard_normal(m.apply(p, x).shape).astype(np.float32)
          f = jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(m.apply(p, x) * r), argnums=(0, 1)))
          grads.append(jax.tree_util.tree_leaves((f(p, x), f(p, x))))
        err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, float(np.max(np.abs(np.asarray(b))))))
                  for a, b in zip(*grads))
        print('ERR', g, err)
  """, {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ONEDNN_VERBOSE': '1'})
  errs = [float(line.split()[2]) for line in out.splitlines() if line.startswith('ERR')]
  assert len(errs) == 2 and max(errs) < 2e-5, errs
  execs = [line for line in out.splitlines() if line.startswith('onednn_verbose,exec')]
  assert 'isa:Intel AVX2' in out, out[:2000]
  assert any('gemm' in line and 'forward_training' in line for line in execs), execs[:5]


def test_disabled_by_environment_falls_back():
  out = _run("""
      import warnings
      import jax, jax.numpy as jnp
      from ce_jax.models.native import onednn
      from ce_jax.models import layers
      x = jnp.ones((1, 6, 6, 4))
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        conv = layers.GroupedConv(4, (3, 3), feature_group_count=2)
        v = conv.init(jax.random.PRNGKey(0), x)
        assert 'ce_onednn' not in str(jax.make_jaxpr(conv.apply)(v, x))
      assert not [w for w in caught if 'oneDNN' in str(w.message)], caught   # on purpose: quiet
      try:
        layers.choose_impl(4, 'cpu', impl='onednn')
      except ValueError as e:
        print('error:', e)
      print(onednn.available(), onednn.status()['error'], layers.choose_impl(4, 'cpu'))
  """, {'CE_JAX_ONEDNN': '0'})
  error, last = out.strip().splitlines()[-2:]
  assert error.startswith("error: impl='onednn' needs") and 'disabled by CE_JAX_ONEDNN=0' in error
  assert last.split() == ['False', 'disabled', 'by', 'CE_JAX_ONEDNN=0', 'loop']


def test_unbuilt_extension_falls_back_and_only_an_explicit_build_compiles(tmp_path):
  """No library in the build directory: tracing a model neither compiles nor fails; the model
  takes the XLA paths (one warning saying how to build) with the same numbers; impl='onednn' is
  a one-line error. onednn.build() compiles, and the same process then uses the library; the
  command line of `make install` finds that build."""
  build_dir = tmp_path / 'build'
  env = {'CE_JAX_BUILD_DIR': str(build_dir)}
  out = _run("""
      import warnings
      import jax, jax.numpy as jnp, numpy as np
      from ce_jax.models.native import onednn
      from ce_jax.models import layers, resnext
      compiles = []
      real_run = onednn.subprocess.run
      def run(cmd, *a, **k):
        compiles.append(cmd)
        return real_run(cmd, *a, **k)
      onednn.subprocess.run = run
      assert onednn.supports(jnp.float32, 2, ((1, 1), (1, 1)))        # the case is supported
      kw = dict(cardinality=4, base_width=64, num_classes=3, stage_outputs=(16, 32, 64),
                stem_channels=8)
      x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
      model, stock = resnext.ResNeXt29(**kw), resnext.ResNeXt29(layers='stock', **kw)
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        v = model.init(jax.random.PRNGKey(1), x)
        jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(v))
        y_xla = model.apply(v, x)
      notes = [str(w.message) for w in caught if 'oneDNN' in str(w.message)]
      assert len(notes) == 1, notes
      assert 'python -m ce_jax.models.native.onednn build' in notes[0], notes
      assert compiles == [] and 'ce_onednn' not in jaxpr and 'conv_general_dilated' in jaxpr
      assert not onednn.available() and onednn.status()['error'].startswith('not built')
      y_stock = stock.apply(v, x)
      print('xla', float(np.max(np.abs(y_xla - y_stock)) / np.max(np.abs(y_stock))))
      try:
        layers.choose_impl(4, 'cpu', impl='onednn')
      except ValueError as e:
        print('error:', e)
      path = onednn.build()                                             # the explicit build
      assert len(compiles) == 1 and path.parent == onednn.pathlib.Path(%r), (compiles, path)
      assert onednn.available() and layers.choose_impl(4, 'cpu') == 'onednn'
      jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(v))
      y = model.apply(v, x)
      assert 'ce_onednn_conv_fwd' in jaxpr and len(compiles) == 1
      print('onednn', float(np.max(np.abs(y - y_stock)) / np.max(np.abs(y_stock))))
  """ % str(build_dir), env)
  lines = dict(line.split(' ', 1) for line in out.strip().splitlines()[-3:])
  assert float(lines['xla']) < 1e-5 and float(lines['onednn']) < 1e-5
  assert lines['error:'].startswith("impl='onednn' needs") and 'not built' in lines['error:']
  # `make install`'s command: finds the build just made (nothing to compile) and reports it.
  cli = subprocess.run([sys.executable, '-m', 'ce_jax.models.native.onednn', 'build'],
                       capture_output=True, text=True, timeout=300, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', **env))
  assert cli.returncode == 0, cli.stderr[-2000:]
  assert 'available=True' in cli.stdout and str(build_dir) in cli.stdout
  assert [p.name for p in build_dir.iterdir()] == [onednn.library_name()]
