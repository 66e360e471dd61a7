# Two entry points that work on a fresh machine: `make repro` and `make test`.
# Both create .venv from requirements.lock when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# On this team's machines Multi30k sits in ../shared; elsewhere `fetch` downloads it.
MT_DATA_DIR ?= $(shell [ -d ../shared/data/multi30k ] && cd ../shared/data/multi30k && pwd)
export MT_DATA_DIR

.PHONY: install browser test-packages repro test test-fast lint typecheck pytest benchmarks clean-venv

$(VENV)/.installed: requirements.lock pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The Airflow UI test drives Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "install Debian's chromium (apt-get install chromium) for the UI test" >&2; exit 1; }

# The clock-skew tests run processes on a moved clock with Debian's libfaketime (`faketime`).
test-packages: browser
	@command -v faketime >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; } || \
	  { echo "install Debian's faketime (apt-get install faketime) for the clock tests" >&2; exit 1; }

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two pytest-xdist workers, each taking whole modules, the live-orchestration ones together on
# one worker and the rest costliest first (tests/scheduling.py): most tests wait on servers and
# subprocesses, so two share 2 cores well (docs/testing.md).
# `make pytest TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

pytest: install test-packages
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

# mypy (about 50 s on a fresh clone) runs beside the suite, not before it: the suite's two
# workers leave some CPU idle while they wait on servers.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck pytest

# The inner loop: lint, types and every test not marked slow (no live servers, no training beyond
# the memorising fixtures); `make test` before pushing (docs/testing.md says which when).
test-fast: lint typecheck
	$(MAKE) pytest PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

benchmarks: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/data_stages.py

# The GPU preset trained for GPU_CHECK_MINUTES on this machine (Keras backend jax unless
# KERAS_BACKEND says otherwise), then test2016 decoded and scored (docs/training.md, "GPU preset").
# `make gpu-carry` prepares the same run for the lent GPU machine and prints the call to make.
.PHONY: gpu-check gpu-carry
GPU_CHECK_MINUTES ?= 5
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py --minutes $(GPU_CHECK_MINUTES)

gpu-carry: install
	bash benchmarks/gpu_carry.sh

clean-venv:
	rm -rf $(VENV)

# The production compose stack (docker/compose.yaml) started for real with podman, end to end, on
# a tiny corpus (docs/deploy.md); about 22 minutes on 2 cores, so not part of `make test`.
# Debian's podman, runc and debootstrap; podman-compose from PyPI in a venv of the check's own
# (Debian 12's 1.0.3 knows no profiles). State (Debian rootfs, env file, venv) in COMPOSE_CHECK_DIR.
.PHONY: compose-packages compose-check
COMPOSE_CHECK_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mt-compose-check
PODMAN_COMPOSE_VERSION := 1.6.0
compose-packages:
	@{ command -v podman && command -v runc && command -v debootstrap; } >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq podman runc debootstrap >/dev/null; } || \
	  { echo "install Debian's podman, runc and debootstrap (apt-get install podman runc" \
	    "debootstrap) for compose-check" >&2; exit 1; }
	@[ -x "$(COMPOSE_CHECK_DIR)/venv/bin/podman-compose" ] || { \
	  $(PYTHON) -m venv "$(COMPOSE_CHECK_DIR)/venv" && "$(COMPOSE_CHECK_DIR)/venv/bin/pip" install -q \
	    --disable-pip-version-check podman-compose==$(PODMAN_COMPOSE_VERSION); }

compose-check: install compose-packages
	COMPOSE_CHECK_DIR="$(COMPOSE_CHECK_DIR)" $(BIN)/python benchmarks/compose_check.py $(COMPOSE_CHECK_ARGS)

# The pictures in docs/img (scripts/screenshots.py): the MLflow UI over this project's registered
# model (run `make repro` first; SCREENSHOTS_ARGS='--project DIR' for another project) and the
# Airflow UI running a tiny retrain in a throw-away project.
.PHONY: screenshots
screenshots: install browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/screenshots.py $(SCREENSHOTS_ARGS)

# Airflow on this machine (docs/airflow.md): `airflow standalone` with AIRFLOW_HOME=./airflow_home,
# the DAGs in dags/, the UI on http://localhost:$(AIRFLOW_PORT), stages run in this project.
.PHONY: airflow airflow-postgres
AIRFLOW_PORT ?= 8080
AIRFLOW_HOST ?= 127.0.0.1
AIRFLOW_DB_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/mt_airflow
AIRFLOW_ENV = AIRFLOW_HOME="$(CURDIR)/airflow_home" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	AIRFLOW__API__HOST=$(AIRFLOW_HOST) AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_PORT) \
	MT_PROJECT_DIR="$(CURDIR)" PATH="$(CURDIR)/$(BIN):$$PATH"
AIRFLOW_PASSWORDS = airflow_home/simple_auth_manager_passwords.json.generated

airflow: install
	mkdir -p airflow_home
	@echo "Airflow UI: http://localhost:$(AIRFLOW_PORT)  user: admin  password: printed below" \
	  "once started, and kept in $(AIRFLOW_PASSWORDS)"
	$(AIRFLOW_ENV) $(BIN)/airflow standalone

airflow-postgres: install
	mkdir -p airflow_home
	$(BIN)/python -c "import sys, psycopg2; url, name = sys.argv[1].rsplit('/', 1); \
	  c = psycopg2.connect(url.replace('+psycopg2', '') + '/postgres'); c.autocommit = True; \
	  cur = c.cursor(); cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (name,)); \
	  cur.fetchone() or cur.execute(f'CREATE DATABASE \"{name}\"')" "$(AIRFLOW_DB_URL)"
	@echo "Airflow UI: http://localhost:$(AIRFLOW_PORT)  user: admin  password: printed below" \
	  "once started, and kept in $(AIRFLOW_PASSWORDS); metadata DB: $(AIRFLOW_DB_URL)"
	$(AIRFLOW_ENV) AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$(AIRFLOW_DB_URL)" $(BIN)/airflow standalone
