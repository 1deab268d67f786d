# Every target that runs code first makes sure .venv exists and holds the project
# (fresh machine: docs/performance.md#set-up; afterwards a no-op unless pyproject.toml or the lock changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

DEMO_DIR   ?= demo_data
CACHE_ROOT ?= cache
RESULTS    ?= results/demo
# The suite's worker processes (pytest-xdist): one per core. Each test module runs whole in one worker,
# so its shared runs are made once; TEST_WORKERS=0 runs everything in this process (--pdb, -x, -s).
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: help setup lock check-deps lint test test-fast demo bench bench-extract bench-distill clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

LOCK   := requirements.lock

# The environment is the lock file: every package at one version, hash-checked, so two fresh
# machines a month apart install the same thing. The project itself goes in editable, without
# dependencies (they all came from the lock). Then the smoke check loads every compiled piece.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) scripts/smoke_check.py
	@touch $@

setup: $(STAMP)  ## create .venv and install the project from requirements.lock (idempotent)

lock:  ## regenerate requirements.lock from pyproject.toml (after changing a dependency)
	@test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q 'uv>=0.5'; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra cluster --extra faces-dlib --universal \
		--python-version 3.11 --generate-hashes --quiet -o $(LOCK)

check-deps:  ## newest releases pyproject allows, in a throwaway venv, through the smoke check
	rm -rf .check-deps && $(PYTHON) -m venv .check-deps
	.check-deps/bin/pip install -q --upgrade pip
	.check-deps/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[test,faces-dlib]'
	.check-deps/bin/pip freeze --exclude-editable > .check-deps/resolved.txt
	.check-deps/bin/python scripts/smoke_check.py
	.check-deps/bin/python scripts/lock_drift.py $(LOCK) .check-deps/resolved.txt

lint: $(STAMP)  ## ruff: lint and format check (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint  ## set up, lint (ruff check + format --check), then the whole suite (slow end-to-end tests included)
	$(PYTEST)

test-fast: $(STAMP)  ## the suite without tests marked slow
	$(PYTEST) -m "not slow"

demo: $(STAMP)  ## set up, then the whole pipeline on the generated demo corpus
	$(PY) -m distill.demo --data $(DEMO_DIR) --cache-root $(CACHE_ROOT) --out $(RESULTS)

bench: bench-extract bench-distill  ## all benchmarks (figures go in docs/performance.md)

bench-extract: $(STAMP)  ## extraction: ours vs naive vs compute floor; cache open/reads/loader memory at 1.1 M items
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_info.py
	$(PY) benchmarks/bench_scale.py

bench-distill: $(STAMP)  ## training: HDF5 vs memory, cached vs live teacher, RSS, metrics at 1M trials, encoders
	$(PY) benchmarks/bench_distill.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_encoders.py

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DEMO_DIR) results .bench .pytest_cache
