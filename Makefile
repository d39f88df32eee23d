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
PLAIN_VENV := .venv-plain
PLAIN_PY := $(PLAIN_VENV)/bin/python
PLAIN_STAMP := $(PLAIN_VENV)/.installed
LOWEST_VENV := .venv-pymongo-lowest
LOWEST_PY := $(LOWEST_VENV)/bin/python
LOWEST_STAMP := $(LOWEST_VENV)/.installed
LOWEST_PYMONGO := 4.17.0
LOWEST_MONGOENGINE := 0.29.2
LOWEST_PYTHON := 3.10
UVLOOP_VENV := .venv-uvloop
UVLOOP_PY := $(UVLOOP_VENV)/bin/python
UVLOOP_STAMP := $(UVLOOP_VENV)/.installed
RELEASE_VENV := .venv-release
RELEASE_PY := $(RELEASE_VENV)/bin/python
RELEASE_STAMP := $(RELEASE_VENV)/.installed
RELEASE_TOOLS := 'build>=1.2,<2' 'twine>=6.1,<8'
DIST_STAMP := dist/.checked
# The tracked files, and git's index so that adding or removing one rebuilds.
DIST_SOURCES := $(wildcard $(shell git ls-files 2>/dev/null) $(shell git rev-parse --git-path index 2>/dev/null))
DOCS_VENV := .venv-docs
DOCS_PY := $(DOCS_VENV)/bin/python
DOCS_STAMP := $(DOCS_VENV)/.installed
DOCS_TOOLS := 'mkdocs>=1.6,<2' 'mkdocs-material>=9.5,<10'
LINT_PATHS := $(wildcard src tests examples benchmarks)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test smoke demo lint compat bench clean test-pymongo-lowest test-uvloop

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[test,typing]'
	touch $(STAMP)

# The plain-install smoke test runs first; pytest runs whatever its outcome, and
# a failed smoke test fails `make test` once pytest has printed its summary.
test: venv
	@$(MAKE) --no-print-directory smoke; smoke=$$?; \
	echo "$(VPY) -m pytest $(PYTEST_ARGS)"; \
	$(VPY) -m pytest $(PYTEST_ARGS); tests=$$?; \
	if [ $$smoke -ne 0 ]; then \
		echo "make test: FAILED: the smoke test of a plain install (no extras)," \
			"see its output above pytest's; rerun it with: make smoke" >&2; \
		exit 1; \
	fi; \
	exit $$tests

