# Two entry points that work on a fresh machine: `make repro` and `make test`.
# Both create .venv from requirements.lock when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# On this team's machines Multi30k sits in ../shared; elsewhere `fetch` downloads it.
MT_DATA_DIR ?= $(shell [ -d ../shared/data/multi30k ] && cd ../shared/data/multi30k && pwd)
export MT_DATA_DIR

.PHONY: install browser repro test lint typecheck pytest benchmarks clean-venv

$(VENV)/.installed: requirements.lock pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The Airflow UI test drives Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "install Debian's chromium (apt-get install chromium) for the UI test" >&2; exit 1; }

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

benchmarks: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/data_stages.py

clean-venv:
	rm -rf $(VENV)
