# Every target that runs code first makes sure .venv exists and holds the project
# (fresh machine: ~3 min; afterwards a no-op unless pyproject.toml changed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

DEMO_DIR   ?= demo_data
CACHE_ROOT ?= cache
RESULTS    ?= results/demo

.PHONY: help setup test test-fast demo bench bench-extract bench-distill clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

setup: $(STAMP)  ## create .venv and install the project (idempotent)

test: $(STAMP)  ## set up, then run the whole suite (slow end-to-end tests included)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## the suite without tests marked slow
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)  ## set up, then the whole pipeline on the generated demo corpus
	$(PY) -m distill.demo --data $(DEMO_DIR) --cache-root $(CACHE_ROOT) --out $(RESULTS)

bench: bench-extract bench-distill  ## all benchmarks (figures go in docs/performance.md)

bench-extract: $(STAMP)  ## extraction: ours vs naive vs compute floor
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_info.py

bench-distill: $(STAMP)  ## training: HDF5 vs memory, cached vs live teacher, RSS, metrics at 1M trials, encoders
	$(PY) benchmarks/bench_distill.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_encoders.py

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DEMO_DIR) results .bench .pytest_cache
