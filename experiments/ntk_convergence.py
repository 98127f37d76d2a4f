r"""Fig. 2: the ensemble NTK converges to the Neural Mean Kernel as the multiplicity m grows.

  python experiments/ntk_convergence.py --depth=4 --width=1000 --multiplicities=1,10,100 \
      --num_angles=101 --nmk_samples=1000 --json_out=/tmp/fig2.json --plot_out=/tmp/fig2.png

Every curve is K(x_0, x_gamma) with x_0 = (1, 0), x_gamma = (cos gamma, sin gamma), gamma in
[-pi, pi], for the dense member of ``ce_jax.models.dense`` (``depth`` weight matrices, hidden width
``width``, scalar output):

* ``ensemble_ntk[m]``: K_e = (1/m) sum_j K(theta_j) of ONE ensemble of m independent members
  (Eq. 4; member NTKs averaged chunk by chunk, so memory does not grow with m);
* ``nmk`` / ``nmk_stderr``: the Neural Mean Kernel E_theta[K(theta)] (Eq. 5) by Monte Carlo over
  ``nmk_samples`` initializations of width ``nmk_width`` (default ``width``), independent of
  the ensembles;
* ``infinite_ntk``: the infinite-width NTK (ReLU arc-cosine recursion, ``ce_jax.theory.infinite``).

The JSON is written after every ensemble (``complete: false``: ``gamma`` and
the ensembles so far) and at the end (``complete: true``, with the NMK). Exit codes: 0 done,
1 the run failed, 2 bad flags or output paths (checked before any work).
"""

from __future__ import annotations

import time

from absl import flags
from absl import logging

from ce_jax.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('depth', 4, 'number of weight matrices (>= 2)')
flags.DEFINE_integer('width', 1000, 'hidden width of each member')
flags.DEFINE_string('multiplicities', '1,10,100', 'comma list of ensemble sizes m')
flags.DEFINE_integer('num_angles', 101, 'number of angles gamma in [-pi, pi] (>= 2)')
flags.DEFINE_integer('nmk_samples', 1000, 'Monte-Carlo initializations for the NMK (>= 2)')
flags.DEFINE_integer('nmk_width', None, 'hidden width for the NMK (default: --width)')
flags.DEFINE_integer('seed', 0, 'PRNG seed')
flags.DEFINE_integer('chunk_size', 32, 'members / initializations per vmapped chunk')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')
flags.DEFINE_string('plot_out', None, 'write a PNG like Fig. 2b here')


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ce_jax import _validate  # pylint: disable=g-import-not-at-top
  from ce_jax.studies import convergence
  from ce_jax.studies import plotting

  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  width = _validate.positive_int('--width', FLAGS.width)
  ms = _validate.distinct('--multiplicities',
                          _validate.int_list('--multiplicities', FLAGS.multiplicities))
  num_angles = _validate.positive_int('--num_angles', FLAGS.num_angles, minimum=2)
  nmk_samples = _validate.positive_int('--nmk_samples', FLAGS.nmk_samples, minimum=2)
  nmk_width = width if FLAGS.nmk_width is None else _validate.positive_int('--nmk_width',
                                                                             FLAGS.nmk_width)
  chunk = _validate.positive_int('--chunk_size', FLAGS.chunk_size)

  key = jax.random.PRNGKey(FLAGS.seed)
  start = time.time()
  last = [0.0]

  def progress(what, done, total):
    now = time.time()
    if done == total or now - last[0] > 10:
      last[0] = now
      logging.info('%s: %d/%d, %.0f s', what, done, total, now - start)

  partial = {}

  def on_ensemble(m, kernel):  # the ensembles so far, written as they come
    partial[str(m)] = kernel
    cli.write_json(FLAGS.json_out, {
        'complete': False, 'gamma': np.linspace(-np.pi, np.pi, num_angles), 'depth': depth,
        'width': width,
        'ensemble_ntk': partial, 'nmk_samples': nmk_samples, 'nmk_width': nmk_width,
        'seed': FLAGS.seed, 'seconds': time.time() - start})

  conv = convergence.ntk_convergence(key, depth=depth, width=width, multiplicities=ms,
                                  num_angles=num_angles, nmk_samples=nmk_samples,
                                  nmk_width=nmk_width, chunk_size=chunk, progress=progress,
                                  on_ensemble=on_ensemble)
  gamma, ens, inf = conv.gamma, conv.ensemble_ntk, conv.infinite_ntk
  elapsed = time.time() - start

  nmk_mean, nmk_se = conv.nmk, conv.nmk_stderr
  print(f'depth={depth} width={width} angles={num_angles} NMK: {nmk_samples} inits of width '
        f'{nmk_width}; {elapsed:.1f} s')
  print(f'{"m":>6} {"rms(K_e - NMK)":>15} {"max|K_e - NMK|":>15}')
  for m, k in ens.items():
    print(f'{m:>6} {np.sqrt(np.mean((k - nmk_mean) ** 2)):>15.5f} '
          f'{np.max(np.abs(k - nmk_mean)):>15.5f}')
  print(f'{"NMK vs infinite":>22}: rms {np.sqrt(np.mean((nmk_mean - inf) ** 2)):.5f}, '
        f'mean stderr {np.mean(nmk_se):.5f}')

  result = {
      'complete': True, 'gamma': gamma, 'depth': depth, 'width': width, 'infinite_ntk': inf,
      'nmk': nmk_mean,
      'nmk_stderr': nmk_se, 'ensemble_ntk': ens, 'nmk_samples': nmk_samples,
      'nmk_width': nmk_width, 'seed': FLAGS.seed, 'seconds': elapsed,
  }
  cli.write_json(FLAGS.json_out, result)
  if FLAGS.plot_out:
    plotting.plot_ntk_convergence(result, FLAGS.plot_out)
    logging.info('wrote %s', FLAGS.plot_out)


if __name__ == '__main__':
  cli.run_main(main)
