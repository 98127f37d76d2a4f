r"""Design a collegial ensemble of YOUR block: fit alpha (Algorithm 1), solve primal and dual.

The member is any Flax module factory ``factory(width) -> flax.linen.Module`` in any module:

  # myblock.py in the current directory:  def factory(width): return MyBlock(width)
  python experiments/design.py --member=myblock:factory --input_shape=8,8,64 \
      --baseline_width=256 --trials=500 --json_out=/tmp/design.json --plot_out=/tmp/design.png
  # a preset, with a given alpha and FLOPs efficiency
  python experiments/design.py --preset=bottleneck --baseline_width=128 --alpha=1.6 \
      --efficiency=flops

``--member=MODULE:NAME``: ``MODULE`` is an importable module name or a ``.py`` path (a file in
the current directory works); ``NAME`` is a factory, a :class:`ce_jax.design.member.Member`, or a
preset builder: a callable whose parameters all have defaults and which returns a Member when
called, e.g. ``--member=ce_jax.design.presets:wrn_basic``. ``--member_args=channels=160,key=value``
passes keyword arguments to the builder (or to ``--preset``); values that read as ints or
floats are numbers, ``true``/``false`` booleans, anything else a string.
``--network=MODULE:BUILDER`` (``builder(m, width) -> Module``, the whole model) gives integer m
and whole-network counts. ``--input_shape`` is ONE example's shape without the batch axis.
``--baseline_width`` is an int or a per-layer comma list. Without ``--alpha``/``--alpha_from``,
alpha is fitted on ``--widths`` with ``--trials`` initializations each (progress and time left
are printed); ``--alpha_from`` reads ``alpha`` and ``alpha_stderr`` from a JSON of this binary
or of ``fit_alpha.py``.

The solver uses the fitted law ``exp(a + alpha S) - 1`` with the fit's intercept ``a``.

JSON keys: ``alpha``, ``alpha_stderr``, ``alpha_interval``, ``fan_in_convention``, ``points``
(``width``, ``params``, ``flops``, ``fan_in_sum``, ``ratio``, ``ratio_stderr``), ``baseline``
(``n``, ``m``, ``params``, ``flops``), ``primal`` / ``dual`` (``n``, ``m``, ``m_int``, ``params``,
``flops``, ``rho``, ``variance_ratio``, ``label``, ``n_interval``, ``m_interval``), plus
``member``, ``member_args``, ``efficiency``, ``intercept``, ``covariance`` (Cov(a, alpha)),
``fits`` (alpha under both conventions), ``layers``, ``seconds``.
The JSON is written after the fit and again at the end, so a later failure loses no fit.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
import time

from absl import flags

from ce_jax import _validate
from ce_jax.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('member', None, 'MODULE:FACTORY, factory(width) -> flax Module '
                    '(MODULE: importable name or .py path), or MODULE:MEMBER')
flags.DEFINE_string('preset', None, 'instead of --member: a ce_jax.design.presets name')
flags.DEFINE_string('member_args', None, 'key=value,key=value: keyword arguments of a preset '
                    'builder (--member=MODULE:BUILDER or --preset), e.g. channels=160')
flags.DEFINE_string('network', None, 'MODULE:BUILDER, builder(m, width) -> the whole model')
flags.DEFINE_string('input_shape', None, 'one example input shape without the batch axis, '
                    'e.g. 32,32,64 or 512 (default: the preset\'s)')
flags.DEFINE_string('baseline_width', None, 'baseline width n~ (int, or per-layer comma list)')
flags.DEFINE_integer('baseline_m', 1, 'members (paths) of the baseline')
flags.DEFINE_boolean('reads_data', False, 'the member reads the data itself (a whole network): '
                     'its input layers do not count in S')
flags.DEFINE_string('efficiency', 'params', 'params | flops')
flags.DEFINE_string('fan_in_convention', 'channels', 'channels | kernel')
flags.DEFINE_string('widths', None, 'Algorithm 1 widths (default 4,8,...,256)')
flags.DEFINE_integer('trials', 1000, 'Algorithm 1 initializations per width (>= 2)')
flags.DEFINE_boolean('intercept', True, 'fit log ratio = a + alpha S (default) or through 0')
flags.DEFINE_string('input_distribution', 'gaussian',
                    'Algorithm 1 input: gaussian | relu | center_pixel | constant')
flags.DEFINE_string('parameterization', 'as_given', 'as_given | ntk (Algorithm 1)')
flags.DEFINE_float('alpha', None, 'use this alpha (no fit)')
flags.DEFINE_float('alpha_stderr', None, 'with --alpha: its standard error (for intervals)')
flags.DEFINE_float('alpha_intercept', 0.0, 'with --alpha: the intercept a of the variance law '
                   'exp(a + alpha S) - 1')
flags.DEFINE_string('alpha_from', None, 'JSON with "alpha" (and "alpha_stderr")')
flags.DEFINE_integer('max_width', None, 'search widths 1..max_width (default max(256, 2 n~))')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_integer('chunk_size', 50, 'initializations per vmapped chunk')
flags.DEFINE_string('json_out', None, 'write results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write the primal/dual curves here (PNG/PDF)')


def _load_object(spec: str, flag: str):
  """``MODULE:NAME`` -> the object; MODULE an importable name or a .py path."""
  if not isinstance(spec, str) or spec.count(':') != 1 or not all(spec.split(':')):
    raise ValueError(f'{flag} must be MODULE:NAME (e.g. myblock:factory), got {spec!r}')
  mod_name, attr = spec.split(':')
  try:
    if mod_name.endswith('.py') or os.path.sep in mod_name:
      path = os.path.abspath(mod_name)
      if not os.path.isfile(path):
        raise ValueError(f'{flag}: no such file {mod_name!r}')
      name = '_ce_jax_user_' + os.path.splitext(os.path.basename(path))[0]
      spec_ = importlib.util.spec_from_file_location(name, path)
      module = importlib.util.module_from_spec(spec_)
      sys.modules[name] = module
      spec_.loader.exec_module(module)
    else:
      if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
      module = importlib.import_module(mod_name)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [''])[0]
    raise ValueError(f'{flag}: cannot import {mod_name!r}: {type(e).__name__}: {first}') from None
  if not hasattr(module, attr):
    raise ValueError(f'{flag}: module {mod_name!r} has no attribute {attr!r}')
  return getattr(module, attr)


def parse_member_args(text) -> dict:
  """``'a=1,b=0.5,c=x'`` -> ``{'a': 1, 'b': 0.5, 'c': 'x'}`` (ints, floats, true/false parsed)."""
  if text is None:
    return {}
  out = {}
  for item in str(text).split(','):
    key, sep, value = item.partition('=')
    key, value = key.strip(), value.strip()
    if not sep or not key.isidentifier() or not value:
      raise ValueError(f'--member_args must be key=value,key=value (e.g. channels=160), '
                       f'got {item.strip()!r} in {text!r}')
    if key in out:
      raise ValueError(f'--member_args gives {key!r} twice: {text!r}')
    if value.lower() in ('true', 'false'):
      parsed = value.lower() == 'true'
    else:
      parsed = value
      for kind in (int, float):
        try:
          parsed = kind(value)
          break
        except ValueError:
          pass
    out[key] = parsed
  return out


def _is_builder(obj) -> bool:
  """Callable whose parameters all have defaults (so it can be called with no arguments)."""
  try:
    params = inspect.signature(obj).parameters.values()
  except (TypeError, ValueError):
    return False
  return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
             for p in params)


def _call_builder(fn, kwargs: dict, what: str):
  """``fn(**kwargs)``; unknown keys and the builder's own ValueError/TypeError -> one line."""
  params = inspect.signature(fn).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    known = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in known]
    if unknown:
      raise ValueError(f'--member_args: {what} has no parameter {", ".join(map(repr, unknown))} '
                       f'(it takes {", ".join(known) or "none"})')
  try:
    return fn(**kwargs)
  except (TypeError, ValueError) as e:
    first = (str(e).strip().splitlines() or [''])[0]
    raise ValueError(f'{what}({", ".join(f"{k}={v!r}" for k, v in kwargs.items())}) failed: '
                     f'{first}') from None