# The wheel that `make dist` builds, installed without extras (no blinker, no
# Pillow) in a virtualenv made anew whenever the wheel is rebuilt.
$(PLAIN_STAMP): $(DIST_STAMP)
	rm -rf $(PLAIN_VENV)
	$(PYTHON) -m venv $(PLAIN_VENV)
	$(PLAIN_PY) -m pip install dist/*.whl
	touch $(PLAIN_STAMP)

# The README example, GridFS and a cascade on the plain install, against a
# throwaway replica set started (and stopped) by .venv's launcher.
smoke: venv $(PLAIN_STAMP)
	$(VPY) -m mongoengine_async.testing -- $(PLAIN_PY) tests/smoke/plain_install.py

# The sdist and the wheel, built from the sources git tracks (the wheel from
# the sdist), checked by twine and by tests/release/check_dist.py (what each
# archive holds, file by file). Build and twine live in their own venv.
$(RELEASE_PY):
	$(PYTHON) -m venv $(RELEASE_VENV)

$(RELEASE_STAMP): Makefile | $(RELEASE_PY)
	$(RELEASE_PY) -m pip install --upgrade pip
	$(RELEASE_PY) -m pip install $(RELEASE_TOOLS)
	touch $(RELEASE_STAMP)

.PHONY: dist
dist: $(DIST_STAMP)

$(DIST_STAMP): $(DIST_SOURCES) | $(RELEASE_STAMP)
	rm -rf dist build
	$(RELEASE_PY) -m build --outdir dist .
	$(RELEASE_PY) -m twine check --strict dist/*.tar.gz dist/*.whl
	$(RELEASE_PY) tests/release/check_dist.py dist
	touch $(DIST_STAMP)

# The docs site: docs/*.md into site/ (mkdocs.yml has the nav), with --strict
# so that a broken link or anchor, a missing page or a page left out of the nav
# fails. MkDocs and its theme live in their own venv.
$(DOCS_PY):
	$(PYTHON) -m venv $(DOCS_VENV)

$(DOCS_STAMP): Makefile | $(DOCS_PY)
	$(DOCS_PY) -m pip install --upgrade pip
	$(DOCS_PY) -m pip install $(DOCS_TOOLS)
	touch $(DOCS_STAMP)

.PHONY: docs
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_PY) -m mkdocs build --strict

# Other CPythons, X.Y in 3.10 3.12 3.13: pyenv's interpreters on this machine
# image ($(PYENV_ROOT)/versions/X.Y.*), else pythonX.Y on PATH.
# `make test-python-X.Y`: the suite in .venv-pyX.Y (editable, test and typing extras);
# `make smoke-python-X.Y`: the wheel of `make dist`, without extras, in a new
# .venv-plain-pyX.Y, and the plain-install smoke test on it.
PYENV_ROOT ?= $(HOME)/.pyenv
python_for = $(or $(lastword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))),python$(1))

# Kept (make would delete a pattern rule's stamp as an intermediate file).
.PRECIOUS: .venv-py%/.installed
.venv-py%/.installed: pyproject.toml
	rm -rf .venv-py$*
	$(call python_for,$*) -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install --upgrade pip
	.venv-py$*/bin/python -m pip install -e '.[test,typing]'
	touch $@

test-python-%: .venv-py%/.installed
	.venv-py$*/bin/python -m pytest $(PYTEST_ARGS)

smoke-python-%: venv $(DIST_STAMP)
	rm -rf .venv-plain-py$*
	$(call python_for,$*) -m venv .venv-plain-py$*
	.venv-plain-py$*/bin/python -m pip install dist/*.whl
	$(VPY) -m mongoengine_async.testing -- \
		.venv-plain-py$*/bin/python tests/smoke/plain_install.py

# The suite on the lowest PyMongo and MongoEngine that pyproject.toml allows,
# on the lowest Python it allows, in its own venv (`make test` runs on the
# newest releases that pip resolves).
$(LOWEST_STAMP): pyproject.toml Makefile
	rm -rf $(LOWEST_VENV)
	$(call python_for,$(LOWEST_PYTHON)) -m venv $(LOWEST_VENV)
	$(LOWEST_PY) -m pip install --upgrade pip
	$(LOWEST_PY) -m pip install -e '.[test,typing]' \
		'pymongo==$(LOWEST_PYMONGO)' 'mongoengine==$(LOWEST_MONGOENGINE)'
	touch $(LOWEST_STAMP)

test-pymongo-lowest: $(LOWEST_STAMP)
	$(LOWEST_PY) -m pytest $(PYTEST_ARGS)

# The suite on uvloop's event loop (tests/conftest.py's --loop=uvloop: every
# loop the tests make, also asyncio.run() in threads and scripts), uvloop
# installed in its own venv (it is in no extra of the package).
$(UVLOOP_STAMP): pyproject.toml Makefile
	rm -rf $(UVLOOP_VENV)
	$(PYTHON) -m venv $(UVLOOP_VENV)
	$(UVLOOP_PY) -m pip install --upgrade pip
	$(UVLOOP_PY) -m pip install -e '.[test,typing]' uvloop
	touch $(UVLOOP_STAMP)

test-uvloop: $(UVLOOP_STAMP)
	$(UVLOOP_PY) -m pytest --loop=uvloop $(PYTEST_ARGS)

demo: venv
	$(VPY) examples/quickstart.py

