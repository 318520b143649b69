# Two commands matter: `make run` and `make test`. Both build .venv on first use.
# `make bench` measures the scale claims (BENCH_ARGS="--quick" or "--only NAME"; see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format openapi bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ensemble serve --demo

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy service routers models tests scripts bench
	$(BIN)/python scripts/lint_rules.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

openapi: $(STAMP)
	$(BIN)/ensemble openapi > openapi/openapi.json

clean:
	rm -rf $(VENV) .ensemble
