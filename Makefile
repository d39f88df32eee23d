# Developer entry points. Everything runs inside .venv (created on demand).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
LINT_PATHS := $(wildcard src tests examples benchmarks)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test demo lint bench clean

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[test]'
	touch $(STAMP)

test: venv
	$(VPY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(VPY) examples/quickstart.py

lint: venv
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)

# Benchmarks run in their own venv: Beanie (and its pydantic) stay out of the
# library's dependency set. `make bench BENCH_ARGS="--quick"` for a smoke run.
$(BENCH_PY):
	$(PYTHON) -m venv $(BENCH_VENV)

$(BENCH_STAMP): pyproject.toml | $(BENCH_PY)
	$(BENCH_PY) -m pip install --upgrade pip
	$(BENCH_PY) -m pip install -e '.[test]' 'beanie>=2,<3'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/run.py $(BENCH_ARGS)

# The failover load test (~40 s on 2 cores), deselected from `make test`.
.PHONY: failover
failover: venv
	$(VPY) -m pytest -m failover -s $(PYTEST_ARGS) tests/test_failover.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
