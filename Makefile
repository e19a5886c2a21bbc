# Set-up and checks. `make demo` and `make test` work on a fresh machine: they create .venv and install.
PYTHON ?= python3
VENV ?= .venv
# The torch build to install; override for another build, e.g. `make test TORCH="torch>=2.1"`.
TORCH ?= torch==2.13.0
# Exact versions of everything else `make test` installs, so no new release turns the checks red by itself.
CONSTRAINTS ?= constraints/default.txt
BIN := $(VENV)/bin
# The oldest Lightning the package supports, in a venv of its own: the core tests run there too.
OLDEST_LIGHTNING ?= 2.4.0
OLDEST_VENV ?= .venv-lightning-oldest
OLDEST_CONSTRAINTS ?= constraints/lightning-2.4.txt
OLDEST_TESTS ?= tests/test_stepping.py tests/test_resume.py tests/test_early_stopping.py tests/test_wiring.py \
	tests/test_mixin.py tests/test_scheduler.py tests/test_dropin.py tests/test_warmup.py tests/test_windows.py \
	tests/test_restore.py tests/test_nonfinite.py

.PHONY: install demo test lint pytest test-oldest docs bench constraints clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

demo: install
	$(BIN)/python examples/digits.py fit --config configs/digits.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

test: lint pytest test-oldest

$(OLDEST_VENV)/.installed: pyproject.toml Makefile $(OLDEST_CONSTRAINTS)
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c $(OLDEST_CONSTRAINTS) --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c $(OLDEST_CONSTRAINTS) "$(TORCH)" -e ".[cli,plot]" \
		"lightning==$(OLDEST_LIGHTNING)" pytest pytest-timeout hypothesis
	touch $@

# The stepping, resume, early-stopping, wiring and per-setting tests on the oldest supported Lightning.
test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest -m "not distributed" $(OLDEST_TESTS)

# The site: the README as the guide, an API reference from the docstrings, the Vietnamese pages. Warnings fail it.
docs: install
	$(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python benchmarks/bench.py

# Refresh both constraints files from the newest releases the ranges admit, then run `make test` and commit.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	{ sed -n 1,2p $(CONSTRAINTS); .venv-constraints/bin/python -m pip freeze --all --exclude-editable \
		| grep -v -E '^(torch==|lightning-plateau)'; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet "$(TORCH)" "lightning==$(OLDEST_LIGHTNING)" \
		-e ".[cli,plot]" pytest pytest-timeout hypothesis
	{ sed -n 1,2p $(OLDEST_CONSTRAINTS); .venv-constraints/bin/python -m pip freeze --all --exclude-editable \
		| grep -v -E '^(torch==|lightning-plateau)'; } > $(OLDEST_CONSTRAINTS).new \
		&& mv $(OLDEST_CONSTRAINTS).new $(OLDEST_CONSTRAINTS)
	rm -rf .venv-constraints

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .venv-constraints lightning_logs wandb demo_runs site *.egg-info
