# crossrank: setup and the full test run (unit tests, then real engines in two passes).
#   make setup   venv + deps, the elasticsearch-py 8 overlay, engine zips (cached)
#   make test    ruff, mypy, unit tests, integration pass 1 (ES 9 / OpenSearch) and pass 2 (ES 8),
#                then the built wheel in a fresh venv (imports, --help, unit tests)
#   make wheel-check  build the sdist and wheel, install the wheel[all,dev] into a fresh venv
#                and run the unit tests against it, without the source tree (.ci/check_wheel.sh)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON  ?= python3.11
VENV    := .venv
ES8     := .venv-es8
# Infinity (a peer rerank server) in its own venv: it pins sentence-transformers < 4 and
# numpy < 2. Its wheels are kept in INFINITY_WHEELS, so a later setup installs offline.
INFINITY        := .venv-infinity
INFINITY_SPEC   ?= infinity-emb[server,torch]==0.0.78
INFINITY_WHEELS ?= $(HOME)/.cache/crossrank/wheels/infinity-emb-0.0.78
BIN     := $(VENV)/bin
PY      := $(BIN)/python

# Pass 1 runs with the venv's clients (elasticsearch-py 9.x, opensearch-py 3.x);
# pass 2 overlays elasticsearch-py 8.x, which ES 8 servers require.
ENGINES_PASS1 ?= elasticsearch:9.3.2,opensearch:2.19.6,opensearch:3.6.0
ENGINES_PASS2 ?= elasticsearch:8.19.21
PYTEST_ARGS ?=

.PHONY: setup demo venv es8 engines test lint typecheck unit integration integration-pass1 \
        integration-pass2 wheel-check clean infinity

setup: venv es8 engines infinity

# The main job: set up, then the demo on a real OpenSearch node.
demo: setup
	$(PY) -m crossrank.adapters.cli.demo

venv:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"

es8: venv
	rm -rf $(ES8)
	$(PY) -m pip install -q --no-deps --target $(ES8) \
	    "elasticsearch>=8.15,<9" "elastic-transport>=8.15,<9"

# Infinity for integration_tests/test_infinity.py and benchmarks/bench_peers.py: installed
# from the wheel cache when it has everything, else the wheels are downloaded there first.
infinity:
	test -x $(INFINITY)/bin/infinity_emb || { \
	    rm -rf $(INFINITY) && $(PYTHON) -m venv $(INFINITY) && \
	    { $(INFINITY)/bin/pip install -q --no-index --find-links $(INFINITY_WHEELS) \
	        "$(INFINITY_SPEC)" 2>/dev/null || \
	      { $(INFINITY)/bin/pip download -q -d $(INFINITY_WHEELS) "$(INFINITY_SPEC)" && \
	        $(INFINITY)/bin/pip install -q --no-index --find-links $(INFINITY_WHEELS) \
	            "$(INFINITY_SPEC)"; }; }; }

engines: venv
	$(PY) -m crossrank.adapters.nodes fetch $(ENGINES_PASS1) $(ENGINES_PASS2)

# The whole check, as CI runs it: the last step tests the built wheel, installed alone.
test: lint typecheck unit integration wheel-check

lint:
	$(BIN)/ruff check .

# mypy reads the package as installed (crossrank.adapters, crossrank.reranker) through the
# links in .typecheck/, so imports between the two resolve to real types, not Any.
typecheck:
	MYPYPATH=.typecheck $(BIN)/mypy -p crossrank.adapters -p crossrank.reranker

unit:
	$(PY) -m pytest tests $(PYTEST_ARGS)

integration: integration-pass1 integration-pass2

integration-pass1:
	CROSSRANK_ENGINES="$(ENGINES_PASS1)" $(PY) -m pytest integration_tests $(PYTEST_ARGS)

integration-pass2:
	PYTHONPATH="$(CURDIR)/$(ES8)" CROSSRANK_ENGINES="$(ENGINES_PASS2)" \
	    $(PY) -m pytest integration_tests $(PYTEST_ARGS)

# Ship what is tested: after setup (build and twine are dev extras). Several minutes: the fresh
# venv installs torch again, from pip's cache.
wheel-check:
	PYTHON="$(PYTHON)" DEV_PYTHON="$(abspath $(PY))" PYTEST_ARGS="$(PYTEST_ARGS)" \
	    bash .ci/check_wheel.sh

clean:
	rm -rf $(VENV) $(ES8) $(INFINITY) .mypy_cache .ruff_cache .pytest_cache