def _width(text: str, flag: str):
  w = _validate.int_list(flag, text)
  return w[0] if len(w) == 1 and ',' not in str(text) else w


def build_member():
  from ce_jax.design import member as member_lib
  from ce_jax.design import presets  # pylint: disable=g-import-not-at-top
  if bool(FLAGS.member) == bool(FLAGS.preset):
    raise ValueError('give exactly one of --member=MODULE:FACTORY or --preset=NAME')
  member_args = parse_member_args(FLAGS.member_args)
  network = None
  if FLAGS.network:
    network = _load_object(FLAGS.network, '--network')
    if not callable(network):
      raise ValueError(f'--network {FLAGS.network!r} is not callable (builder(m, width))')
  if FLAGS.preset:
    _validate.choice('--preset', FLAGS.preset, presets.NAMES)
    member = _call_builder(getattr(presets, FLAGS.preset), member_args, f'preset {FLAGS.preset!r}')
    if FLAGS.input_shape or FLAGS.network:
      raise ValueError('--input_shape and --network do not apply to --preset (use --member)')
    return member
  obj = _load_object(FLAGS.member, '--member')
  built = None
  if callable(obj) and not isinstance(obj, member_lib.Member) and _is_builder(obj):
    # a preset builder (every parameter has a default); a factory with a default width, or a
    # Module class, returns something else (or fails without its width): a factory, below
    try:
      built = _call_builder(obj, member_args, f'--member {FLAGS.member!r}')
    except ValueError:
      if member_args:
        raise
    if isinstance(built, member_lib.Member):
      obj = built
  if member_args and not isinstance(built, member_lib.Member):
    raise ValueError(f'--member_args applies to a preset builder (a callable returning a '
                     f'ce_jax.design.member.Member); --member {FLAGS.member!r} is '
                     + ('a Member' if isinstance(obj, member_lib.Member) else
                        f'not one (called, it returned {type(built).__name__})'
                        if built is not None else 'not one'))
  if isinstance(obj, member_lib.Member):
    what = 'a preset builder' if built is not None else 'a Member'
    if FLAGS.input_shape:
      raise ValueError(f'--input_shape does not apply: --member names {what}, which has its own')
    if FLAGS.network:
      raise ValueError(f'--network does not apply: --member names {what} (its network, if any, '
                       f'is the Member\'s)')
    return obj
  if not callable(obj):
    raise ValueError(f'--member {FLAGS.member!r} is not callable: it must be a factory '
                     f'width -> flax.linen.Module, got {type(obj).__name__}')
  if not FLAGS.input_shape:
    raise ValueError('--input_shape is required with --member=MODULE:FACTORY (one example, '
                     'no batch axis, e.g. 32,32,64)')
  shape = _validate.int_list('--input_shape', FLAGS.input_shape)
  return member_lib.Member(obj, shape, network=network, name=FLAGS.member.split(':')[1],
                           reads_data=FLAGS.reads_data)


