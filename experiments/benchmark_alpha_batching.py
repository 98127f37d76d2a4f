r"""Algorithm 1's Monte Carlo: trials one after the other (lax.map) vs vmap over initializations.

  python experiments/benchmark_alpha_batching.py --trials=1000 --json_out=/tmp/batching.json

The bottleneck fit of ``alpha.estimate_alpha`` (widths 4..256) timed whole, in interleaved rounds,
with the library's batching (convolutional samplers run their trials sequentially) and with a
plain ``jax.vmap`` over initializations (what batched weights make grouped convolutions of);
the fitted alpha must agree to float rounding. JSON: ``seconds`` per variant (lists),
``median``, ``speedup``, ``alpha`` per variant.
"""

from __future__ import annotations

import time

from absl import flags

from ce_jax.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('trials', 1000, 'initializations per width')
flags.DEFINE_string('widths', '4,8,16,32,64,128,256', 'bottleneck widths')
flags.DEFINE_integer('rounds', 2, 'interleaved rounds (median reported)')
flags.DEFINE_string('json_out', None, 'write the results here (JSON)')


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ce_jax import _validate  # pylint: disable=g-import-not-at-top
  from ce_jax.theory import variance
  from ce_jax.theory import alpha
  trials = _validate.positive_int('--trials', FLAGS.trials, minimum=2)
  widths = _validate.int_list('--widths', FLAGS.widths)
  rounds = _validate.positive_int('--rounds', FLAGS.rounds)
  cli.ensure_parent(FLAGS.json_out)
  library = variance._batched  # pylint: disable=protected-access
  variants = {'sequential': library, 'vmap': jax.vmap}
  seconds = {k: [] for k in variants}
  alphas = {}
  try:
    for r in range(rounds):
      order = list(variants) if r % 2 == 0 else list(variants)[::-1]
      for name in order:
        variance._batched = variants[name]  # pylint: disable=protected-access
        start = time.time()
        est = alpha.estimate_alpha('bottleneck', widths, trials, jax.random.PRNGKey(0))
        seconds[name].append(time.time() - start)
        alphas[name] = est.fit.alpha
        print(f'round {r} {name:>10}: {seconds[name][-1]:.1f} s, alpha {est.fit.alpha:.6f}',
              flush=True)
  finally:
    variance._batched = library  # pylint: disable=protected-access
  median = {k: float(np.median(v)) for k, v in seconds.items()}
  speedup = median['vmap'] / median['sequential']
  print(f'median: sequential {median["sequential"]:.1f} s, vmap {median["vmap"]:.1f} s, '
        f'speedup {speedup:.2f}x')
  cli.write_json(FLAGS.json_out, {'seconds': seconds, 'median': median, 'speedup': speedup,
                                  'alpha': alphas, 'trials': trials, 'widths': list(widths)})


if __name__ == '__main__':
  cli.run_main(main)
