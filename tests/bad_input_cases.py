"""The table of bad inputs: every binary in ``experiments/`` and the main public functions.

Shared by ``tests/experiments/test_bad_inputs.py`` (each case must be a clear one-line error) and the audit
``python -m tests.audit_inputs`` (classifies every case, whatever happens). A binary case runs
the binary as a user would, in a fresh directory holding a few fixture files, and is

* ``clear``: exit code 2, exactly one line on stderr ``<binary>.py: error: ...`` naming the bad
  value (every string of ``expect``), no traceback, no file written;
* ``unclear``: it failed otherwise (a traceback, exit code 1, several lines, the bad value not
  named, or files written before the error);
* ``silent``: exit code 0, the bad input accepted (silently wrong);
* ``hang``: still running at its timeout (killed);
* ``crash``: killed by a signal.

An API case calls a public function: ``clear`` is a ``ValueError`` whose message is one line
naming the bad value; another exception or a multi-line message is ``unclear``; a return is
``silent``.

Binary cases run in a fork server (:class:`ForkServer`): one process that imports JAX, Flax and
ce_jax once, then forks a child per case that runs the binary with ``runpy`` as ``__main__``
(its own exit code, stdout, stderr and timeout), so a case costs a fraction of a second instead
of the 3 s of a fresh interpreter. ``Spawn`` runs each case in a fresh interpreter instead.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, 'experiments')

KINDS = ('clear', 'unclear', 'silent', 'hang', 'crash')
KIND_NAMES = {'clear': 'clear one-line error', 'unclear': 'traceback or unclear',
              'silent': 'silently wrong (exit 0)', 'hang': 'hang (timeout)',
              'crash': 'crash (signal)'}

BINARIES = ('fit_alpha', 'search', 'design', 'model_info', 'ntk_convergence', 'ntk_dynamics',
            'ablation', 'train', 'demo', 'family_digits', 'benchmark_alpha',
            'benchmark_alpha_fit', 'benchmark_bn_accuracy', 'benchmark_conv',
            'benchmark_ensemble', 'benchmark_ntk', 'benchmark_train')


# ---------------------------------------------------------------------------------------------
# Fixture files every binary case finds in its directory ({tmp}).

FIXTURES = {
    'file': 'a plain file\n',
    'bad.json': '{"alpha": 1.6,\n',
    'noalpha.json': '{"beta": 1.6}\n',
    'negalpha.json': '{"alpha": -1.0, "alpha_stderr": 0.1}\n',
    'nanalpha.json': '{"alpha": NaN}\n',
    'stralpha.json': '{"alpha": "big"}\n',
    'list.json': '[1, 2]\n',
    'bad_cfg.py': 'def get_config(:\n  pass\n',
    'noget_cfg.py': 'X = 1\n',
    'none_cfg.py': 'def get_config():\n  pass\n',
    'raise_cfg.py': 'raise RuntimeError("broken config")\n',
    'mymember.py': ('NOT_CALLABLE = 5\n\n\ndef not_a_module(width):\n  return width\n'),
}


def make_fixtures(directory: str) -> None:
  os.makedirs(directory, exist_ok=True)
  for name, text in FIXTURES.items():
    with open(os.path.join(directory, name), 'w') as f:
      f.write(text)


def snapshot(directory: str) -> dict[str, tuple[int, float]]:
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in files + dirs:
      p = os.path.join(root, name)
      try:
        st = os.lstat(p)
      except OSError:
        continue
      out[os.path.relpath(p, directory)] = (st.st_size, st.st_mtime)
  return out


# ---------------------------------------------------------------------------------------------
# Cases


class BinaryCase(NamedTuple):
  binary: str
  args: tuple
  expect: tuple          # strings the error line must contain (the bad value, its flag)
  timeout: float = 90.0
  note: str = ''

  @property
  def id(self) -> str:
    text = ' '.join(self.args).replace('{tmp}/', '').replace('{tmp}', 'TMP')
    text = text.replace('{repo}/', '')
    return f'{self.binary} {text}'.strip()


class ApiCase(NamedTuple):
  name: str              # the function, e.g. 'alpha.fit_alpha'
  label: str             # what is bad
  call: Callable[[], Any]
  expect: tuple

  @property
  def id(self) -> str:
    return f'{self.name}: {self.label}'


def B(binary: str, *args: str, expect: Sequence[str] = (), timeout: float = 90.0,
      note: str = '') -> BinaryCase:
  return BinaryCase(binary, tuple(args), tuple(expect), timeout, note)


DIGITS = '--config={repo}/experiments/configs/digits.py'
TMPW = '--workdir={tmp}/run'


def _common(binary: str, int_flag: str, *required: str, outputs=('json_out',)):
  """Cases every binary gets: a non-number, an unknown flag, a positional argument and its
  output paths under a file / naming a directory."""
  cases = [
      B(binary, *required, f'--{int_flag}=abc', expect=(f'--{int_flag}=abc',)),
      B(binary, *required, '--no_such_flag=1', expect=('no_such_flag',)),
      B(binary, *required, 'stray_argument', expect=('stray_argument',)),
  ]
  for out in outputs:
    if out == 'workdir':
      cases += [B(binary, *required, '--workdir={tmp}/file', expect=('--workdir', 'file')),
                B(binary, *required, '--workdir={tmp}/file/sub', expect=('--workdir', 'file'))]
    else:
      ext = 'png' if out == 'plot_out' else 'json'
      cases += [B(binary, *required, f'--{out}={{tmp}}/file/out.{ext}', expect=(f'--{out}',
                                                                                 'file')),
                B(binary, *required, f'--{out}={{tmp}}', expect=(f'--{out}', 'directory'))]
  return cases


def _each(binary: str, *args: str, before: Sequence[str] = (), after: Sequence[str] = (),
          dashes: bool = False, quoted: bool = False) -> list[BinaryCase]:
  """One case per ``--flag=value`` of ``args`` (between ``before`` and ``after``) whose error
  must name the flag and the value: ``flag`` (``--flag`` with ``dashes``; for
  ``--config.key=value`` the key) and ``value`` (``'value'`` with ``quoted``, as a bad choice
  is named)."""
  cases = []
  for arg in args:
    flag, value = arg[2:].split('=', 1)
    flag = f'--{flag}' if dashes else flag.removeprefix('config.')
    cases.append(B(binary, *before, arg, *after,
                   expect=(flag, f"'{value}'" if quoted else value)))
  return cases


BINARY_CASES: list[BinaryCase] = []
_add = BINARY_CASES.extend

# fit_alpha ----------------------------------------------------------------------------------
_add(_common('fit_alpha', 'trials', outputs=('json_out', 'plot_out')))
_add(_each('fit_alpha', '--trials=1', '--trials=-5', '--widths=0', '--widths=4,x', '--depth=1',
           '--chunk_size=0', '--intercept=maybe', dashes=True))
_add(_each('fit_alpha', '--block=conv', '--fan_in_convention=fan',
           '--input_distribution=uniform', '--sampler=fast', dashes=True, quoted=True))
_add([
    B('fit_alpha', '--widths=', expect=('--widths',)),
    B('fit_alpha', '--widths=8,4,8', expect=('--widths', '8', 'twice')),
    B('fit_alpha', '--widths=8', expect=('2 widths', '8')),
    B('fit_alpha', '--widths=100000000', expect=('100000000',)),
    B('fit_alpha', '--json_out={tmp}/a.out', '--plot_out={tmp}/a.out',
      expect=('--json_out', '--plot_out', 'same file')),
])

# search -------------------------------------------------------------------------------------
_ALPHA = ('--alpha=1.6',)
_add(_common('search', 'width', *_ALPHA, outputs=('json_out', 'plot_out')))
_add(_each('search', '--alpha=0', '--alpha=-1', '--alpha=nan', '--alpha=inf'))
_add(_each('search', '--depth=1', '--width=0', '--input_dim=0', '--num_outputs=0',
           '--max_width=0', '--max_width=1000000000', before=_ALPHA))
_add(_each('search', '--baseline=vgg', '--efficiency=speed', before=_ALPHA, quoted=True))
_add(_each('search', '--cardinality=0', '--base_width=-8', '--image_size=0',
           before=(*_ALPHA, '--baseline=resnext29')))
_add(_each('search', '--cost_model=path', '--fan_in_convention=fan',
           before=(*_ALPHA, '--baseline=resnext29'), quoted=True))
_add(_each('search', '--alpha_stderr=-0.1', before=_ALPHA, dashes=True))
_add([
    B('search', expect=('--alpha', '--alpha_from')),
    B('search', '--alpha=abc', expect=('--alpha=abc',)),
    B('search', '--alpha_stderr=0.1', expect=('--alpha_stderr', '--alpha')),
    B('search', '--alpha_from={tmp}', expect=('--alpha_from',)),
    B('search', *_ALPHA, '--alpha_from={tmp}/noalpha.json', expect=('--alpha', '--alpha_from')),
    B('search', *_ALPHA, '--widths=8,0', expect=('widths', '0')),
    B('search', *_ALPHA, '--widths=8,x', expect=('widths', "'x'")),
    B('search', *_ALPHA, '--baseline=resnext29', '--depth=4', expect=('--depth',)),
    B('search', *_ALPHA, '--cardinality=2', expect=('--cardinality',)),
])
# --alpha_from=FILE: the error names the file (a missing or unreadable one) or the bad alpha
_add(B('search', f'--alpha_from={{tmp}}/{name}', expect=named) for name, named in (
    ('missing.json', ('--alpha_from', 'missing.json')), ('bad.json', ('--alpha_from', 'bad.json')),
    ('noalpha.json', ('noalpha.json', 'alpha')), ('negalpha.json', ('alpha', '-1')),
    ('stralpha.json', ('alpha', "'big'")), ('nanalpha.json', ('alpha', 'nan')),
    ('list.json', ('list.json', 'alpha'))))

# design -------------------------------------------------------------------------------------
_P = ('--preset=bottleneck', '--alpha=1.6', '--baseline_width=64')
_add(_common('design', 'trials', *_P, outputs=('json_out', 'plot_out')))
_add(_each('design', '--trials=1', '--baseline_m=0', '--max_width=0', '--chunk_size=0',
           '--alpha_stderr=-1', '--alpha_intercept=nan', '--widths=0', before=_P, dashes=True))
_add(_each('design', '--efficiency=speed', '--fan_in_convention=fan',
           '--input_distribution=uniform', '--parameterization=mup', '--member_args=channels',
           before=_P, dashes=True, quoted=True))
_add(_each('design', '--baseline_width=0', before=_P[:2], dashes=True))
_add(_each('design', '--baseline_width=a', before=_P[:2], dashes=True, quoted=True))
_add([
    B('design', *_P[1:], expect=('--member', '--preset')),
    B('design', '--preset=foo', *_P[1:], expect=('--preset', "'foo'")),
    B('design', '--member=nocolon', *_P[1:], expect=('--member', "'nocolon'")),
    B('design', '--member={tmp}/missing.py:f', '--input_shape=8', *_P[1:],
      expect=('--member', 'missing.py')),
    B('design', '--member={tmp}/mymember.py:NOT_CALLABLE', '--input_shape=8', *_P[1:],
      expect=('--member', 'NOT_CALLABLE')),
    B('design', '--member=ce_jax.design.presets:no_such_preset', *_P[1:],
      expect=('--member', "'no_such_preset'")),
    B('design', '--member=no_such_module_xyz:f', *_P[1:],
      expect=('--member', "'no_such_module_xyz'")),
    B('design', *_P[:2], expect=('--baseline_width',)),
    B('design', '--preset=bottleneck', '--alpha=0', '--baseline_width=64', expect=('--alpha',
                                                                                  '0')),
    B('design', '--preset=bottleneck', '--alpha=nan', '--baseline_width=64',
      expect=('--alpha', 'nan')),
    B('design', '--preset=bottleneck', '--alpha_from={tmp}/bad.json', '--baseline_width=64',
      expect=('--alpha_from', 'bad.json')),
    B('design', '--preset=bottleneck', '--alpha_from={tmp}/negalpha.json',
      '--baseline_width=64', expect=('alpha', '-1')),
    B('design', *_P, '--member_args=no_such_arg=1', expect=('--member_args', "'no_such_arg'")),
    B('design', *_P, '--input_shape=8', expect=('--input_shape',)),
])

# model_info ---------------------------------------------------------------------------------
_R = ('--model=resnext29',)
_add(_common('model_info', 'cardinality', *_R))
_add(_each('model_info', '--cardinality=0', '--base_width=-1', '--num_classes=0',
           '--image_size=0', '--image_size=-32', before=_R))
_add(_each('model_info', '--depth=7', '--widen_factor=0', before=('--model=wrn',)))
_add(_each('model_info', '--input_dim=0', '--num_outputs=0',
           before=('--model=dense', '--widths=8')))
_add(_each('model_info', '--m=0', before=('--model=dense_ensemble', '--widths=8')))
_add([
    B('model_info', expect=('--model',)),
    B('model_info', '--model=vgg', expect=("'vgg'",)),
    B('model_info', *_R, '--widths=8', expect=('--widths',)),
    B('model_info', '--model=dense', expect=('--widths',)),
    B('model_info', '--model=dense', '--widths=8,abc', expect=('widths', "'abc'")),
])

# ntk_convergence ----------------------------------------------------------------------------
_add(_common('ntk_convergence', 'width', outputs=('json_out', 'plot_out')))
_add(_each('ntk_convergence', '--depth=1', '--width=0', '--multiplicities=0', '--num_angles=1',
           '--nmk_samples=1', '--nmk_width=0', '--chunk_size=0', dashes=True))
_add([
    B('ntk_convergence', '--multiplicities=1,a', expect=('--multiplicities', "'a'")),
    B('ntk_convergence', '--multiplicities=10,10', expect=('--multiplicities', '10', 'twice')),
    B('ntk_convergence', '--num_angles=10000000000', expect=('10000000000',)),
    B('ntk_convergence', '--width=100000000', expect=('100000000',)),
])

# ntk_dynamics -------------------------------------------------------------------------------
_add(_common('ntk_dynamics', 'steps', outputs=('json_out', 'plot_out')))
_add(_each('ntk_dynamics', '--ds=0', '--fixed_width=0', '--depth=1', '--steps=0',
           '--learning_rate=0', '--learning_rate=nan', '--num_train=0', '--num_probe=1',
           '--seeds=0', dashes=True))
_add(_each('ntk_dynamics', '--fit_on=both', dashes=True, quoted=True))
_add(_each('ntk_dynamics', '--num_train=100000'))
_add([B('ntk_dynamics', '--ds=4', expect=('--ds=4',))])

# ablation -----------------------------------------------------------------------------------
_add(_common('ablation', 'epochs', outputs=('json_out', 'plot_out')))
_add(_each('ablation', '--repetitions=0', '--epochs=0', '--alpha=0', '--alpha=-3',
           '--baseline_width=0', '--depth=1', '--min_width=500', '--primal_widths=0',
           '--num_primal=0', '--batch_size=0', '--learning_rate=-1', '--chunk=-1',
           '--max_train=-1', dashes=True))
_add(_each('ablation', '--dataset=cifar', '--dual_multiplicities=a', dashes=True, quoted=True))

# train --------------------------------------------------------------------------------------
_add(_common('train', 'num_processes', DIGITS, outputs=('workdir',)))
_add(_each('train', '--config.num_epochs=abc', '--config.num_epochs=0',
           '--config.learning_rate=0', '--config.learning_rate=nan', '--config.batch_size=0',
           '--config.momentum=1.5', '--config.weight_decay=-1', '--config.m=0',
           before=(DIGITS,), after=(TMPW,)))
_add(_each('train', '--config.dataset=foo', '--config.optimizer=rmsprop', before=(DIGITS,),
           after=(TMPW,), quoted=True))
_add([
    B('train', TMPW, expect=('--config',)),
    B('train', DIGITS, expect=('--workdir',)),
    B('train', DIGITS + ':cifar', TMPW, expect=('--config', 'get_config')),
    B('train', DIGITS, '--config.num_epoch=1', TMPW, expect=('num_epoch', 'num_epochs')),
    B('train', DIGITS, '--config.optimzer=sgd', TMPW, expect=('optimzer',)),
    B('train', '--config.num_epochs=1', TMPW, expect=('config.num_epochs',)),
])
# --config=FILE: the error names the flag and what is wrong with the file
_add(B('train', f'--config={path}', TMPW, expect=('--config', named)) for path, named in (
    ('{tmp}/missing.py', 'missing.py'), ('{tmp}', 'directory'), ('{tmp}/bad_cfg.py', 'SyntaxError'),
    ('{tmp}/noget_cfg.py', 'get_config'), ('{tmp}/none_cfg.py', 'None'),
    ('{tmp}/raise_cfg.py', 'broken config')))

# demo ---------------------------------------------------------------------------------------
_add(_common('demo', 'width', outputs=('workdir',)))
_add(_each('demo', '--depth=1', '--width=0', '--alpha_widths=0', '--alpha_trials=1', '--seeds=0',
           '--epochs=0', before=(TMPW,)))
_add(_each('demo', '--epochs=-1', before=(TMPW, '--quick')))
_add([B('demo', TMPW, '--alpha_widths=a,b', expect=('alpha_widths', "'a'"))])

# family_digits ------------------------------------------------------------------------------
_add(_common('family_digits', 'd_model', TMPW))
_add(_each('family_digits', '--d_model=0', '--blocks=0', '--baseline_width=0', '--alpha_widths=0',
           '--alpha_trials=1', '--seeds=0', '--epochs=0', '--batch_size=0', '--learning_rate=0',
           before=(TMPW,)))
_add([B('family_digits', '--workdir={tmp}/file', expect=('--workdir', 'file'))])

# benchmarks ---------------------------------------------------------------------------------
_add(_common('benchmark_alpha', 'trials'))
_add(_each('benchmark_alpha', '--trials=1', '--bottleneck_widths=0', '--channels=0', '--depth=1',
           '--rounds=0'))
_add(_each('benchmark_alpha', '--trials=0', before=('--quick',)))
_add(_each('benchmark_alpha', '--cases=conv', '--dense_widths=x', quoted=True))
_add([B('benchmark_alpha', '--cases=', expect=('cases',))])

_add(_common('benchmark_alpha_fit', 'trials'))
_add(_each('benchmark_alpha_fit', '--trials=1', '--seeds=0'))
_add(_each('benchmark_alpha_fit', '--blocks=conv', quoted=True))
_add([
    B('benchmark_alpha_fit', '--blocks=', expect=('blocks',)),
    B('benchmark_alpha_fit', '--widths=4,4', expect=('widths', '4', 'twice')),
])

_add(_common('benchmark_bn_accuracy', 'batch'))
_add(_each('benchmark_bn_accuracy', '--batch=1'))
_add(_each('benchmark_bn_accuracy', '--models=resnext29:8by64', quoted=True))
_add([
    B('benchmark_bn_accuracy', '--models=resnet9:1x64d', expect=('models', "'resnet9'")),
    B('benchmark_bn_accuracy', '--models=', expect=('models',)),
])

_add(_common('benchmark_conv', 'batch'))
_add(_each('benchmark_conv', '--batch=0', '--size=2', '--reps=0', '--stock_once_groups=0'))
_add(_each('benchmark_conv', '--batch=0', before=('--quick',)))
_add(_each('benchmark_conv', '--designs=1x', quoted=True))
_add([
    B('benchmark_conv', '--designs=0x8', expect=('groups', '0')),
    B('benchmark_conv', '--designs=', expect=('designs',)),
])

_add(_common('benchmark_ensemble', 'reps'))
_add(_each('benchmark_ensemble', '--dense_m=-1', '--dense_widths=0', '--dense_input=0',
           '--block_channels=0', '--block_size=2', '--lr=0'))
_add(_each('benchmark_ensemble', '--reps=0', before=('--quick',)))
_add(_each('benchmark_ensemble', '--blocks=8x', quoted=True))
_add([
    B('benchmark_ensemble', '--blocks=0x4', expect=('paths', '0')),
    B('benchmark_ensemble', '--dense_m=0', '--blocks=', expect=('dense_m', 'blocks')),
])

_add(_common('benchmark_ntk', 'm'))
_add(_each('benchmark_ntk', '--m=0', '--depth=1', '--width=0', '--repeats=0', '--peak_depth=1',
           '--mc_trials=0', '--bottleneck_cardinality=0', '--bottleneck_spatial=0'))
_add(_each('benchmark_ntk', '--m=0', before=('--quick',)))
_add(_each('benchmark_ntk', '--sections=speed', quoted=True))

_add(_common('benchmark_train', 'batch'))
_add(_each('benchmark_train', '--batch=0', '--size=3', '--reps=0'))
_add(_each('benchmark_train', '--batch=0', before=('--quick',)))
_add(_each('benchmark_train', '--models=37x', quoted=True))
_add([B('benchmark_train', '--models=0x10d', expect=('cardinality', '0'))])


# ---------------------------------------------------------------------------------------------
# API cases (built lazily: they import JAX)


# The table's own integrity: every case has a unique id (the audit and the tests key on it).
assert len({c.id for c in BINARY_CASES}) == len(BINARY_CASES), 'binary case ids must be unique'


def api_cases() -> list[ApiCase]:
  """The public-function cases (imports jax, flax and ce_jax)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  # pylint: disable=import-outside-toplevel
  from ce_jax.studies import ablation, dynamics
  from ce_jax.design import accounting, blocks, member
  from ce_jax.theory import alpha, infinite
  from ce_jax.tools import cli
  from ce_jax.theory import conditional, ntk, variance
  from ce_jax.studies import convergence
  from ce_jax.training import input_pipeline
  from ce_jax.design import presets, solver
  from ce_jax.models import dense, registry  # pylint: disable=import-outside-toplevel

  key = jax.random.PRNGKey(0)
  x = jnp.ones((3, 5))
  small = dense.DenseMember((8, 8))
  wide = dense.DenseMember((16, 16))
  deep = dense.DenseMember((8, 8, 8))
  p_small = small.init(key, x)
  p_wide = wide.init(key, x)
  p_deep = deep.init(key, x)
  p_in7 = small.init(key, jnp.ones((3, 7)))
  out2 = dense.DenseMember((8, 8), num_outputs=2)
  p_out2 = out2.init(key, x)
  ens2 = dense.DenseEnsemble(2, (8, 8))
  ens3 = dense.DenseEnsemble(3, (8, 8))
  p_ens2 = ens2.init(key, x)
  p_ens3 = ens3.init(key, x)
  p_ens2_wide = dense.DenseEnsemble(2, (16, 8)).init(key, x)
  stacked3 = dense.stack_member_params([p_small] * 3)
  stacked_wide = dense.stack_member_params([p_wide] * 2)

  def plain_fn(p, xb):  # a plain function: w (5, 4) then v (4, 1)
    return jnp.tanh(xb @ p['w']) @ p['v']

  p_plain = {'w': jnp.ones((5, 4)), 'v': jnp.ones((4, 1))}
  p_plain_bad = {'w': jnp.ones((6, 4)), 'v': jnp.ones((4, 1))}
  nan_x = x.at[0, 0].set(jnp.nan)
  fit_s, fit_r, fit_se = [0.1, 0.2, 0.3], [1.1, 1.3, 1.6], [0.01, 0.01, 0.01]
  mom = variance.ntk_moments(lambda k: jax.random.normal(k, (2,)), key, 4)

  def call_ntk(fn_factory, *args):
    return lambda: np.asarray(fn_factory()(*args))

  A = ApiCase  # noqa: N806
  cases = [
      # alpha
      A('alpha.fit_alpha', 'ratio 0', lambda: alpha.fit_alpha(fit_s, [1.1, 0.0, 1.2], fit_se),
        ('ratios', '0.0')),
      A('alpha.fit_alpha', 'ratio -1', lambda: alpha.fit_alpha(fit_s, [1.1, -1.0, 1.2]),
        ('ratios', '-1.0')),
      A('alpha.fit_alpha', 'ratio nan', lambda: alpha.fit_alpha(fit_s, [1.1, math.nan, 1.2]),
        ('ratios', 'non-finite')),
      A('alpha.fit_alpha', 'S 0', lambda: alpha.fit_alpha([0.0, 0.2, 0.3], fit_r), ('fan_in_sums',
                                                                                   '0.0')),
      A('alpha.fit_alpha', 'length mismatch', lambda: alpha.fit_alpha(fit_s, [1.1, 1.2]),
        ('ratios', '2')),
      A('alpha.fit_alpha', 'empty', lambda: alpha.fit_alpha([], []), ('fan_in_sums', '[]')),
      A('alpha.fit_alpha', 'one point with intercept', lambda: alpha.fit_alpha([0.1], [1.1]),
        ('2 points', '1')),
      A('alpha.fit_alpha', 'stderr 0', lambda: alpha.fit_alpha(fit_s, fit_r, [0.01, 0.0, 0.01]),
        ('ratio_stderrs', '0.0')),
      A('alpha.fit_alpha', 'stderr length', lambda: alpha.fit_alpha(fit_s, fit_r, [0.01]),
        ('ratio_stderrs', '1')),
      A('alpha.fit_alpha', 'ratios a string', lambda: alpha.fit_alpha(fit_s, 'abc'),
        ('ratios', "'abc'")),
      A('alpha.fit_alpha', '2-D ratios', lambda: alpha.fit_alpha(fit_s, [[1.1, 1.2, 1.3]]),
        ('ratios', '(1, 3)')),
      A('alpha.estimate_alpha', "block 'conv'", lambda: alpha.estimate_alpha('conv', [4], 4),
        ('block', "'conv'")),
      A('alpha.estimate_alpha', 'widths [0]', lambda: alpha.estimate_alpha('dense', [0], 4),
        ('widths[0]', '0')),
      A('alpha.estimate_alpha', 'widths []', lambda: alpha.estimate_alpha('dense', [], 4),
        ('widths', '[]')),
      A('alpha.estimate_alpha', 'widths [4, 4]', lambda: alpha.estimate_alpha(
          'dense', [4, 8, 4], 4), ('widths', '4', 'twice')),
      A('alpha.estimate_alpha', 'one width with intercept', lambda: alpha.estimate_alpha(
          'dense', [4], 4), ('2 widths', '4')),
      A('alpha.estimate_alpha', 'trials 1', lambda: alpha.estimate_alpha('dense', [4], 1),
        ('trials', '1')),
      A('alpha.estimate_alpha', 'depth 1',
        lambda: alpha.estimate_alpha('dense', [4], 4, depth=1), ('depth', '1')),
      A('alpha.estimate_alpha', 'convention', lambda: alpha.estimate_alpha(
          'dense', [4], 4, fan_in_convention='fan'), ('fan_in_convention', "'fan'")),
      A('alpha.estimate_alpha', 'parameterization', lambda: alpha.estimate_alpha(
          'dense', [4], 4, parameterization='mup'), ('parameterization', "'mup'")),
      A('alpha.estimate_alpha', 'input_distribution', lambda: alpha.estimate_alpha(
          'bottleneck', [4], 4, input_distribution='uniform'), ('input_distribution',
                                                                "'uniform'")),
      A('alpha.estimate_alpha', 'chunk_size 0', lambda: alpha.estimate_alpha(
          'dense', [4], 4, chunk_size=0), ('chunk_size', '0')),
      A('alpha.estimate_alpha', "sampler 'fast'", lambda: alpha.estimate_alpha(
          'dense', [4, 8], 4, sampler='fast'), ('sampler', "'fast'")),
      A('alpha.estimate_alpha', 'conditional on a standard member', lambda: alpha.estimate_alpha(
          presets.bottleneck(in_channels=8, out_channels=8, parameterization='standard'),
          [4, 8], 4, sampler='conditional'), ('conditional', 'bottleneck_resnext29_standard')),
      A('alpha.estimate_alpha', "conditional with parameterization 'ntk'",
        lambda: alpha.estimate_alpha(presets.bottleneck(in_channels=8, out_channels=8), [4, 8],
                                     4, parameterization='ntk', sampler='conditional'),
        ('conditional', "'ntk'")),
      A('conditional.bottleneck_diagonal_sampler', 'two inputs',
        lambda: conditional.bottleneck_diagonal_sampler([4], np.ones((2, 3, 3, 8))),
        ('ONE input', '2 inputs')),
      A('conditional.bottleneck_diagonal_sampler', 'width 0',
        lambda: conditional.bottleneck_diagonal_sampler([4, 0], np.ones((1, 3, 3, 8))),
        ('widths[1]', '0')),
      A('conditional.dense_diagonal_sampler', 'depths differ',
        lambda: conditional.dense_diagonal_sampler([(4, 4), (4,)], np.ones((1, 3))),
        ('one depth', '(4,)')),
      A('alpha.fan_in_sum', 'width 0', lambda: alpha.fan_in_sum('dense', 0), ('width', '0')),
      A('alpha.fan_in_sum', "block 'x'", lambda: alpha.fan_in_sum('x', 4), ('block', "'x'")),
      A('alpha.fan_in_sums', 'width 0', lambda: alpha.fan_in_sums('dense', [4, 0]),
        ('width', '0')),
      A('alpha.fan_in_sums', "block 'x'", lambda: alpha.fan_in_sums('x', [4]), ('block', "'x'")),
      A('alpha.fan_in_sums', 'convention', lambda: alpha.fan_in_sums(
          'bottleneck', [4], fan_in_convention='fan'), ('fan_in_convention', "'fan'")),
      A('alpha.block_input', 'num_inputs 0', lambda: alpha.block_input('dense', key,
                                                                       num_inputs=0),
        ('num_inputs', '0')),
      A('alpha.block_input', 'distribution', lambda: alpha.block_input(
          'bottleneck', key, input_distribution='x'), ('input_distribution', "'x'")),
      # ntk: backends, options
      A('ntk.empirical_ntk_fn', "backend 'fast'", lambda: ntk.empirical_ntk_fn(
          small.apply, backend='fast'), ('backend', "'fast'")),
      A('ntk.empirical_ntk_fn', 'implementation', lambda: ntk.empirical_ntk_fn(
          small.apply, backend='jax', implementation='magic'), ('implementation', "'magic'")),
      A('ntk.empirical_ntk_fn', 'trace_axes (0,)', lambda: ntk.empirical_ntk_fn(
          small.apply, backend='jax', trace_axes=(0,)), ('trace_axes', '(0,)')),
      A('ntk.empirical_ntk_fn', "vmap_axes 'x'", lambda: ntk.empirical_ntk_fn(
          small.apply, backend='jax', vmap_axes='x'), ('vmap_axes', "'x'")),
      A('ntk.empirical_ntk_fn', 'structured on a plain function', lambda: ntk.empirical_ntk_fn(
          plain_fn, backend='structured'), ('structured',)),
      A('ntk.empirical_ntk_fn', 'x1 nan', call_ntk(lambda: ntk.empirical_ntk_fn(small.apply), nan_x,
                                             None, p_small), ('x1', 'non-finite')),
      A('ntk.empirical_ntk_fn', 'x1/x2 dims', call_ntk(lambda: ntk.empirical_ntk_fn(small.apply), x,
                                                 jnp.ones((2, 6)), p_small), ('x1', '(2, 6)')),
      A('ntk.empirical_ntk_fn', 'params of wider layers (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None, p_wide),
        ('layer_0', '(5, 16)', '(5, 8)')),
      A('ntk.empirical_ntk_fn', 'params of a deeper member (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None, p_deep), ('layer_3',)),
      A('ntk.empirical_ntk_fn', 'params for input dim 7 (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None, p_in7), ('layer_0', '(7, 8)',
                                                                       '5')),
      A('ntk.empirical_ntk_fn', 'params with 2 outputs (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None, p_out2), ('layer_2', '(8, 2)')),
      A('ntk.empirical_ntk_fn', 'ensemble m=3 params, m=2 model (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(ens2.apply), x, None, p_ens3), ('layer_0', '(3, 5, 8)',
                                                                       'm=2')),
      A('ntk.empirical_ntk_fn', 'ensemble m=2 params, m=3 model (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(ens3.apply), x, None, p_ens2), ('layer_0', '(2, 5, 8)')),
      A('ntk.empirical_ntk_fn', 'ensemble wider params (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(ens2.apply), x, None, p_ens2_wide), ('layer_0',
                                                                            '(2, 5, 16)')),
      A('ntk.empirical_ntk_fn', 'member params for an ensemble (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(ens2.apply), x, None, p_small), ('layer_0', '(5, 8)')),
      A('ntk.empirical_ntk_fn', 'params missing a layer (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None,
          {'params': {'layer_0': p_small['params']['layer_0']}}), ('layer_1',)),
      A('ntk.empirical_ntk_fn', 'params not a dict (auto)', call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply), x, None, [1.0, 2.0]), ('params',)),
      A('ntk.empirical_ntk_fn', "params of wider layers ('jax')", call_ntk(
          lambda: ntk.empirical_ntk_fn(small.apply, backend='jax'), x, None, p_wide),
        ('layer_0', '(5, 16)', '(5, 8)')),
      A('ntk.empirical_ntk_fn', "ensemble m=3 params ('jax')", call_ntk(
          lambda: ntk.empirical_ntk_fn(ens2.apply, backend='jax', vmap_axes=0), x, None,
          p_ens3), ('layer_0', '(3, 5, 8)', '(2, 5, 8)')),
      A('ntk.empirical_ntk_fn', "plain function, wrong leaf ('jax')", call_ntk(
          lambda: ntk.empirical_ntk_fn(plain_fn), x, None, p_plain_bad), ('(6, 4)',)),
      A('ntk.empirical_ntk_fn', "plain function, missing leaf ('jax')", call_ntk(
          lambda: ntk.empirical_ntk_fn(plain_fn), x, None, {'w': jnp.ones((5, 4))}), ("'v'",)),
      A('ntk.ntk_diagonal_fn', 'batch_size 0', lambda: ntk.ntk_diagonal_fn(
          small.apply, batch_size=0), ('batch_size', '0')),
      A('ntk.ntk_diagonal_fn', 'trace_axes (0,)', lambda: ntk.ntk_diagonal_fn(
          small.apply, backend='jax', trace_axes=(0,)), ('trace_axes', '(0,)')),
      A('ntk.ntk_diagonal_fn', 'x nan', call_ntk(lambda: ntk.ntk_diagonal_fn(small.apply), nan_x,
                                           p_small), ('x1', 'non-finite')),
      A('ntk.ntk_diagonal_fn', 'params of wider layers (auto)', call_ntk(
          lambda: ntk.ntk_diagonal_fn(small.apply), x, p_wide), ('layer_0', '(5, 16)')),
      A('ntk.ntk_diagonal_fn', "params of wider layers ('jax')", call_ntk(
          lambda: ntk.ntk_diagonal_fn(small.apply, backend='jax'), x, p_wide), ('layer_0',
                                                                               '(5, 16)')),
      A('ntk.ntk_diagonal_fn', 'stacked params of wider layers', call_ntk(
          lambda: ntk.ntk_diagonal_fn(small.apply, stacked=True), x, stacked_wide),
        ('layer_0', '(5, 16)')),
      A('ntk.ntk_diagonal_fn', 'stacked=True, unstacked params', call_ntk(
          lambda: ntk.ntk_diagonal_fn(small.apply, stacked=True), x, p_small),
        ('leading member axis',)),
      A('ntk.ntk_diagonal_fn', "plain function, wrong leaf ('jax')", call_ntk(
          lambda: ntk.ntk_diagonal_fn(plain_fn), x, p_plain_bad), ('(6, 4)',)),
      A('ntk.ensemble_ntk_fn', 'member_batch_size 0', lambda: ntk.ensemble_ntk_fn(
          small.apply, member_batch_size=0), ('member_batch_size', '0')),
      A('ntk.ensemble_ntk_fn', 'members of wider layers (auto)', call_ntk(
          lambda: ntk.ensemble_ntk_fn(small.apply), x, None, stacked_wide), ('layer_0',
                                                                              '(5, 16)')),
      A('ntk.ensemble_ntk_fn', "members of wider layers ('jax')", call_ntk(
          lambda: ntk.ensemble_ntk_fn(small.apply, backend='jax', vmap_axes=0), x, None,
          stacked_wide), ('layer_0', '(5, 16)')),
      A('ntk.ensemble_ntk_fn', 'unstacked params', call_ntk(
          lambda: ntk.ensemble_ntk_fn(small.apply), x, None, p_small),
        ('leading member axis',)),
      A('ntk.ensemble_ntk_fn', 'leaves with different member counts', call_ntk(
          lambda: ntk.ensemble_ntk_fn(small.apply), x, None,
          {'params': {'layer_0': {'kernel': jnp.ones((3, 5, 8))},
                      'layer_1': {'kernel': jnp.ones((2, 8, 8))},
                      'layer_2': {'kernel': jnp.ones((2, 8, 1))}}}), ('leading member axis',)),
      A('ntk.ensemble_ntk_diagonal_fn', 'members of wider layers', call_ntk(
          lambda: ntk.ensemble_ntk_diagonal_fn(small.apply), x, stacked_wide), ('layer_0',
                                                                                '(5, 16)')),
      A('ntk.ensemble_ntk_diagonal_fn', 'x 1-D', call_ntk(
          lambda: ntk.ensemble_ntk_diagonal_fn(small.apply), jnp.ones(5), stacked3), ('x',
                                                                                      '(5,)')),
      A('ntk.resolve_backend', "backend 'gpu'", lambda: ntk.resolve_backend(small.apply, 'gpu'),
        ('backend', "'gpu'")),
      # variance
      A('variance.ntk_moments', 'trials 1', lambda: variance.ntk_moments(
          lambda k: jax.random.normal(k, (2,)), key, 1), ('trials', '1')),
      A('variance.ntk_moments', 'chunk_size 0', lambda: variance.ntk_moments(
          lambda k: jax.random.normal(k, (2,)), key, 4, chunk_size=0), ('chunk_size', '0')),
      A('variance.neural_mean_kernel', 'trials 0', lambda: variance.neural_mean_kernel(
          lambda k: jax.random.normal(k, (2,)), key, 0), ('trials', '0')),
      A('variance.ensemble_mean', 'm 0', lambda: variance.ensemble_mean(
          lambda k: jax.random.normal(k, (2,)), key, 0), ('m', '0')),
      A('convergence.ntk_convergence', 'depth 1', lambda: convergence.ntk_convergence(key, depth=1),
        ('depth', '1')),
      A('convergence.ntk_convergence', 'multiplicities [0]', lambda: convergence.ntk_convergence(
          key, multiplicities=[0]), ('multiplicities', '0')),
      A('convergence.ntk_convergence', 'multiplicities [2, 2]', lambda: convergence.ntk_convergence(
          key, multiplicities=[2, 2]), ('multiplicities', '2', 'twice')),
      A('convergence.ntk_convergence', 'num_angles 1', lambda: convergence.ntk_convergence(
          key, num_angles=1), ('num_angles', '1')),
      A('convergence.ntk_convergence', 'num_angles 1e10', lambda: convergence.ntk_convergence(
          key, width=4, multiplicities=[1], nmk_samples=2, num_angles=10 ** 10),
        ('10000000000',)),
      A('variance.dense_ntk_sampler', 'widths [0]', lambda: variance.dense_ntk_sampler(
          [0], x), ('widths', '0')),
      A('variance.dense_diag_sampler', 'x 1-D', lambda: variance.dense_diag_sampler(
          [4], jnp.ones(5)), ('x', '(5,)')),
      A('variance.variance_ratio', 'not Moments', lambda: variance.variance_ratio(mom, 3.0),
        ('Moments',)),
      # solver
      A('solver.search', "baseline 'vgg'", lambda: solver.search('vgg', 1.6), ('baseline',
                                                                              "'vgg'")),
      A('solver.search', 'alpha 0', lambda: solver.search('dense', 0.0), ('alpha', '0')),
      A('solver.search', 'alpha nan', lambda: solver.search('dense', math.nan), ('alpha',
                                                                                'nan')),
      A('solver.search', 'alpha -1', lambda: solver.search('dense', -1.0), ('alpha', '-1')),
      A('solver.dense_problem', 'width 0', lambda: solver.dense_problem(depth=6, width=0),
        ('width', '0')),
      A('solver.dense_problem', 'depth 1', lambda: solver.dense_problem(depth=1, width=8),
        ('depth', '1')),
      A('solver.dense_problem', "efficiency 'speed'", lambda: solver.dense_problem(
          depth=6, width=8, efficiency='speed'), ('efficiency', "'speed'")),
      A('solver.dense_problem', 'max_width 0', lambda: solver.dense_problem(
          depth=6, width=8, max_width=0), ('max_width', '0')),
      A('solver.resnext_problem', 'cardinality 0', lambda: solver.resnext_problem(
          'resnext29', cardinality=0), ('cardinality', '0')),
      A('solver.resnext_problem', "name 'resnext7'", lambda: solver.resnext_problem(
          'resnext7'), ("'resnext7'",)),
      A('solver.solve', 'alpha inf', lambda: solver.solve(
          solver.dense_problem(depth=6, width=8), math.inf), ('alpha', 'inf')),
      A('solver.solve', 'alpha_stderr -1', lambda: solver.solve(
          solver.dense_problem(depth=6, width=8), 1.6, -1.0), ('alpha_stderr', '-1')),
      A('solver.evaluate', 'm 0', lambda: solver.evaluate(
          solver.dense_problem(depth=6, width=8), 1.6, 0, 8), ('m', '0')),
      A('solver.alpha_interval', 'confidence 1.5', lambda: solver.alpha_interval(
          1.6, 0.1, 1.5), ('confidence', '1.5')),
      # infinite
      A('infinite.infinite_ntk', 'depth 1', lambda: infinite.infinite_ntk(x, depth=1),
        ('depth', '1')),
      A('infinite.infinite_ntk', 'x1/x2 dims', lambda: infinite.infinite_ntk(
          x, jnp.ones((2, 6)), depth=3), ('(2, 6)',)),
      A('infinite.infinite_ntk', "backend 'x'", lambda: infinite.infinite_ntk(
          x, depth=3, backend='x'), ('backend', "'x'")),
      A('infinite.infinite_ntk', 'x nan', lambda: infinite.infinite_ntk(nan_x, depth=3),
        ('non-finite',)),
      # models
      A('dense.DenseMember', 'widths (0,)', lambda: dense.DenseMember((0,)), ('widths', '0')),
      A('dense.DenseMember', 'num_outputs 0', lambda: dense.DenseMember((4,), num_outputs=0),
        ('num_outputs', '0')),
      A('dense.DenseEnsemble', 'm 0', lambda: dense.DenseEnsemble(0, (4,)), ('m', '0')),
      A('dense.stack_member_params', 'empty', lambda: dense.stack_member_params([]),
        ('[]',)),
      A('dense.num_members', 'empty tree', lambda: dense.num_members({}), ('empty',)),
      A('registry.get', "name 'vgg'", lambda: registry.get('vgg'), ("'vgg'",)),
      A('registry.get', 'resnext29 cardinality 0', lambda: registry.get(
          'resnext29', cardinality=0), ('cardinality', '0')),
      A('registry.get', 'unknown hyperparameter', lambda: registry.get('resnext29', depth=5),
        ('depth',)),
      A('registry.get', 'wrn depth 7', lambda: registry.get('wrn', depth=7), ('depth', '7')),
      # accounting, blocks, presets, member
      A('accounting.resnext_params', 'base_width 0', lambda: accounting.resnext_params(
          'resnext29', 1, 0), ('base_width', '0')),
      A('accounting.dense_params', 'input_dim 0', lambda: accounting.dense_params(0, [4]),
        ('input_dim', '0')),
      A('accounting.default_image_size', "name 'x'", lambda: accounting.default_image_size(
          'x'), ("'x'",)),
      A('blocks.dense_member_params', 'widths [0]', lambda: blocks.dense_member_params(
          8, [0]), ('widths', '0')),
      A('blocks.bottleneck_fan_in_sum', 'convention', lambda: blocks.bottleneck_fan_in_sum(
          4, fan_in_convention='fan'), ('fan_in_convention', "'fan'")),
      A('blocks.bottleneck_path_params', 'n 0', lambda: blocks.bottleneck_path_params(0),
        ('0',)),
      A('presets.dense', 'depth 1', lambda: presets.dense(depth=1), ('depth', '1')),
      A('presets.get', "name 'x'", lambda: presets.get('x'), ("'x'",)),
      A('presets.bottleneck', "network 'vgg'", lambda: presets.bottleneck('vgg'), ("'vgg'",)),
      A('member.canonical_width', 'width 0', lambda: member.canonical_width(0), ('width', '0')),
      A('member.fan_in_sum', 'convention', lambda: member.fan_in_sum(
          presets.dense(3, 8), 4, 'fan'), ('fan_in_convention', "'fan'")),
      # ablation, dynamics
      A('input_pipeline.load_arrays', "name 'cifar'", lambda: input_pipeline.load_arrays('cifar'),
        ("'cifar'",)),
      A('ablation.primal_designs', 'widths [0]', lambda: ablation.primal_designs(
          [0], input_dim=8, num_outputs=2), ('0',)),
      A('ablation.dual_designs', 'm [0]', lambda: ablation.dual_designs(
          [0], input_dim=8, num_outputs=2), ('0',)),
      A('ablation.primal_designs', 'alpha -1', lambda: ablation.primal_designs(
          [8], input_dim=8, num_outputs=2, alpha=-1.0), ('alpha', '-1')),
      A('ablation.geometric_ints', 'num 0', lambda: ablation.geometric_ints(1, 8, 0),
        ('num', '0')),
      A('dynamics.design_grid', 'ds [0]', lambda: dynamics.design_grid([0]), ('0',)),
      A('dynamics.regression_data', 'num_train 0', lambda: dynamics.regression_data(0),
        ('num_train', '0')),
      A('dynamics.fit_loglog_slope', 'y 0', lambda: dynamics.fit_loglog_slope(
          [1, 2, 3], [1.0, 0.0, 2.0]), ('0',)),
      # cli
      A('cli.check_output_file', 'a directory', lambda: cli.check_output_file(
          tempfile.gettempdir(), '--json_out'), ('--json_out', 'directory')),
      A('cli.check_output_dir', 'under a file', lambda: cli.check_output_dir(
          os.path.join(REPO, 'README.md', 'sub'), '--workdir'), ('--workdir', 'README.md')),
  ]
  return cases


