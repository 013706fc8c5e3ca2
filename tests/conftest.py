"""Shared fixtures of tests/unit, tests/integration and tests/distributed; the helper modules in tests/helpers are
importable from all of them (`from tiny_models import ...`); the docstring examples of every `dmpo_trl` module run as
pytest items (tests/helpers/docstring_items.py)."""

import os
import sys
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
# OpenMP threads sleep instead of spinning: on a shared machine spinning 2-thread forwards run several times slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))

import docstring_items  # noqa: E402
from tiny_models import build_model, build_tokenizer, save_tiny  # noqa: E402


def pytest_configure(config):
    # A plugin rather than this file's own hook: conftest hooks see only the files under tests/, the examples live in
    # dmpo_trl/ (which `testpaths` names)
    config.pluginmanager.register(docstring_items, "dmpo_trl_docstring_examples")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return build_model(tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama saved to disk, loadable by path (what TRL does for `ref_model=None`)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def fresh_remote_code_modules():
    """Forget the `transformers_modules` packages that remote-code tests import, and the module caches they put on
    `sys.path`, so that one test's cached modules never hide another's."""
    import sys

    def forget():
        for name in [name for name in sys.modules if name.split(".")[0] == "transformers_modules"]:
            del sys.modules[name]

    path = list(sys.path)
    forget()
    yield
    forget()
    sys.path[:] = path
