"""pytest plugin: per-test wall and CPU time and JAX compile events, written as JSON.

    PYTHONPATH=experiments COMPILE_PROFILE_OUT=prof.json \
      .venv/bin/python -m pytest -q -p pytest_compile_profile tests/theory tests/design tests/models

Records, for every test, its wall and CPU time (``time.process_time``: all threads of this
process) and the count and total duration of each ``jax.monitoring`` event whose name mentions
compile, trace or mlir (``/jax/core/compile/backend_compile_duration``,
``jaxpr_to_mlir_module_duration``, ``jaxpr_trace_duration``). Used for CHANGELOG.md, "Stacks:
install size, import time, suite time, benchmarks" (why the suite is slower on newer JAX). Run
without ``-n`` (one process sees every test).
"""

import collections
import json
import os
import time

import jax.monitoring
import pytest

_events = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
_current = ['<collection>']
_rows = {}


def _listener(event, duration, *args, **kwargs):
  del args, kwargs
  if 'compile' in event or 'trace' in event or 'mlir' in event:
    entry = _events[_current[0]][event]
    entry[0] += 1
    entry[1] += duration


jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  del nextitem
  _current[0] = item.nodeid
  wall, cpu = time.perf_counter(), time.process_time()
  yield
  _rows[item.nodeid] = {'wall': time.perf_counter() - wall, 'cpu': time.process_time() - cpu}


def pytest_sessionfinish(session):
  del session
  import jax  # pylint: disable=import-outside-toplevel
  for test, events in _events.items():
    _rows.setdefault(test, {})['events'] = {name: list(v) for name, v in events.items()}
  with open(os.environ.get('COMPILE_PROFILE_OUT', 'compile_profile.json'), 'w') as f:
    json.dump({'jax': jax.__version__, 'rows': _rows}, f, indent=1)
