# Developer entry points. Everything runs inside .venv (created on demand).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard src tests examples benchmarks)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test demo lint clean

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

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