# ruff, then mypy and pyright on the package (their settings: pyproject.toml),
# pyright on the examples as a user's code (examples/pyrightconfig.json), then
# the typing tests (both checkers on tests/typing, see docs/typing.md).
lint: venv
	$(VPY) -m ruff check $(LINT_PATHS)
	$(VPY) -m ruff format --check $(LINT_PATHS)
	$(VPY) -m mypy
	$(VENV)/bin/pyright
	$(VENV)/bin/pyright -p examples
	$(VPY) -m pytest -q -p no:cacheprovider tests/test_typing.py

# MongoEngine's own test suite through this package, on sync aliases (see
# $(COMPAT_DIR)/README.md); its last line lists any unexpected failure. It uses
# port 27017. `make compat PYTEST_ARGS="-k delta"` runs part of it.
COMPAT_DIR ?= ../shared/compat

compat: venv
	@if [ -d $(COMPAT_DIR) ]; then $(COMPAT_DIR)/run-mongoengine-suite $(PYTEST_ARGS); \
	else echo "make compat: no $(COMPAT_DIR) here, so nothing to run"; fi

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

# N full runs (benchmarks/results/run-1.json ... run-N.json), then the table of
# their ranges (benchmarks/ranges.py) that docs/benchmarks.md shows; a run that
# disagreed with the raw driver shows in the table and fails the target.
N ?= 3

.PHONY: bench-runs
bench-runs: $(BENCH_STAMP)
	@status=0; results=; for n in $$(seq $(N)); do \
		$(BENCH_PY) benchmarks/run.py $(BENCH_ARGS) --out benchmarks/results/run-$$n \
			|| status=1; \
		results="$$results benchmarks/results/run-$$n.json"; \
	done; \
	$(BENCH_PY) benchmarks/ranges.py $$results && exit $$status

# The four randomised differential tests (tests/fuzz_budget.py) with large
# budgets, each on examples drawn from a new seed that is printed first:
# `make fuzz FUZZ_SEED=<printed seed>` replays a run, and e.g.
# `make fuzz FUZZ_QUERYSET=500` changes a budget. Tens of minutes on 2 cores.
ifeq ($(FUZZ_SEED),)
FUZZ_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
FUZZ_QUERYSET ?= 2000
FUZZ_SCHEMAS ?= 3000
FUZZ_DELTA ?= 2000
FUZZ_INTERLEAVINGS ?= 500

.PHONY: fuzz
fuzz: venv
	@echo "make fuzz: RANDOM_SEED=$(FUZZ_SEED) (replay: make fuzz FUZZ_SEED=$(FUZZ_SEED))"
	RANDOM_SEED=$(FUZZ_SEED) RANDOM_QUERYSET_EXAMPLES=$(FUZZ_QUERYSET) \
	RANDOM_SCHEMAS_EXAMPLES=$(FUZZ_SCHEMAS) RANDOM_DELTA_EXAMPLES=$(FUZZ_DELTA) \
	RANDOM_INTERLEAVINGS_EXAMPLES=$(FUZZ_INTERLEAVINGS) \
	$(VPY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/test_queryset_random.py \
		tests/test_random_schemas.py tests/test_delta_differential.py \
		tests/test_save_interleavings.py; \
	status=$$?; echo "make fuzz: RANDOM_SEED=$(FUZZ_SEED)"; exit $$status

# The failover load test (~40 s on 2 cores), deselected from `make test`, and
# the randomized failover workloads of a few fixed seeds
# (FAILOVER_RANDOM_SEEDS=first-last runs others).
.PHONY: failover
failover: venv
	$(VPY) -m pytest -m failover -s $(PYTEST_ARGS) tests/test_failover.py \
		tests/test_failover_random.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(PLAIN_VENV) $(LOWEST_VENV) $(UVLOOP_VENV) $(RELEASE_VENV) $(DOCS_VENV) .venv-py* .venv-plain-py* build dist site .pytest_cache .ruff_cache .mypy_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