# ---------------------------------------------------------------------------------------------
# Running and classifying


class RunResult(NamedTuple):
  returncode: int | None     # None after a timeout; negative: killed by that signal
  stdout: str
  stderr: str
  seconds: float
  timed_out: bool


class Outcome(NamedTuple):
  case_id: str
  group: str                 # the binary, or the API function's module
  kind: str                  # one of KINDS
  detail: str                # why (for anything but clear), or the error line
  seconds: float


_PRELOAD = ('numpy', 'jax', 'jax.numpy', 'flax.linen', 'optax', 'absl.app', 'absl.flags',
            'absl.logging', 'ml_collections', 'ml_collections.config_flags', 'ce_jax._validate',
            'ce_jax.tools.cli', 'ce_jax.tools.guards', 'ce_jax.theory.alpha', 'ce_jax.design.solver', 'ce_jax.theory.variance',
            'ce_jax.theory.ntk', 'ce_jax.design.member', 'ce_jax.design.presets', 'ce_jax.design.accounting',
            'ce_jax.design.blocks', 'ce_jax.models.registry', 'ce_jax.models.resnext',
            'ce_jax.models.layers', 'ce_jax.models.ensemble', 'ce_jax.training.train', 'ce_jax.studies.ablation',
            'ce_jax.studies.dynamics', 'ce_jax.studies.plotting', 'ce_jax.tools.benchmarking', 'ce_jax.theory.infinite')

