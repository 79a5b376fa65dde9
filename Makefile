# The README's two commands. Both create .venv with the CPU build of torch first (pip would otherwise resolve the
# torch range in setup.cfg to a multi-GB CUDA build); on a CUDA machine install your torch build before `pip install`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: venv demo demo-train test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"

demo: venv
	$(BIN)/pip install -q -e .
	$(BIN)/groupvit demo --output demo_output

demo-train: venv
	$(BIN)/pip install -q -e .
	$(BIN)/groupvit demo --train --output demo_output

test: venv
	$(BIN)/pip install -q -e ".[dev,browser]"
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --durations=15
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python benchmarks/bench_model.py --device auto --out benchmarks/results/latest.json
