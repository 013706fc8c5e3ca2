"""Run a module's docstring examples: `>>>` lines inside ```python fences, the project's docstring style."""

from __future__ import annotations

import doctest
from types import ModuleType

# Imported before any example runs: with WANDB_MODE=offline its first import prints a line that an example would read.
import transformers.integrations.integration_utils  # noqa: F401


def run_docstring_examples(module: ModuleType) -> int:
    """Run every `>>>` example in `module`'s docstrings, ignoring the fence lines; return the number of failures."""
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module):
        for example in test.examples:
            want = "\n".join(line for line in example.want.splitlines() if not line.startswith("```"))
            example.want = want + "\n" if want else ""
        runner.run(test)
    return runner.failures
