"""Algorithm 1's Monte Carlo: the generic member path vs the special-cased samplers.

Algorithm 1 (:func:`ce_jax.theory.alpha.estimate_alpha`) draws ``trials`` initializations of a member
at each width and measures one diagonal NTK entry. It reaches the member through the generic
:func:`ce_jax.theory.alpha.member_sampler` (any Flax module wrapped as a
:class:`ce_jax.design.member.Member`); before it, the library had one hand-written sampler per family
in :mod:`ce_jax.theory.variance`. Does the generality cost time? Cases, each at every width:

* ``bottleneck``: ``alpha.member_sampler(presets.bottleneck(...), n, x)`` vs
  ``variance.bottleneck_diag_sampler(n, x)`` (one path ``C -> n -> n -> C``, centre readout,
  input one 3x3 window of ``--channels`` features), widths ``--bottleneck_widths``;
* ``dense``: ``alpha.member_sampler(presets.dense(depth, input_dim), n, x)`` vs
  ``variance.dense_diag_sampler((n,) * (depth - 1), x)``, widths ``--dense_widths``.

Both variants sample every weight (``sampler='full_weights'``): the exact-in-law conditional
sampler that ``estimate_alpha`` takes by default for these two members draws other numbers;
``experiments/benchmark_alpha_fit.py`` times it.

The inputs are the ones ``estimate_alpha`` draws (``fold_in(key, 0)``) and width ``i`` uses
``fold_in(key, i + 1)`` for its trials, for both variants: the same initializations, so the
moments must agree up to float rounding (``max_rel_err`` of mean, variance, ratio and its
standard error).

Each timed call is ``variance.ntk_moments(sampler, key, trials, chunk_size=...)`` (what
``estimate_alpha`` runs per width). Two timings per variant and width:

* ``cold``: a fresh sampler, so tracing and compilation are included (what one Algorithm 1 run
  pays per width);
* ``steady``: the same call again on that sampler (compiled functions cached on it).

Rounds are interleaved (in each round every width of every case runs both variants, in
alternating order); medians of ``--rounds`` rounds are reported per width, summed over the widths
of a case, and ``ratio = generic_s / special_s`` (target <= 1.2).

  python experiments/benchmark_alpha.py --json_out=/tmp/bench_alpha.json
  python experiments/benchmark_alpha.py --quick      # tiny sizes (tests)
"""

from __future__ import annotations

import statistics
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from ce_jax import _validate
from ce_jax.theory import alpha
from ce_jax.tools import benchmarking
from ce_jax.tools import cli
from ce_jax.design import member as member_lib
from ce_jax.design import presets
from ce_jax.theory import variance

FLAGS = flags.FLAGS
rel_err = benchmarking.max_relative_error
CASES = ('bottleneck', 'dense')
VARIANTS = ('generic', 'special')
MOMENTS = ('mean', 'var', 'ratio', 'ratio_stderr')

flags.DEFINE_list('cases', list(CASES), 'cases to run (bottleneck, dense)')
flags.DEFINE_integer('trials', 1000, 'initializations per width (Algorithm 1 Monte Carlo)')
flags.DEFINE_list('bottleneck_widths', ['4', '8', '16', '32', '64', '128', '256'],
                  'path widths of the bottleneck case')
flags.DEFINE_integer('channels', 256, 'input = output channels of the bottleneck path')
flags.DEFINE_list('dense_widths', ['8', '16', '32', '64', '128', '256'],
                  'hidden widths of the dense case')
flags.DEFINE_integer('depth', 6, 'weight matrices of the dense member')
flags.DEFINE_integer('input_dim', 748, 'input dimension of the dense member')
flags.DEFINE_integer('chunk_size', 50, 'initializations per vmapped chunk (as estimate_alpha)')
flags.DEFINE_integer('seed', 0, 'PRNG seed (the key of estimate_alpha)')
cli.define_benchmark_flags('8 trials, bottleneck widths 4,8 on 16 channels, dense depth 3 on 16 '
                           'inputs at widths 4,8, chunks of 4, 1 round', rounds=('rounds', 3))


# ---------------------------------------------------------------------------------------------
# Samplers.


