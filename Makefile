# AIMIS Billing — `make up`, `make down`, `make test`, `make demo` (see README).
# `make up`, `make test` and `make bench` first install what the machine lacks (deploy/setup/install.sh;
# `make doctor` shows what it found).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
AIMIS_CACHE ?= $(HOME)/.cache/aimis
export AIMIS_CACHE
# Tools installed by deploy/setup/tools.d/ live here.
export PATH := $(AIMIS_CACHE)/bin:$(PATH)
# The installer checks the same Python the virtualenv is made with.
export AIMIS_PREREQ_PYTHON ?= $(PYTHON)
export AIMIS_PREREQ_PYTHON_VENV ?= $(PYTHON)

.PHONY: setup doctor fresh-check up down status test test-unit demo install jars contracts bench clean

## setup: install the machine's missing prerequisites (Debian/Ubuntu: apt-get, as root or via sudo)
setup:
	@deploy/setup/install.sh

## doctor: each prerequisite, where it was found, its version, what is missing (exit 1 if any)
doctor:
	@deploy/setup/install.sh doctor

## fresh-check: `make up`, `make down`, `make test` in a fresh Debian (debootstrap + chroot; slow, as root)
fresh-check:
	@deploy/setup/fresh-machine-check.sh

## install: virtualenv + the project and its test dependencies (once per pyproject change)
install: setup $(STAMP)

$(STAMP): pyproject.toml | setup
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || { echo "python: creating $(VENV) with $(PYTHON) -m venv"; $(PYTHON) -m venv $(VENV); }
	@echo "python: installing the project and its test dependencies into $(VENV) (first run, or pyproject.toml changed)"
	@t0=$$(date +%s); $(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install --progress-bar off -e '.[test]' 2>&1 | tee $(VENV)/pip.log \
	  | { grep --line-buffered -E '^(Collecting|Successfully installed)' || true; } \
	  | sed -u -e 's/^Collecting \([^ ]*\).*/  python: fetching \1/' -e 's/^Successfully installed .*/  python: packages installed/' \
	  || { tail -30 $(VENV)/pip.log; echo "pip install failed (log: $(VENV)/pip.log)"; exit 1; }; \
	echo "python: .venv ready ($$(( $$(date +%s) - t0 )) s)"
	@rm -f $(VENV)/.installed-*; touch $@

## jars: the Kafka broker's jars from Maven Central into ~/.cache/aimis (once)
jars: setup
	@deploy/local/kafka.sh fetch

up: setup install jars
	@deploy/local/stack.sh up

down:
	@deploy/local/stack.sh down

status:
	@deploy/local/stack.sh status

## test: the whole suite against a real Kafka and PostgreSQL (started and stopped by the tests)
test: setup install jars
	@$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

## demo: a scenario on the running stack (`make up` first)
demo: install
	@set -a; [ -f .run/env ] && . .run/env; set +a; $(PY) -m cli.demo

contracts: install
	@$(PY) -m contracts.export

bench: setup install jars
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

clean: down
	rm -rf .run
