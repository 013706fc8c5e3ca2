"""Build the example notebooks from their plain-script versions (the scripts are the source of truth).

Each `examples/<name>.py` is a Python script in the "percent" format: `# %%` starts a code cell,
`# %% [markdown]` starts a markdown cell whose lines are comments (`# ` stripped). This writes `examples/<name>.ipynb`
next to it, with no outputs. The test suite checks that the notebooks match their scripts and executes them.

    python examples/build_notebooks.py          # rewrite every notebook
    python examples/build_notebooks.py --check  # exit 1 when a notebook differs from its script
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


EXAMPLES = Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart_movielens", "dpo_to_dmpo", "qlora_consumer_gpu")


def script_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format script into `(kind, source)` cells; text before the first marker is dropped."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            lines.append((line[2:] if line.startswith("# ") else line.lstrip("#")) if kind == "markdown" else line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build_notebook(script: Path) -> nbformat.NotebookNode:
    """The notebook for one script: its cells, a Python 3 kernel, no outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.update(
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
        language_info={"name": "python"},
    )
    for kind, source in script_cells(script.read_text()):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(source)
        cell.pop("id", None)
        notebook.cells.append(cell)
    notebook.nbformat_minor = 4  # no cell ids: stable files
    return notebook


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        text = render(build_notebook(EXAMPLES / f"{name}.py"))
        path = EXAMPLES / f"{name}.ipynb"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"Out of date (run `python examples/build_notebooks.py`): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
