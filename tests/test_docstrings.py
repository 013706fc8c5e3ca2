import importlib

import pytest
from docstring_examples import run_docstring_examples


# Import everything once up front: first imports may print notices (e.g. wandb's offline mode) into an example's output
importlib.import_module("dmpo_trl.trainer")


@pytest.mark.parametrize("name", ["config", "losses", "rows", "collator", "sharing", "trainer"])
def test_docstring_examples(name):
    assert run_docstring_examples(importlib.import_module(f"dmpo_trl.{name}")) == 0