def bottleneck_case(widths, channels, key):
  """The bottleneck case: its name, widths and ``{variant: width -> sampler}`` makers."""
  member = presets.bottleneck(in_channels=channels, out_channels=channels)
  x = member_lib.example_batch(member, jax.random.fold_in(key, 0), 1, 'gaussian')
  makers = {
      'generic': lambda n: alpha.member_sampler(member, n, x, sampler='full_weights'),
      'special': lambda n: variance.bottleneck_diag_sampler(
          n, x, in_channels=channels, out_channels=channels)}
  return {'name': f'bottleneck {channels} -> n -> n -> {channels} (3x3 window, centre readout)',
          'kind': 'bottleneck', 'widths': list(widths), 'makers': makers}


def dense_case(widths, depth, input_dim, key):
  """The dense case: its name, widths and ``{variant: width -> sampler}`` makers."""
  member = presets.dense(depth, input_dim)
  x = alpha.block_input('dense', jax.random.fold_in(key, 0), input_dim=input_dim)
  makers = {
      'generic': lambda n: alpha.member_sampler(member, n, x, sampler='full_weights'),
      'special': lambda n: variance.dense_diag_sampler((n,) * (depth - 1), x)}
  return {'name': f'dense depth {depth} on {input_dim}-d inputs, hidden widths n',
          'kind': 'dense', 'widths': list(widths), 'makers': makers}


# ---------------------------------------------------------------------------------------------
# Timing.


def _moments_call(sampler, key, trials, chunk_size):
  return variance.ntk_moments(sampler, key, trials, chunk_size=chunk_size)


def run(cases, key, trials, chunk_size, rounds, log=print):
  """Times and checks every case; returns the list of result dicts (one per case)."""
  times = {}      # (case index, width index, variant, 'cold'|'steady') -> [seconds]
  moments = {}    # (case index, width index, variant) -> Moments of the first round
  for rnd in range(rounds):
    log(f'round {rnd + 1}/{rounds}')
    for ci, c in enumerate(cases):
      for wi, n in enumerate(c['widths']):
        order = VARIANTS if (rnd + wi) % 2 == 0 else VARIANTS[::-1]
        k = jax.random.fold_in(key, wi + 1)
        for variant in order:
          t0 = time.perf_counter()
          sampler = c['makers'][variant](n)
          mom = _moments_call(sampler, k, trials, chunk_size)
          cold = time.perf_counter() - t0
          t0 = time.perf_counter()
          mom2 = _moments_call(sampler, k, trials, chunk_size)
          steady = time.perf_counter() - t0
          times.setdefault((ci, wi, variant, 'cold'), []).append(cold)
          times.setdefault((ci, wi, variant, 'steady'), []).append(steady)
          if rnd == 0:
            moments[(ci, wi, variant)] = mom
            if rel_err(mom2.ratio, mom.ratio) != 0.0:
              raise RuntimeError(f'{c["kind"]} n={n} {variant}: a repeated call with the same '
                                 f'key gave other numbers')
          log(f'  {c["kind"]} n={n} {variant}: cold {cold:.3f} s, steady {steady:.3f} s')
  results = []
  for ci, c in enumerate(cases):
    per_width = []
    for wi, n in enumerate(c['widths']):
      g, s = moments[(ci, wi, 'generic')], moments[(ci, wi, 'special')]
      row = {'width': n}
      for timing in ('cold', 'steady'):
        for variant in VARIANTS:
          row[f'{variant}_{timing}_s'] = statistics.median(times[(ci, wi, variant, timing)])
          row[f'{variant}_{timing}_all_s'] = times[(ci, wi, variant, timing)]
        row[f'{timing}_ratio'] = row[f'generic_{timing}_s'] / row[f'special_{timing}_s']
      row['moments'] = {v: {name: float(getattr(m, name)[0]) for name in MOMENTS}
                        for v, m in (('generic', g), ('special', s))}
      row['max_rel_err'] = {name: rel_err(getattr(g, name), getattr(s, name))
                            for name in MOMENTS}
      per_width.append(row)
    res = {'name': c['name'], 'kind': c['kind'], 'widths': c['widths'], 'per_width': per_width}
    for timing in ('cold', 'steady'):
      for variant in VARIANTS:
        res[f'{variant}_{timing}_s'] = sum(r[f'{variant}_{timing}_s'] for r in per_width)
      res[f'{timing}_ratio'] = res[f'generic_{timing}_s'] / res[f'special_{timing}_s']
    res['max_rel_err'] = max(max(r['max_rel_err'].values()) for r in per_width)
    results.append(res)
  return results


