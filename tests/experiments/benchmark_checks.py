"""What the benchmark tests share: a ``--quick`` run's JSON and a bad flag's one-line error."""

from __future__ import annotations

import os

from conftest import load_json


def quick_json(binary, tmp_path, name: str, stdout_names: str) -> dict:
  """Runs ``experiments/<name>.py --quick --json_out=...``; its stdout must name
  ``stdout_names``. Returns the JSON it wrote."""
  out = os.path.join(tmp_path, f'{name}.json')
  proc = binary(name, '--quick', f'--json_out={out}')
  assert stdout_names in proc.stdout
  return load_json(out)


def assert_rejects(binary, name: str, arg: str, flag: str) -> None:
  """``experiments/<name>.py arg`` exits 2, its last stderr line ``<name>.py: error: <flag>...``."""
  proc = binary(name, arg, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(f'{name}.py: error: {flag}')
