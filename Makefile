# mlplab: every target bootstraps .venv itself. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The environment is installed exactly as uv.lock pins it, by uv, which pip bootstraps into
# .venv/.uv-<version> (outside the environment it manages). `make lock` refreshes uv.lock.
UV_VERSION := 0.13.8
UV := $(VENV)/.uv-$(UV_VERSION)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
EXTRAS ?= dev
TEST_EXTRAS ?= dev,server,ray,slurm,browser
# pytest-xdist workers of make test: most tests wait on subprocesses, servers and browsers,
# so two workers keep the 2 cores busy; one test file stays on one worker (module fixtures)
TEST_WORKERS ?= 2
STAMP := $(VENV)/.synced
TEST_STAMP := $(VENV)/.synced-test
SWEEP ?= default
LAUNCHER ?=
RUN ?=
HOST ?= 127.0.0.1
PORT ?= 5000
UPGRADE ?=

# ARGS reaches the entry points through the environment, unexpanded ($ kept), and
# scripts/with_args.py splits it as a shell splits words: Hydra's range(0,64), [8,8],
# quotes and ${...} arrive exactly as if typed after `python pipelines/run.py`.
override ARGS := $(value ARGS)
export ARGS
# RUN and SWEEP too reach the recipes through the environment: a quote in them is a
# character of the value, not shell syntax.
export RUN SWEEP
WITH_ARGS = $(PY) scripts/with_args.py

comma := ,
# $(call sync,<extras>[,--inexact]): install what uv.lock pins for the project (editable) and
# <extras>. Exact by default (removes what the lock does not name); --inexact adds to it.
# Compiled to bytecode once, at install: where PYTHONDONTWRITEBYTECODE is set (these CI
# machines) every process would otherwise compile MLflow, SQLAlchemy, ... from source again.
sync = $(UV) sync --frozen --quiet --compile-bytecode $(2) $(addprefix --extra ,$(subst $(comma), ,$(1)))
# The extra a launcher needs: make sweep LAUNCHER=ray|submitit_local|submitit_slurm|joblib|basic
launcher_extra = $(if $(filter ray,$(LAUNCHER)),ray,$(if $(filter submitit_%,$(LAUNCHER)),slurm))
# torch as the bench extra pins it (pip takes the machine's CPU wheel; see pyproject.toml)
torch_requirement = $(shell $(PYTHON) -c 'import tomllib; print(*(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"] if r.startswith("torch")))')

.DEFAULT_GOAL := help
.PHONY: help venv lock run test sweep tune ui rerun bench lint clean server server-stop mutate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	@test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install --quiet --no-deps --target $(VENV)/.uv-$(UV_VERSION) uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV) lock --check --offline --quiet || { echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }
	$(call sync,$(EXTRAS))
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(call sync,$(TEST_EXTRAS),--inexact)
	@missing=; \
	  command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=" postgresql"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  test -z "$$missing" || { echo "apt-get install$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }
	@touch $@

$(VENV)/.synced-bench: $(STAMP)
	$(call sync,$(EXTRAS)$(comma)bench,--inexact)
	PIP_ROOT_USER_ACTION=ignore $(PY) -m pip install --quiet --no-deps '$(torch_requirement)'
	$(UV) pip check --quiet --python $(PY)
	@touch $@

$(VENV)/.synced-%: $(STAMP)
	$(call sync,$(EXTRAS)$(comma)$*,--inexact)
	@touch $@

venv: $(STAMP) ## create .venv and install the locked project with its dev extra

lock: | $(UV) ## refresh uv.lock from pyproject.toml (every extra); UPGRADE=1 takes the newest versions
	$(UV) lock $(if $(UPGRADE),--upgrade)

run: $(STAMP) ## run the pipeline once (the tutorial experiment); ARGS="key=value ..."
	$(WITH_ARGS) pipelines/run.py

test: $(TEST_STAMP) ## run the whole test suite (what CI runs; installs the server, ray, slurm and browser extras, PostgreSQL, Chromium)
	$(WITH_ARGS) -m pytest -n $(TEST_WORKERS) --dist loadfile

sweep: $(STAMP) $(if $(launcher_extra),$(VENV)/.synced-$(launcher_extra)) ## a Hydra multirun of conf/sweep/<SWEEP>.yaml (SWEEP=default); LAUNCHER=ray|submitit_local|...; ARGS="..."
	$(WITH_ARGS) pipelines/run.py --multirun "+sweep=$$SWEEP" $(if $(LAUNCHER),'hydra/launcher=$(LAUNCHER)')

tune: $(STAMP) ## hyperparameter search with Optuna (resumable); ARGS="..."
	$(WITH_ARGS) pipelines/tune.py

rerun: $(STAMP) ## rerun a logged run from its config: make rerun RUN=<run id> [ARGS="..."]
	@test -n "$$RUN" || { echo "usage: make rerun RUN=<run id> [ARGS=...]" >&2; exit 2; }
	$(WITH_ARGS) pipelines/rerun.py "$$RUN"

bench: $(VENV)/.synced-bench ## the performance benchmarks (installs the [bench] extra and the CPU torch wheel)
	$(WITH_ARGS) benchmarks/run.py

server: $(VENV)/.synced-server ## a team MLflow server on PostgreSQL (see README); SERVER_DB_URI=... to reuse a database
	bash scripts/server.sh start

server-stop: ## stop what `make server` started
	bash scripts/server.sh stop

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the local store
	@$(PY) -m mlplab.ui_link --port $(PORT)
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT) --workers 2

mutate: $(STAMP) ## mutation testing (mutmut) of nn/, metrics, data, config validation, compare: writes mutation-report.txt
	$(PY) scripts/mutate.py

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check src pipelines tests benchmarks
	$(VENV)/bin/ruff format --check src pipelines tests benchmarks
	$(VENV)/bin/mypy

clean: ## remove the venv, the local store and Hydra's outputs
	rm -rf $(VENV) mlflow.db mlflow.db-wal mlflow.db-shm mlartifacts mlruns outputs multirun optuna.journal* .pytest_cache .mypy_cache .ruff_cache
