r"""Audit of bad inputs: runs the table of ``tests/bad_input_cases.py`` and classifies every case.

    python experiments/audit_inputs.py                # every case, a table by binary and module
    python experiments/audit_inputs.py -j 2 --details # 2 fork servers; every case not clear
    python experiments/audit_inputs.py --spawn        # a fresh interpreter per binary case
    python experiments/audit_inputs.py --repo=../old  # the binaries and library of a checkout

Classes: clear one-line error / traceback or unclear / silently wrong (exit 0) / hang
(timeout) / crash (signal); see ``tests/bad_input_cases.py``. ``--json_out`` writes every
outcome. Exit code 0 when every case is clear, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests')


def _load_cases(repo: str | None = None):
  spec = importlib.util.spec_from_file_location('bad_input_cases',
                                                os.path.join(TESTS, 'bad_input_cases.py'))
  mod = importlib.util.module_from_spec(spec)
  sys.modules['bad_input_cases'] = mod
  spec.loader.exec_module(mod)
  if repo:
    mod.REPO = os.path.abspath(repo)
    mod.EXPERIMENTS = os.path.join(mod.REPO, 'experiments')
  return mod


def run_binaries(mod, cases, jobs: int, spawn: bool, progress=None):
  base = tempfile.mkdtemp(prefix='ce_jax_audit_')
  local = threading.local()
  runners = []
  lock = threading.Lock()

  def runner():
    if not hasattr(local, 'runner'):
      local.runner = mod.Spawn() if spawn else mod.ForkServer()
      with lock:
        runners.append(local.runner)
    return local.runner

  def one(case):
    outcome, _, _ = mod.run_binary_case(case, runner(), base)
    if progress:
      progress(outcome)
    return outcome

  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
      return list(pool.map(one, cases))
  finally:
    for r in runners:
      r.close()
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(base, ignore_errors=True)


_API_TIMEOUT = 60


def api_worker(start: int) -> None:
  """Runs the API cases from index ``start``, one JSON outcome per line (hang: SIGALRM)."""
  mod = _load_cases()
  cases = mod.api_cases()

  class Hang(BaseException):
    pass

  def alarm(signum, frame):
    raise Hang()

  signal.signal(signal.SIGALRM, alarm)
  for i in range(start, len(cases)):
    case = cases[i]
    print(json.dumps({'start': i}), flush=True)
    signal.alarm(_API_TIMEOUT)
    try:
      outcome = mod.run_api_case(case)
    except Hang:
      outcome = mod.Outcome(case.id, case.name.split('.')[0], 'hang',
                            f'still running after {_API_TIMEOUT} s', _API_TIMEOUT)
    finally:
      signal.alarm(0)
    print(json.dumps({'index': i, 'outcome': list(outcome)}), flush=True)


def run_api(mod, repo: str):
  """API cases in a worker process (restarted after a crash, the case counted as one)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = repo + os.pathsep + env.get('PYTHONPATH', '')
  env.setdefault('JAX_PLATFORMS', 'cpu')
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  outcomes, start, names = [], 0, None
  while True:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--api-worker',
                             str(start)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=tempfile.gettempdir())
    current = None
    for line in proc.stdout:
      msg = json.loads(line)
      if 'start' in msg:
        current = msg['start']
      else:
        outcomes.append(mod.Outcome(*msg['outcome']))
        current = None
    rc = proc.wait()
    if current is None:
      return outcomes
    if names is None:
      names = [c.id for c in mod.api_cases()]
    outcomes.append(mod.Outcome(names[current], names[current].split('.')[0], 'crash',
                                f'the process died (exit {rc})', 0.0))
    start = current + 1


def table(outcomes, title: str, kinds, kind_names) -> str:
  by = collections.OrderedDict()
  for o in outcomes:
    by.setdefault(o.group, collections.Counter())[o.kind] += 1
  width = max([len(title)] + [len(g) for g in by]) + 2
  head = f'{title:<{width}}{"cases":>6}' + ''.join(f'{k:>9}' for k in kinds)
  lines = [head, '-' * len(head)]
  total = collections.Counter()
  for g, c in by.items():
    total.update(c)
    lines.append(f'{g:<{width}}{sum(c.values()):>6}' + ''.join(f'{c[k]:>9}' for k in kinds))
  lines.append('-' * len(head))
  lines.append(f'{"total":<{width}}{sum(total.values()):>6}'
               + ''.join(f'{total[k]:>9}' for k in kinds))
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--api-worker', type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument('-j', '--jobs', type=int, default=1, help='binary cases run at once')
  parser.add_argument('--spawn', action='store_true', help='a fresh interpreter per case')
  parser.add_argument('--repo', default=None, help='checkout whose binaries/library to audit')
  parser.add_argument('--only', default=None, help='comma list of binaries (or "api")')
  parser.add_argument('--details', action='store_true', help='list every case that is not clear')
  parser.add_argument('--json_out', default=None, help='write every outcome here')
  args = parser.parse_args(argv)
  if args.api_worker is not None:
    api_worker(args.api_worker)
    return 0
  if args.jobs < 1:
    parser.error(f'--jobs must be >= 1, got {args.jobs}')
  mod = _load_cases(args.repo)
  only = set(args.only.split(',')) if args.only else None
  cases = [c for c in mod.BINARY_CASES if only is None or c.binary in only]
  t0 = time.time()
  done = [0]

  def progress(o):
    done[0] += 1
    if o.kind != 'clear' or done[0] % 25 == 0:
      print(f'  [{done[0]}/{len(cases)}] {o.kind:8s} {o.case_id}', file=sys.stderr, flush=True)

  binary = run_binaries(mod, cases, args.jobs, args.spawn, progress) if cases else []
  api = run_api(mod, mod.REPO) if only is None or 'api' in only else []
  kinds = mod.KINDS
  print(f'Bad-input audit of {mod.REPO} ({len(binary)} binary cases '
        f'({"spawn" if args.spawn else "fork server"}), {len(api)} API cases, '
        f'{time.time() - t0:.0f} s)\n')
  print('columns: ' + ', '.join(f'{k} = {mod.KIND_NAMES[k]}' for k in kinds) + '\n')
  if binary:
    print(table(binary, 'binary', kinds, mod.KIND_NAMES) + '\n')
  if api:
    print(table(api, 'API (module)', kinds, mod.KIND_NAMES) + '\n')
  bad = [o for o in binary + api if o.kind != 'clear']
  if args.details and bad:
    print('not clear:')
    for o in bad:
      print(f'  {o.kind:8s} {o.case_id}: {o.detail}')
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump([o._asdict() for o in binary + api], f, indent=1)
  return 0 if not bad else 1


if __name__ == '__main__':
  sys.exit(main())
