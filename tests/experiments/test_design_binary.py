"""experiments/design.py on a block it has never seen (a new file in the current directory)."""

import json

import pytest

from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

BLOCK = '''
import flax.linen as nn

class Block(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.width, (3, 3), use_bias=False)(x))
    h = nn.relu(nn.Conv(self.width, (3, 3), use_bias=False)(h))
    return nn.Conv(x.shape[-1], (1, 1), use_bias=False)(h)

def factory(width):
  return Block(width)

def not_a_module(width):
  return 'block'

def rejects(width):
  raise TypeError('width must be even')

class Constant(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(3, (1, 1))(x)

def constant(width):
  return Constant(width)

class NoWeights(nn.Module):
  width: int

  def __call__(self, x):
    return x * self.width

def no_weights(width):
  return NoWeights(width)

NOT_CALLABLE = 3
'''


@pytest.fixture
def run(binary, block_dir):
  """``experiments/design.py args`` run in ``block_dir``, where myblock.py is (no exit check)."""
  return lambda args: binary('design', *args, cwd=block_dir, check=False)


@pytest.fixture
def block_dir(tmp_path):
  (tmp_path / 'myblock.py').write_text(BLOCK)
  return tmp_path


def test_design_fits_alpha_and_solves_for_a_new_block(block_dir, run):
  out = block_dir / 'design.json'
  r = run(['--member=myblock:factory', '--input_shape=5,5,8', '--baseline_width=32',
           '--widths=4,8,16', '--trials=16', '--chunk_size=8', f'--json_out={out}',
           f'--plot_out={block_dir / "design.png"}'])
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'left' in r.stdout and 'primal' in r.stdout
  d = json.loads(out.read_text())
  for key in ('alpha', 'alpha_stderr', 'alpha_interval', 'fan_in_convention', 'points',
              'baseline', 'primal', 'dual'):
    assert key in d, key
  assert d['fan_in_convention'] == 'channels' and d['alpha'] > 0 and d['alpha_stderr'] > 0
  assert [p['width'] for p in d['points']] == [4, 8, 16]
  p0 = d['points'][0]
  assert p0['params'] == 9 * 8 * 4 + 9 * 4 * 4 + 4 * 8            # read from the module
  assert p0['fan_in_sum'] == pytest.approx(1 / 8 + 1 / 4 + 1 / 4)
  assert p0['ratio'] > 1 and p0['ratio_stderr'] > 0
  assert set(d['baseline']) >= {'n', 'm', 'params', 'flops'} and d['baseline']['n'] == 32
  for name in ('primal', 'dual'):
    des = d[name]
    assert set(des) >= {'n', 'm', 'm_int', 'params', 'flops', 'rho', 'variance_ratio', 'label',
                        'n_interval', 'm_interval'}
    assert des['n_interval'][0] <= des['n'] <= des['n_interval'][1]
    assert des['m_interval'][0] <= des['m_int'] <= des['m_interval'][1]
  assert d['primal']['n'] == d['dual']['n']
  assert (block_dir / 'design.png').stat().st_size > 1000


def test_design_with_given_alpha_from_a_py_path(block_dir, run):
  out = block_dir / 'given.json'
  r = run([f'--member={block_dir / "myblock.py"}:factory', '--input_shape=5,5,8',
           '--baseline_width=32', '--alpha=1.6', '--alpha_stderr=0.1', '--efficiency=flops',
           f'--json_out={out}'])
  assert r.returncode == 0, r.stderr[-2000:]
  d = json.loads(out.read_text())
  assert d['alpha'] == 1.6 and d['points'][0]['ratio'] is None
  assert d['alpha_interval'][0] < 1.6 < d['alpha_interval'][1]


def test_design_with_a_preset_builder_and_member_args(tmp_path, run):
  """``--member=ce_jax.design.presets:wrn_basic``: a builder (defaults only) called with member_args."""
  out = tmp_path / 'wrn.json'
  r = run(['--member=ce_jax.design.presets:wrn_basic', '--member_args=channels=6',
           '--baseline_width=12', '--widths=4,8', '--trials=4', '--chunk_size=4',
           f'--json_out={out}'])
  assert r.returncode == 0, r.stderr[-2000:]
  d = json.loads(out.read_text())
  assert d['member'] == 'wrn_basic_c6' and d['member_args'] == {'channels': 6}
  assert d['points'][0]['params'] == 18 * 6 * 4                 # beta(n) = 18 C n, C = 6
  assert d['points'][0]['fan_in_sum'] == pytest.approx(1 / 6 + 1 / 4)
  assert d['baseline']['params'] == 18 * 6 * 12
  assert d['intercept'] == d['fits']['channels']['intercept']    # the fitted law is solved


@pytest.mark.parametrize('args, match', [
    (['--member=ce_jax.design.presets:wrn_basic', '--member_args=channels'], 'key=value'),
    (['--member=ce_jax.design.presets:wrn_basic', '--member_args=width=3'], "no parameter 'width'"),
    (['--member=ce_jax.design.presets:wrn_basic', '--member_args=channels=0'],
     'channels must be an integer >= 1'),
    (['--member=myblock:factory', '--member_args=channels=6'], 'applies to a preset builder'),
    (['--member=ce_jax.design.presets:wrn_basic', '--input_shape=5,5,8'], 'does not apply'),
])
def test_bad_member_args_exit_2_with_one_line(run, args, match):
  base = ['--baseline_width=12', '--widths=4,8', '--trials=4']
  r = run(args + base)
  assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
  err = [l for l in r.stderr.strip().splitlines() if 'error:' in l]
  assert len(err) == 1 and match in err[0], r.stderr[-1500:]
  assert 'Traceback' not in r.stderr


@pytest.mark.parametrize('args, match', [
    (['--member=nosuchmodule:factory'], 'cannot import'),
    (['--member=myblock:missing'], 'has no attribute'),
    (['--member=myblock:NOT_CALLABLE'], 'is not callable'),
    (['--member=myblock:not_a_module'], 'must return a flax.linen.Module'),
    (['--member=myblock:rejects'], 'rejected width 32: TypeError: width must be even'),
    (['--member=myblock:no_weights'], 'has no weight layer'),
    (['--member=myblock:constant'], 'does not depend on the width'),
    (['--member=myblock'], 'must be MODULE:NAME'),
    (['--member=myblock:factory', '--input_shape=5,x'], 'input_shape'),
    (['--member=myblock:factory', '--trials=1'], 'trials must be an integer >= 2'),
    (['--member=myblock:factory', '--efficiency=speed'], 'efficiency must be one of'),
    (['--member=myblock:factory', '--alpha=1.6', '--alpha_from=a.json'], 'conflicting'),
    (['--preset=bottleneck', '--member=myblock:factory'], 'exactly one of'),
])
def test_bad_members_exit_2_with_one_line(run, args, match):
  base = ['--input_shape=5,5,8', '--baseline_width=32', '--widths=4,8', '--trials=4']
  given = {a.split('=')[0] for a in args}
  if '--preset' in given:
    given.add('--input_shape')
  r = run(args + [b for b in base if b.split('=')[0] not in given])
  assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
  err = [l for l in r.stderr.strip().splitlines() if 'error:' in l]
  assert len(err) == 1 and match in err[0], r.stderr[-1500:]
  assert 'Traceback' not in r.stderr
