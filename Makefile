# One Makefile for people and CI: install, lint, test, demo, bench.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# A CPU build of torch; a machine with CUDA may set TORCH='torch==2.13.0' from its own index.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

export LITELLM_LOCAL_MODEL_COST_MAP := True
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install lint format test demo bench all clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/autoswarm up --task tasks/tinylm --max-experiments 3

# Each benchmark prints a markdown table; docs/benchmarks.md records the results.
bench: install
	$(PY) bench/runner_overhead.py
	$(PY) bench/sandbox_overhead.py
	$(PY) bench/worker_duty_cycle.py
	$(PY) bench/swarm_scaling.py
	$(PY) bench/dashboard_latency.py
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PY) bench/prompt_tokens.py

all: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
