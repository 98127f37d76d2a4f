r"""Fig. 2: the ensemble NTK converges to the Neural Mean Kernel as the multiplicity m grows.

  python experiments/ntk_convergence.py --depth=4 --width=1000 --multiplicities=1,10,100 \
      --num_angles=101 --nmk_samples=1000 --json_out=/tmp/fig2.json --plot_out=/tmp/fig2.png

Every curve is K(x_0, x_gamma) with x_0 = (1, 0), x_gamma = (cos gamma, sin gamma), gamma in
[-pi, pi], for the dense member of SPEC section 1 (``depth`` weight matrices, hidden width
``width``, scalar output):

* ``ensemble_ntk[m]``: K_e = (1/m) sum_j K(theta_j) of ONE ensemble of m independent members
  (Eq. 4; member NTKs averaged chunk by chunk, so memory does not grow with m);
* ``nmk`` / ``nmk_stderr``: the Neural Mean Kernel E_theta[K(theta)] (Eq. 5) by Monte Carlo over
  ``nmk_samples`` initializations of width ``nmk_width`` (default ``width``), independent of
  the ensembles;
* ``infinite_ntk``: the infinite-width NTK (ReLU arc-cosine recursion, ``ce_jax.infinite``).
"""

from __future__ import annotations

import time

from absl import flags
from absl import logging

from ce_jax import cli

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


def plot(path, result):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  g = np.asarray(result['gamma'])
  nmk = np.asarray(result['nmk'])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  ms = list(result['ensemble_ntk'])
  colors = plt.cm.viridis(np.linspace(0.1, 0.9, len(ms)))
  for c, m in zip(colors, ms):
    ax.plot(g, result['ensemble_ntk'][m], color=c, lw=1, label=f'm = {m}')
  ax.plot(g, nmk, 'k-', lw=2, label=f'NMK ({result["nmk_samples"]} inits, n={result["nmk_width"]})')
  ax.fill_between(g, nmk - 2 * np.asarray(result['nmk_stderr']),
                  nmk + 2 * np.asarray(result['nmk_stderr']), color='k', alpha=0.2)
  ax.plot(g, result['infinite_ntk'], 'r--', lw=1, label='infinite width')
  ax.set_xlabel(r'$\gamma$')
  ax.set_ylabel(r'NTK$[x_0, x_\gamma]$')
  ax.set_title(f'depth {result["depth"]}, width {result["width"]}')
  ax.legend(fontsize=8)
  ax = axes[1]
  mv = np.array([int(m) for m in ms])
  rms = np.array([np.sqrt(np.mean((np.asarray(result['ensemble_ntk'][m]) - nmk) ** 2))
                  for m in ms])
  ax.loglog(mv, rms, 'o-', label=r'rms$(K_e - $NMK$)$')
  ax.loglog(mv, rms[0] / np.sqrt(mv / mv[0]), 'k:', label=r'$\propto 1/\sqrt{m}$')
  ax.set_xlabel('multiplicity m')
  ax.set_ylabel('rms deviation from the NMK')
  ax.legend(fontsize=8)
  fig.tight_layout()
  cli.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected positional arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ce_jax import _validate, infinite, variance  # pylint: disable=g-import-not-at-top

  depth = _validate.positive_int('--depth', FLAGS.depth, minimum=2)
  width = _validate.positive_int('--width', FLAGS.width)
  ms = _validate.int_list('--multiplicities', FLAGS.multiplicities)
  num_angles = _validate.positive_int('--num_angles', FLAGS.num_angles, minimum=2)
  nmk_samples = _validate.positive_int('--nmk_samples', FLAGS.nmk_samples, minimum=2)
  nmk_width = width if FLAGS.nmk_width is None else _validate.positive_int('--nmk_width',
                                                                             FLAGS.nmk_width)
  chunk = _validate.positive_int('--chunk_size', FLAGS.chunk_size)

  gamma = np.linspace(-np.pi, np.pi, num_angles)
  x0 = np.array([[1.0, 0.0]])
  xg = np.stack([np.cos(gamma), np.sin(gamma)], axis=1)
  key = jax.random.PRNGKey(FLAGS.seed)
  start = time.time()
  last = [0.0]

  def progress(what):
    def cb(done, total):
      now = time.time()
      if done == total or now - last[0] > 10:
        last[0] = now
        logging.info('%s: %d/%d, %.0f s', what, done, total, now - start)
    return cb

  hidden = (width,) * (depth - 1)
  sampler = variance.dense_ntk_sampler(hidden, x0, xg)
  ens = {}
  for i, m in enumerate(ms):
    ks = variance.sample_over_inits(sampler, jax.random.fold_in(key, i + 1), m,
                                    chunk_size=chunk, progress=progress(f'ensemble m={m}'))
    ens[str(m)] = np.asarray(ks, np.float64).mean(0)[0]
  nmk_sampler = sampler if nmk_width == width else variance.dense_ntk_sampler(
      (nmk_width,) * (depth - 1), x0, xg)
  nmk = variance.neural_mean_kernel(nmk_sampler, jax.random.fold_in(key, 0), nmk_samples,
                                    chunk_size=chunk, progress=progress('NMK'))
  inf = np.asarray(infinite.infinite_ntk(x0, xg, depth=depth, backend='jax'), np.float64)[0]
  elapsed = time.time() - start

  nmk_mean, nmk_se = nmk.mean[0], nmk.stderr[0]
  print(f'depth={depth} width={width} angles={num_angles} NMK: {nmk_samples} inits of width '
        f'{nmk_width}; {elapsed:.1f} s')
  print(f'{"m":>6} {"rms(K_e - NMK)":>15} {"max|K_e - NMK|":>15}')
  for m, k in ens.items():
    print(f'{m:>6} {np.sqrt(np.mean((k - nmk_mean) ** 2)):>15.5f} '
          f'{np.max(np.abs(k - nmk_mean)):>15.5f}')
  print(f'{"NMK vs infinite":>22}: rms {np.sqrt(np.mean((nmk_mean - inf) ** 2)):.5f}, '
        f'mean stderr {np.mean(nmk_se):.5f}')

  result = {
      'gamma': gamma, 'depth': depth, 'width': width, 'infinite_ntk': inf, 'nmk': nmk_mean,
      'nmk_stderr': nmk_se, 'ensemble_ntk': ens, 'nmk_samples': nmk_samples,
      'nmk_width': nmk_width, 'seed': FLAGS.seed, 'seconds': elapsed,
  }
  cli.write_json(FLAGS.json_out, result)
  if FLAGS.plot_out:
    plot(FLAGS.plot_out, cli._to_jsonable(result))  # pylint: disable=protected-access
    logging.info('wrote %s', FLAGS.plot_out)


if __name__ == '__main__':
  cli.run_main(main)