def main(argv):
  del argv  # positional arguments are refused by cli.run_main
  # Every flag is checked, also those --quick replaces.
  cases_arg = [c.strip() for c in FLAGS.cases if c.strip()]
  trials = _validate.positive_int('trials', FLAGS.trials, minimum=2)
  chunk_size = _validate.positive_int('chunk_size', FLAGS.chunk_size)
  rounds = _validate.positive_int('rounds', FLAGS.rounds)
  b_widths = _validate.int_list('bottleneck_widths', FLAGS.bottleneck_widths)
  channels = _validate.positive_int('channels', FLAGS.channels)
  d_widths = _validate.int_list('dense_widths', FLAGS.dense_widths)
  depth = _validate.positive_int('depth', FLAGS.depth, minimum=2)
  input_dim = _validate.positive_int('input_dim', FLAGS.input_dim)
  if not cases_arg:
    raise ValueError(f'cases must name at least one of {", ".join(CASES)}, got []')
  for c in cases_arg:
    _validate.choice('cases', c, CASES)
  if FLAGS.quick:
    cases_arg = list(CASES)
    trials, chunk_size, rounds = 8, 4, 1
    b_widths, channels = [4, 8], 16
    d_widths, depth, input_dim = [4, 8], 3, 16
  key = jax.random.PRNGKey(FLAGS.seed)
  cases = []
  if 'bottleneck' in cases_arg:
    cases.append(bottleneck_case(b_widths, channels, key))
  if 'dense' in cases_arg:
    cases.append(dense_case(d_widths, depth, input_dim, key))
  results = run(cases, key, trials, chunk_size, rounds, log=logging.info)
  print(f'Algorithm 1 Monte Carlo (variance.ntk_moments, {trials} trials per width, chunks of '
        f'{chunk_size}), float32, median of {rounds} interleaved rounds (seconds)')
  print(f'{"case":<12} {"width":>6} {"generic cold":>13} {"special cold":>13} {"ratio":>6} '
        f'{"generic steady":>15} {"special steady":>15} {"ratio":>6} {"err":>8}')
  for r in results:
    for w in r['per_width']:
      print(f'{r["kind"]:<12} {w["width"]:>6} {w["generic_cold_s"]:13.3f} '
            f'{w["special_cold_s"]:13.3f} {w["cold_ratio"]:6.3f} {w["generic_steady_s"]:15.3f} '
            f'{w["special_steady_s"]:15.3f} {w["steady_ratio"]:6.3f} '
            f'{max(w["max_rel_err"].values()):8.1e}')
    print(f'{r["kind"]:<12} {"all":>6} {r["generic_cold_s"]:13.3f} {r["special_cold_s"]:13.3f} '
          f'{r["cold_ratio"]:6.3f} {r["generic_steady_s"]:15.3f} {r["special_steady_s"]:15.3f} '
          f'{r["steady_ratio"]:6.3f} {r["max_rel_err"]:8.1e}')
  cli.write_json(FLAGS.json_out, {
      'benchmark': 'Algorithm 1 Monte Carlo: generic member_sampler vs special-cased samplers',
      'settings': {'cases': cases_arg, 'trials': trials, 'chunk_size': chunk_size,
                   'rounds': rounds, 'bottleneck_widths': b_widths, 'channels': channels,
                   'dense_widths': d_widths, 'depth': depth, 'input_dim': input_dim,
                   'seed': FLAGS.seed, 'dtype': 'float32', 'quick': FLAGS.quick},
      'machine': benchmarking.machine(), 'versions': benchmarking.versions(),
      'cases': results})


if __name__ == '__main__':
  cli.run_main(main)
