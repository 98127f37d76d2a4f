# ce_jax: two commands on a fresh machine (Python 3.11, pip, make): `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
COMPAT_VENV ?= .venv-compat
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2
# pytest workers (2 cores here); override with `make test PYTEST_WORKERS=4`.
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-fast test-compat bench clean help

help:
	@echo "make demo         create $(VENV), install the pinned stack, run the main job (runs/demo)"
	@echo "make test         create $(VENV) if missing, install, run the test suite"
	@echo "make test-compat  core theory tests on the newest JAX, without neural-tangents/tensorflow"
	@echo "make bench        NTK / convolution / training benchmarks (needs the [bench] extra)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

# Reinstall whenever the pins change.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	@# The oneDNN extension needs a C++ compiler: g++ where installed, else zig's from PyPI.
	$(BIN)/python -m ce_jax.onednn build || { $(BIN)/pip install -e '.[cxx]' && \
	  $(BIN)/python -m ce_jax.onednn build; }
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python experiments/demo.py --workdir=runs/demo

test: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

test-fast: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" tests

$(COMPAT_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install --upgrade pip setuptools wheel
	$(COMPAT_VENV)/bin/pip install --upgrade jax flax optax numpy scipy absl-py pytest
	$(COMPAT_VENV)/bin/pip install --no-deps -e .
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/python -c "import jax, flax; print('compat stack: jax', jax.__version__, 'flax', flax.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/core
	@# The oneDNN extension on the newest JAX too, built against its FFI headers with the oneDNN
	@# that `make install` put in $(VENV) (skipped when $(VENV) has none, e.g. off Linux x86-64).
	if [ -f $(VENV)/include/oneapi/dnnl/dnnl.hpp ]; then \
	  export CE_JAX_ONEDNN_ROOT=$(abspath $(VENV)) CE_JAX_BUILD_DIR=$(abspath $(COMPAT_VENV))/ce_jax_build && \
	  $(COMPAT_VENV)/bin/python -m ce_jax.onednn build && \
	  $(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_onednn.py; fi

bench: install
	$(BIN)/pip install -e '.[bench]'
	$(BIN)/python experiments/benchmark_ntk.py --json_out=runs/bench/ntk.json

clean:
	rm -rf $(VENV) $(COMPAT_VENV) runs *.egg-info ce_jax/_build
