PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs only what running needs; `make test`, `lint` and `bench` add the
# test, lint and benchmark tools on top.
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: help run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(RUNTIME) $(STAMP)

run: $(RUNTIME)
	$(BIN)/livedesk run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# --quick sizes unless FULL=1 (see `make help`); `python -m bench NAME` runs one benchmark.
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(FULL),--full,--quick)

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .pytest_cache .ruff_cache

help:
	@echo "make run           livedesk run (SQLite, no server needed)"
	@echo "make test          ruff, mypy, pytest"
	@echo "make lint          ruff --fix and format"
	@echo "make bench         every benchmark at --quick sizes (about 30 min on 2 cores), then one"
	@echo "                   summary table: ours, raw, ratio, goal, met?, load per hot path"
	@echo "make bench FULL=1  the full sizes (python -m bench --full: 100k fan-out, 1M subscriptions,"
	@echo "                   1M-post search: its database takes ~30 min to build the first time)"
