# mlplab: every target bootstraps .venv itself. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev
TEST_EXTRAS ?= dev,server,ray,slurm
TEST_STAMP := $(VENV)/.installed-test
ARGS ?=
SWEEP ?= default
RUN ?=
HOST ?= 127.0.0.1
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help venv run test sweep tune ui rerun bench lint clean server server-stop

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
	@touch $(TEST_STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev extra

run: $(STAMP) ## run the pipeline once (the tutorial experiment); ARGS="key=value ..."
	$(PY) pipelines/run.py $(ARGS)

test: $(TEST_STAMP) ## run the whole test suite (what CI runs; installs the server/ray/slurm extras)
	$(PY) -m pytest $(ARGS)

sweep: $(STAMP) ## a parallel Hydra multirun of conf/sweep/$(SWEEP).yaml; ARGS="..."
	$(PY) pipelines/run.py --multirun +sweep=$(SWEEP) $(ARGS)

tune: $(STAMP) ## hyperparameter search with Optuna (resumable); ARGS="..."
	$(PY) pipelines/tune.py $(ARGS)

rerun: $(STAMP) ## rerun a logged run from its config: make rerun RUN=<run id> [ARGS="..."]
	@test -n "$(RUN)" || { echo "usage: make rerun RUN=<run id> [ARGS=...]" >&2; exit 2; }
	$(PY) pipelines/rerun.py $(RUN) $(ARGS)

bench: $(STAMP) ## the performance benchmarks (installs the [bench] extra)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run.py $(ARGS)

server: $(STAMP) ## a team MLflow server on PostgreSQL (see README); SERVER_DB_URI=... to reuse a database
	$(PY) -m pip install --quiet -e '.[dev,server]'
	bash scripts/server.sh start

server-stop: ## stop what `make server` started
	bash scripts/server.sh stop

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the local store
	@$(PY) -m mlplab.ui_link --port $(PORT)
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT) --workers 2

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check src pipelines tests benchmarks
	$(VENV)/bin/ruff format --check src pipelines tests benchmarks
	$(VENV)/bin/mypy

clean: ## remove the venv, the local store and Hydra's outputs
	rm -rf $(VENV) mlflow.db mlartifacts mlruns outputs multirun optuna.journal* .pytest_cache .mypy_cache .ruff_cache
