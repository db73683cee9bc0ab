# Two commands do everything from a fresh clone:
#   make demo   -- set up, then reproduce the failures of docs/lessons side by side
#   make test   -- set up, then lint, type-check and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --constraint constraints.txt

.PHONY: demo test lint setup clean

setup: $(VENV)/.installed

# torch goes in first, pinned, so that nothing later resolves a CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[all,test]"
	touch $@

demo: setup
	$(BIN)/robusthmc repro truncated-normal

lint: setup
	$(BIN)/ruff check src tests benchmarks notebooks/build.py
	$(BIN)/ruff format --check src tests benchmarks notebooks/build.py
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
