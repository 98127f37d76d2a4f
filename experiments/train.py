"""Trains one config: ``python experiments/train.py --config=CONFIG.py --workdir=DIR``.

The logic lives in :func:`ce_jax.training.train.train_and_evaluate` (importable from notebooks and other
binaries); this file only parses flags. Any config key can be overridden on the command line
(``--config.num_epochs=1``); a config file can take an argument after a colon
(``--config=experiments/configs/cifar_resnext29.py:cifar100,37x10d``). Rerunning the same
command resumes from the newest checkpoint in ``--workdir``.

Multi-host: start one process per host with ``--coordinator_address=HOST:PORT
--num_processes=P --process_id=I`` (``jax.distributed.initialize``).

Writes ``DIR/config.json`` (the config, checked on every rerun: a different config is refused
unless ``--config.overwrite=True``), ``DIR/summary.json``, ``DIR/metrics.jsonl``, TensorBoard
events and ``DIR/checkpoints``; ``DIR/.lock`` while it runs (a second run on DIR refuses).
The config is printed at ``--verbosity=1`` (it is always in ``DIR/config.json``).

Exit codes: 0 done; 1 the run failed (NaN/Inf, a full disk or another write error, no progress
with ``--config.fail_on_no_progress=True``); 2 invalid flags or config, DIR in use, DIR holding
a run of another config, DIR a file or under one. Errors are one line.
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging
from ml_collections import config_flags

from ce_jax.tools import guards

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and summary.json.')
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (multi-host only).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host only).')
flags.DEFINE_integer('process_id', None, 'This process (0 .. num_processes - 1).')


def main(argv):
  del argv  # positional arguments are a usage error (cli.run_main)
  if FLAGS.config is None:
    raise ValueError('--config is required (e.g. --config=experiments/configs/digits.py)')
  if not FLAGS.workdir:
    raise ValueError('--workdir is required')
  from ce_jax.training import train
  # Bad values fail with one line before anything slow (the device check needs the backend,
  # which must start after jax.distributed.initialize: train_and_evaluate repeats it).
  train.validate_config(FLAGS.config, device_count=1)
  guards.check_output_dir(FLAGS.workdir, '--workdir', required=True)
  train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  logging.vlog(1, 'config:\n%s', FLAGS.config)
  # Failures (NaN/Inf, write errors, no progress) become one line and exit code 1 in
  # guards.run_main; the config is in DIR/config.json.
  summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)  # no progress: a warning
  print(f'{"steps":>8} {"params":>10} {"train loss":>11} {"top-1 err":>10} {"top-5 err":>10} '
        f'{"params_l2":>12} {"wall_s":>8}')
  print(f'{summary["steps"]:>8d} {summary["params"]:>10d} {summary["final_train_loss"]:>11.4f} '
        f'{summary["test_error_top1"]:>10.4f} {summary["test_error_top5"]:>10.4f} '
        f'{summary["params_l2"]:>12.6g} {summary["wall_s"]:>8.1f}')
  print(f'summary: {os.path.join(FLAGS.workdir, "summary.json")}')


if __name__ == '__main__':
  guards.run_main(main)
