# Set-up and checks. `make demo` and `make test` work on a fresh machine: they create .venv and install.
PYTHON ?= python3
VENV ?= .venv
# The torch build to install; override for another build, e.g. `make test TORCH="torch>=2.1"`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test lint pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(BIN)/python examples/digits.py fit --config configs/digits.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

test: lint pytest

bench: install
	$(BIN)/python benchmarks/replay_speed.py

clean:
	rm -rf $(VENV) lightning_logs wandb demo_runs *.egg-info