_SERVER = r'''
import io, json, os, runpy, signal, sys, time, traceback
repo, preload = sys.argv[1], sys.argv[2].split(',')
parent = os.getppid()
sys.path.insert(0, repo)
proto_in = os.fdopen(os.dup(0), 'r')
proto_out = os.fdopen(os.dup(1), 'w')
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(2, 1)
for name in preload:
  try:
    __import__(name)
  except Exception:
    pass
proto_out.write('ready\n'); proto_out.flush()
for line in proto_in:
  req = json.loads(line)
  sys.stdout.flush(); sys.stderr.flush()
  t0 = time.time()
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      os.setpgid(0, 0)
      fo = os.open(req['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      fe = os.open(req['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      os.dup2(fo, 1); os.dup2(fe, 2)
      os.chdir(req['cwd'])
      os.environ.update(req.get('env') or {})
      sys.argv = list(req['argv'])
      sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
      try:
        runpy.run_path(sys.argv[0], run_name='__main__')
        code = 0
      except SystemExit as e:
        if e.code is None:
          code = 0
        elif isinstance(e.code, int):
          code = e.code
        else:
          print(e.code, file=sys.stderr)
          code = 1
      except BaseException:
        traceback.print_exc()
        code = 1
    finally:
      try:
        sys.stdout.flush(); sys.stderr.flush()
      finally:
        os._exit(code)
  deadline = t0 + float(req['timeout'])
  timed_out = False
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    if time.time() > deadline or os.getppid() != parent:  # timeout, or our caller is gone
      timed_out = True
      try:
        os.killpg(pid, signal.SIGKILL)
      except OSError:
        os.kill(pid, signal.SIGKILL)
      _, status = os.waitpid(pid, 0)
      break
    time.sleep(0.01)
  try:  # grandchildren of the case
    os.killpg(pid, signal.SIGKILL)
  except OSError:
    pass
  if os.getppid() != parent:
    break
  rc = None if timed_out else os.waitstatus_to_exitcode(status)
  proto_out.write(json.dumps({'rc': rc, 'seconds': time.time() - t0,
                              'timed_out': timed_out}) + '\n')
  proto_out.flush()
'''