def resolve_alpha():
  """(alpha, stderr, intercept, covariance) given or in --alpha_from; None to fit."""
  if FLAGS.alpha is not None and FLAGS.alpha_from:
    raise ValueError('conflicting flags: give --alpha or --alpha_from, not both')
  if FLAGS.alpha_stderr is not None and FLAGS.alpha is None:
    raise ValueError('--alpha_stderr needs --alpha')
  if FLAGS.alpha is not None:
    a = _validate.finite_positive('--alpha', FLAGS.alpha)
    se = FLAGS.alpha_stderr
    if se is not None and (not math.isfinite(se) or se < 0):
      raise ValueError(f'--alpha_stderr must be a finite number >= 0, got {se!r}')
    if not math.isfinite(FLAGS.alpha_intercept):
      raise ValueError(f'--alpha_intercept must be finite, got {FLAGS.alpha_intercept!r}')
    return a, se, FLAGS.alpha_intercept, 0.0
  if FLAGS.alpha_from:
    from ce_jax.theory import alpha as alpha_lib  # pylint: disable=g-import-not-at-top
    return tuple(alpha_lib.load_fit(FLAGS.alpha_from, '--alpha_from',
                                    FLAGS.fan_in_convention))
  return None


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ce_jax.theory import alpha as alpha_lib
  from ce_jax.design import member as member_lib  # pylint: disable=g-import-not-at-top
  from ce_jax.studies import plotting
  from ce_jax.design import solver  # pylint: disable=g-import-not-at-top

  # Every flag and output path is checked before any work.
  efficiency = _validate.choice('--efficiency', FLAGS.efficiency, solver.EFFICIENCIES)
  convention = _validate.choice('--fan_in_convention', FLAGS.fan_in_convention,
                                member_lib.FAN_IN_CONVENTIONS)
  trials = _validate.positive_int('--trials', FLAGS.trials, minimum=2)
  _validate.choice('--input_distribution', FLAGS.input_distribution,
                   member_lib.INPUT_DISTRIBUTIONS)
  _validate.choice('--parameterization', FLAGS.parameterization, alpha_lib.PARAMETERIZATIONS)
  baseline_m = _validate.positive_int('--baseline_m', FLAGS.baseline_m)
  chunk = _validate.positive_int('--chunk_size', FLAGS.chunk_size)
  given = resolve_alpha()
  for path in (FLAGS.json_out, FLAGS.plot_out):
    try:
      cli.ensure_parent(path)
    except OSError as e:
      raise ValueError(f'cannot create the directory of {path!r}: {e.strerror}') from None
  member = build_member()
  if FLAGS.baseline_width is None:
    raise ValueError('--baseline_width is required (the baseline member width n~)')
  base = _width(FLAGS.baseline_width, '--baseline_width')
  widths = (list(alpha_lib.DEFAULT_WIDTHS) if FLAGS.widths is None
            else list(_validate.int_list('--widths', FLAGS.widths)))
  if isinstance(base, tuple):   # per-layer member: scale the baseline profile to each width
    widths = [tuple(max(1, round(n * b / max(base))) for b in base) for n in widths]
  max_width = FLAGS.max_width
  if max_width is None:
    max_width = max(256, 2 * max(member_lib.width_vector(base)))
  max_width = _validate.positive_int('--max_width', max_width)
  layers = member_lib.validate(member, base)
  print(f'member {member.name}: {len(layers)} weight layers at width {base!r}: '
        + ', '.join(f'{l.scope.split("/")[-1] or l.primitive} (fan-in {l.fan_in_channels}'
                    f'{"" if l.fan_in_kernel == l.fan_in_channels else "/" + str(l.fan_in_kernel)})'
                    for l in layers), flush=True)

  start = time.time()
  payload = {'member': member.name, 'member_args': parse_member_args(FLAGS.member_args),
             'efficiency': efficiency, 'fan_in_convention': convention,
             'layers': [l._asdict() for l in layers]}
  est = None
  if given is None:
    prof = member_lib.profile(member, widths if not isinstance(base, tuple)
                              else np.asarray(widths))
    work = np.asarray(prof.params, np.float64) + 1.0
    last = [0.0]

    def progress(i, done, total):
      now = time.time()
      if done == total or now - last[0] > 5:
        last[0] = now
        frac = (work[:i].sum() + work[i] * done / total) / work.sum()
        eta = (now - start) * (1 - frac) / max(frac, 1e-9)
        print(f'  alpha fit: width {widths[i]!r} ({i + 1}/{len(widths)}) {done}/{total} trials, '
              f'{now - start:.0f} s, about {eta:.0f} s left', flush=True)

    est = alpha_lib.estimate_alpha(member, widths, trials, jax.random.PRNGKey(FLAGS.seed),
                                   fan_in_convention=convention,
                                   input_distribution=FLAGS.input_distribution,
                                   intercept=FLAGS.intercept, chunk_size=chunk,
                                   parameterization=FLAGS.parameterization, progress=progress)
    a, se = est.fit.alpha, est.fit.alpha_stderr
    b, cov = est.fit.intercept, est.fit.covariance
    payload.update({
        'alpha': a, 'alpha_stderr': se, 'intercept': b, 'covariance': cov, 'trials': trials,
        'fit_intercept': FLAGS.intercept,
        'fits': {c: f._asdict() for c, f in est.fits.items()},
        'points': [{'width': p.width, 'params': p.params, 'flops': p.flops,
                    'fan_in_sum': p.fan_in_sum, 'ratio': p.ratio,
                    'ratio_stderr': p.ratio_stderr} for p in est.points]})
    print(f'alpha = {a:.4f} +- {se:.4f}, intercept {b:.4f} ({convention}; kernel convention: '
          f'{est.fits["kernel"].alpha:.4f}, channels: {est.fits["channels"].alpha:.4f}), '
          f'{time.time() - start:.1f} s', flush=True)
    payload['warnings'] = list(est.fit.warnings)   # a degenerate fit (alpha <= 0, ...)
    cli.print_warnings(est.fit.warnings)
    cli.write_json(FLAGS.json_out, payload)   # the fit is kept whatever happens next
  else:
    a, se, b, cov = given
    prof = member_lib.profile(member, widths if not isinstance(base, tuple)
                              else np.asarray(widths))
    payload.update({'alpha': a, 'alpha_stderr': se, 'intercept': b, 'points': [
        {'width': w, 'params': int(prof.params[i]), 'flops': int(prof.flops[i]),
         'fan_in_sum': float(prof.fan_in_sum[convention][i]), 'ratio': None,
         'ratio_stderr': None} for i, w in enumerate(widths)]})

  problem = solver.member_problem(member, base, baseline_m, efficiency=efficiency,
                                  fan_in_convention=convention, max_width=max_width)
  result = solver.solve(problem, a, se, intercept=b, covariance=cov)
  print(solver.format_result(result))
  js = solver.result_to_json(result)
  payload.update({
      'alpha_interval': js['alpha_interval'],
      'baseline': {'n': result.baseline.n, 'm': result.baseline.m,
                   'params': result.baseline.params, 'flops': result.baseline.flops,
                   'widths': list(result.baseline.widths), 'label': result.baseline.label},
      'primal': js['primal'], 'dual': js['dual'], 'strong_duality': result.strong_duality,
      'seconds': time.time() - start})
  cli.write_json(FLAGS.json_out, payload)
  if FLAGS.plot_out:
    plotting.plot_search(result, FLAGS.plot_out)
    print(f'plot: {FLAGS.plot_out}')


if __name__ == '__main__':
  cli.run_main(main)
