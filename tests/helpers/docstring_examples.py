"""Run a module's docstring examples: `>>>` lines inside ```python fences, the project's docstring style."""

from __future__ import annotations

import doctest
from types import ModuleType

# Imported before any example runs: with WANDB_MODE=offline its first import prints a line that an example would read.
import transformers.integrations.integration_utils  # noqa: F401


def fenced_examples(module: ModuleType) -> list[doctest.DocTest]:
    """The docstrings of `module` that hold `>>>` examples, with the fence lines dropped from the expected output."""
    tests = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    for test in tests:
        for example in test.examples:
            want = "\n".join(line for line in example.want.splitlines() if not line.startswith("```"))
            example.want = want + "\n" if want else ""
    return tests


def run_docstring_examples(module: ModuleType) -> int:
    """Run every `>>>` example in `module`'s docstrings, ignoring the fence lines; return the number of failures."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in fenced_examples(module):
        runner.run(test)
    return runner.failures
