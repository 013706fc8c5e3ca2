"""A pytest plugin: the docstring examples of every `dmpo_trl` module as one pytest item per module.

The project's docstrings wrap their `>>>` examples in Markdown fences (```python ... ```), which `--doctest-modules`
would misread (the closing fence line becomes expected output), so the examples run as `run_docstring_examples` runs
them: ELLIPSIS on, fence lines dropped from the expected output. tests/conftest.py registers this plugin and
`testpaths` names `dmpo_trl`, so `pytest` collects `dmpo_trl/<module>.py::docstring_examples` for each module that has
examples. The plugin comes with tests/conftest.py, which pytest loads for a path under tests/: one module's examples
run with e.g. `pytest tests/unit/test_metrics.py dmpo_trl/metrics.py`.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
from docstring_examples import fenced_examples


PACKAGE = Path(__file__).resolve().parents[2] / "dmpo_trl"


def module_name(path: Path) -> str | None:
    """`dmpo_trl.data.log` for dmpo_trl/data/log.py; None for a file outside the package or not Python."""
    try:
        parts = path.resolve().relative_to(PACKAGE.parent).with_suffix("").parts
    except ValueError:
        return None
    if path.suffix != ".py" or parts[0] != PACKAGE.name:
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if module_name(file_path) is not None:
        return DocstringExamplesFile.from_parent(parent, path=file_path)
    return None


class DocstringExamplesFile(pytest.File):
    def collect(self):
        name = module_name(self.path)
        if fenced_examples(importlib.import_module(name)):
            yield DocstringExamplesItem.from_parent(self, name="docstring_examples", module=name)


class DocstringExamplesFailed(Exception):
    pass


class DocstringExamplesItem(pytest.Item):
    def __init__(self, *, module: str, **kwargs):
        super().__init__(**kwargs)
        self.module = module

    def runtest(self):
        report: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in fenced_examples(importlib.import_module(self.module)):
            runner.run(test, out=report.append)
        if runner.failures:
            raise DocstringExamplesFailed("".join(report))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, DocstringExamplesFailed):
            return f"docstring examples of {self.module} failed:\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"docstring examples of {self.module}"
