# mw-gateway: two commands for a new user, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test lint schemas typecheck unit rules-test bench torture clean venv deps-system interop-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TSTAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP) $@

venv: $(STAMP)

## Regenerate schemas/*.schema.json (mw-gateway schema) after a change to the config or rule models.
schemas: $(STAMP)
	for kind in config rules tests; do $(BIN)/mw-gateway schema $$kind > schemas/$$kind.schema.json; done

## Run the gateway end to end: simulated machines + a local Mobility Work simulator.
demo: $(STAMP)
	$(BIN)/mw-gateway demo $(DEMO_ARGS)

## System packages the tests need (mosquitto; chromium for the status-page test).
deps-system:
	@bash scripts/ensure-system-deps.sh

## npm packages of the interop tests (node-opcua's server, Eclipse Tahu's Sparkplug B client), pinned by
## tests/interop/package-lock.json. The libmodbus server is compiled by the tests (libmodbus-dev: deps-system).
INTEROP := tests/interop/node_modules/.installed
$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	touch $@

interop-deps: deps-system $(INTEROP)

## Lint, type-check, the test suite, and the shipped rule tests.
test: $(TSTAMP) deps-system interop-deps lint typecheck unit rules-test

lint: $(TSTAMP)
	$(BIN)/ruff check gateway tests bench torture
	$(BIN)/ruff format --check gateway tests bench torture
	$(BIN)/lint-imports

typecheck: $(TSTAMP)
	$(BIN)/mypy

unit: $(TSTAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

rules-test: $(TSTAMP)
	$(BIN)/mw-gateway test rules/

## Benchmarks: prints one table (no assertions).
bench: $(TSTAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Fault campaigns (power cut, outage, links, input, disk).
torture: $(TSTAMP) deps-system interop-deps
	$(BIN)/python -m torture $(TORTURE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis tests/interop/node_modules tests/interop/build
