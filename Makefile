# ce_jax: two commands on a fresh machine (Python 3.11, pip, make): `make demo`, `make test`.
#
# Each stack is a venv built from a lock file in requirements/ (the exact versions CI tests; the
# lock wins over setup.cfg's lower bounds: ce_jax itself is installed with --no-deps):
#   .venv        requirements/py311.txt  Python 3.11, jax 0.10.2 (make demo, make test)
#   .venv-py312  requirements/py312.txt  Python 3.12, jax 0.12.0.1, the newest (make test-py312)
#   .venv-nt     requirements/nt.txt     Python 3.11, jax 0.5.3, neural-tangents 0.6.5 (test-nt)
# A venv is created anew when its lock file changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
NT_VENV ?= .venv-nt
PY312_VENV ?= .venv-py312
LOCK ?= requirements/py311.txt
NT_LOCK ?= requirements/nt.txt
PY312_LOCK ?= requirements/py312.txt
# Python 3.12 for test-py312: python3.12 on PATH, else pyenv's (override: make PYTHON312=...).
ifeq ($(origin PYTHON312), undefined)
PYTHON312 := $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
  /usr/local/bin/python3.12 /usr/bin/python3.12; do "$$p" -c 'import sys; \
  assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
endif
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2
# pytest workers (2 cores here); override with `make test PYTEST_WORKERS=4`.
PYTEST_WORKERS ?= 2
# -rs prints why each skipped test was skipped (the nt cross-checks outside .venv-nt).
PYTEST := -m pytest -q -rs -p no:cacheprovider --durations=15

.PHONY: install demo test test-fast test-nt test-py312 bench clean help

help:
	@echo "make demo         create $(VENV) from $(LOCK), run the main job (runs/demo)"
	@echo "make test         create $(VENV) if missing, run the test suite"
	@echo "make test-nt      neural-tangents cross-checks (-m nt) in the reference stack ($(NT_VENV))"
	@echo "make test-py312   the whole suite on Python 3.12 with the newest JAX ($(PY312_VENV))"
	@echo "make bench        NTK / convolution / training benchmarks (needs the [bench] extra)"

# $(call stack,VENV,PYTHON,LOCK): (re)create VENV from LOCK when the lock changed, then ce_jax
# itself, editable and without dependencies (the lock has them all).
define stack
	@test -n "$(2)" || { echo "no Python for $(1) (set PYTHON312=/path/to/python3.12)"; exit 1; }
	@if ! cmp -s $(3) $(1)/.lock; then \
	  echo "creating $(1) from $(3) with $(2)" && rm -rf $(1) && $(2) -m venv $(1) && \
	  $(1)/bin/pip install -q --upgrade pip setuptools wheel && \
	  $(1)/bin/pip install -q -r $(3) && cp $(3) $(1)/.lock; fi
	$(1)/bin/pip install -q --no-deps -e .
	$(1)/bin/pip check
endef

# $(call onednn,VENV,LOCK): compile the oneDNN extension against VENV's JAX FFI headers and
# oneDNN (one build per stack under ce_jax/models/native/_build). It needs a C++ compiler: g++ where
# installed, else zig's from PyPI (the cxx extra).
define onednn
	$(1)/bin/python -m ce_jax.models.native.onednn build || { $(1)/bin/pip install -q -c $(2) -e '.[cxx]' && \
	  $(1)/bin/python -m ce_jax.models.native.onednn build; }
	$(1)/bin/python -m ce_jax.models.native.onednn status
endef

$(VENV)/.installed: $(LOCK) setup.cfg pyproject.toml
	$(call stack,$(VENV),$(PYTHON),$(LOCK))
	$(call onednn,$(VENV),$(LOCK))
	touch $@

$(NT_VENV)/.installed: $(NT_LOCK) setup.cfg pyproject.toml
	$(call stack,$(NT_VENV),$(PYTHON),$(NT_LOCK))
	touch $@

$(PY312_VENV)/.installed: $(PY312_LOCK) setup.cfg pyproject.toml
	$(call stack,$(PY312_VENV),$(PYTHON312),$(PY312_LOCK))
	$(call onednn,$(PY312_VENV),$(PY312_LOCK))
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python experiments/demo.py --workdir=runs/demo

test: install
	$(BIN)/python -c "import jax, flax; print('stack: jax', jax.__version__, 'flax', flax.__version__)"
	$(BIN)/python $(PYTEST) -n $(PYTEST_WORKERS) tests

test-fast: install
	$(BIN)/python $(PYTEST) -n $(PYTEST_WORKERS) -m "not slow" tests

test-nt: $(NT_VENV)/.installed
	$(NT_VENV)/bin/python -c "import jax, neural_tangents; print('reference stack: jax', \
	  jax.__version__, 'neural-tangents', neural_tangents.__version__)"
	$(NT_VENV)/bin/python $(PYTEST) -m nt tests

test-py312: $(PY312_VENV)/.installed
	$(PY312_VENV)/bin/python -c "import sys, jax, flax; print('stack: Python', \
	  sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__)"
	CE_JAX_TEST_FULL_OPT=1 $(PY312_VENV)/bin/python $(PYTEST) -n $(PYTEST_WORKERS) tests

bench: install
	$(BIN)/pip install -q -c $(LOCK) -e '.[bench]'
	$(BIN)/python experiments/benchmark_ntk.py --json_out=runs/bench/ntk.json

clean:
	rm -rf $(VENV) $(NT_VENV) $(PY312_VENV) runs *.egg-info ce_jax/models/native/_build
