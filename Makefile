# AIMIS Billing — `make up`, `make down`, `make test`, `make demo` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: up down status test test-unit demo install jars contracts bench clean

## install: virtualenv + the project and its test dependencies (once per pyproject change)
install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

## jars: the Kafka broker's jars from Maven Central into ~/.cache/aimis (once)
jars:
	@deploy/local/kafka.sh fetch

up: install jars
	@deploy/local/stack.sh up

down:
	@deploy/local/stack.sh down

status:
	@deploy/local/stack.sh status

## test: the whole suite against a real Kafka and PostgreSQL (started and stopped by the tests)
test: install jars
	@$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

## demo: a scenario on the running stack (`make up` first)
demo: install
	@set -a; [ -f .run/env ] && . .run/env; set +a; $(PY) -m cli.demo

contracts: install
	@$(PY) -m contracts.export

bench: install jars
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

clean: down
	rm -rf .run