def _env(extra: dict | None = None) -> dict:
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # as a user runs them: the binaries keep logs quiet
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.setdefault('JAX_PLATFORMS', 'cpu')
  if extra:
    env.update(extra)
  return env


class Spawn:
  """Runs each case in a fresh interpreter (``subprocess``)."""

  name = 'spawn'

  def run(self, argv: Sequence[str], cwd: str, timeout: float,
          env: dict | None = None) -> RunResult:
    t0 = time.time()
    try:
      proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=_env(env),
                            capture_output=True, text=True, timeout=timeout)
      return RunResult(proc.returncode, proc.stdout, proc.stderr, time.time() - t0, False)
    except subprocess.TimeoutExpired as e:
      out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
      err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or '')
      return RunResult(None, out, err, time.time() - t0, True)

  def close(self):
    pass


class ForkServer:
  """One process with JAX and ce_jax imported that forks a child per case (see the module
  docstring); falls back to :class:`Spawn` for a case with its own environment."""

  name = 'fork'

  def __init__(self):
    self._tmp = tempfile.mkdtemp(prefix='ce_jax_forkserver_')
    self._proc = subprocess.Popen(
        [sys.executable, '-c', _SERVER, REPO, ','.join(_PRELOAD)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=REPO)
    ready = self._proc.stdout.readline()
    if ready.strip() != 'ready':
      raise RuntimeError(f'fork server did not start: {ready!r}')
    self._count = 0

  def run(self, argv: Sequence[str], cwd: str, timeout: float,
          env: dict | None = None) -> RunResult:
    if env:
      return Spawn().run(argv, cwd, timeout, env)
    self._count += 1
    out = os.path.join(self._tmp, f'{self._count}.out')
    err = os.path.join(self._tmp, f'{self._count}.err')
    self._proc.stdin.write(json.dumps({'argv': list(argv), 'cwd': cwd, 'timeout': timeout,
                                       'stdout': out, 'stderr': err}) + '\n')
    self._proc.stdin.flush()
    ready, _, _ = select.select([self._proc.stdout], [], [], timeout + 60)
    if not ready:
      raise RuntimeError('fork server stopped answering')
    reply = json.loads(self._proc.stdout.readline())
    texts = []
    for p in (out, err):
      with open(p, errors='replace') as f:
        texts.append(f.read())
      os.remove(p)
    return RunResult(reply['rc'], texts[0], texts[1], reply['seconds'], reply['timed_out'])

  def close(self):
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._proc.kill()
    shutil.rmtree(self._tmp, ignore_errors=True)


def run_binary_case(case: BinaryCase, runner, base_dir: str) -> tuple[Outcome, RunResult, list]:
  """Runs ``case`` in a fresh directory under ``base_dir``; returns the outcome, the raw
  result and the files it created."""
  tmp = tempfile.mkdtemp(prefix='case_', dir=base_dir)
  make_fixtures(tmp)
  before = snapshot(tmp)
  args = [a.replace('{tmp}', tmp).replace('{repo}', REPO) for a in case.args]
  script = os.path.join(EXPERIMENTS, f'{case.binary}.py')
  res = runner.run([script, *args], cwd=tmp, timeout=case.timeout)
  after = snapshot(tmp)
  created = sorted(k for k in after if k not in before or after[k] != before[k])
  outcome = classify_binary(case, res, created)
  shutil.rmtree(tmp, ignore_errors=True)
  return outcome, res, created


def error_lines(stderr: str) -> list[str]:
  return [l for l in stderr.splitlines() if l.strip()]


def classify_binary(case: BinaryCase, res: RunResult, created: Sequence[str]) -> Outcome:
  def out(kind, detail):
    return Outcome(case.id, case.binary, kind, detail, res.seconds)

  if res.timed_out:
    return out('hang', f'still running after {case.timeout:.0f} s')
  if res.returncode is not None and res.returncode < 0:
    return out('crash', f'killed by signal {-res.returncode}')
  lines = error_lines(res.stderr)
  if res.returncode == 0:
    return out('silent', f'exit 0; {len(created)} files written' if created else 'exit 0')
  why = []
  if 'Traceback (most recent call last)' in res.stderr:
    why.append('traceback')
  if res.returncode != 2:
    why.append(f'exit {res.returncode}')
  if len(lines) != 1:
    why.append(f'{len(lines)} lines on stderr')
  first = next((l for l in lines if ': error: ' in l), lines[-1] if lines else '')
  prefix = f'{case.binary}.py: error: '
  if lines and not lines[-1].startswith(prefix) and not first.startswith(prefix):
    why.append('no "error:" line')
  missing = [e for e in case.expect if e not in first]
  if missing:
    why.append(f'does not name {", ".join(repr(m) for m in missing)}')
  if created:
    why.append(f'wrote {", ".join(created[:3])}')
  if why:
    return out('unclear', '; '.join(why) + f' | {first[:200]}')
  return out('clear', first)


def run_api_case(case: ApiCase) -> Outcome:
  group = case.name.split('.')[0]
  t0 = time.time()
  try:
    value = case.call()
    try:
      import jax  # pylint: disable=import-outside-toplevel
      jax.block_until_ready(value)
    except Exception:  # pylint: disable=broad-except
      pass
  except ValueError as e:
    msg = str(e)
    why = []
    if len([l for l in msg.splitlines() if l.strip()]) != 1:
      why.append(f'{len(msg.splitlines())}-line message')
    missing = [s for s in case.expect if s not in msg]
    if missing:
      why.append(f'does not name {", ".join(repr(m) for m in missing)}')
    first = msg.strip().splitlines()[0] if msg.strip() else ''
    if why:
      return Outcome(case.id, group, 'unclear', '; '.join(why) + f' | {first[:200]}',
                     time.time() - t0)
    return Outcome(case.id, group, 'clear', first, time.time() - t0)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [''])[0]
    return Outcome(case.id, group, 'unclear', f'{type(e).__name__}: {first[:200]}',
                   time.time() - t0)
  return Outcome(case.id, group, 'silent', f'returned {type(value).__name__}', time.time() - t0)
