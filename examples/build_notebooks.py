"""Build the example notebooks from their plain-script versions (the scripts are the source of truth), and store
them with their outputs.

Each `examples/<name>.py` is a Python script in the "percent" format: `# %%` starts a code cell,
`# %% [markdown]` starts a markdown cell whose lines are comments (`# ` stripped). Building writes
`examples/<name>.ipynb` next to it without outputs, unless the stored notebook already has exactly the script's
cells (then it is left as it is, outputs included). `--execute` runs notebooks on their default settings (the
embedded model; minutes on a CPU) and stores them with their outputs, third-party warnings and log lines that a
reader cannot act on left out (`KERNEL_SETUP`). `GPU_NOTEBOOKS` are executed only where CUDA is available.
`--check` also fails when a stored output shows a local path or a warning (`unclean_outputs`). The test suite
checks that the notebooks hold their scripts' cells and executes them with seconds-scale settings, without writing
them.

    python examples/build_notebooks.py                                   # rebuild notebooks whose script changed
    python examples/build_notebooks.py --check                           # exit 1: one differs or shows a path
    python examples/build_notebooks.py --execute quickstart_movielens    # run it and store its outputs
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat


EXAMPLES = Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart_movielens", "dpo_to_dmpo", "qlora_consumer_gpu")
GPU_NOTEBOOKS = ("qlora_consumer_gpu",)
"""Notebooks whose outputs only mean something on a GPU: stored without outputs unless executed on one."""

KERNEL_SETUP = """\
from dmpo_trl.quiet import quiet_third_party_output

quiet_third_party_output()
"""
"""Run in the kernel before a notebook's cells when it is executed (not stored): third-party notices a reader cannot
act on (deprecations from other packages, tqdm's "IProgress not found", torch's pin-memory notice on a machine
without a GPU, DeepSpeed's and bitsandbytes' CPU lines) stay out of the outputs, as from the `dmpo-trl` commands."""

LOCAL_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users)/|site-packages|dist-packages|\b[A-Z]:\\")
"""A path of this machine (a home, work or temporary folder, an installed package) in an output."""

WARNING_LINE = re.compile(r"Warning:|\[WARNING\]")
"""A warning (`FutureWarning: ...`, a `[WARNING]` log line) in an output."""


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


def cells_of(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """`(cell_type, source)` of every cell: what a notebook shares with its script, outputs aside."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def tidy_streams(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Show stream outputs as a notebook front end displays them: consecutive stdout (or stderr) outputs merged,
    a line rewritten with carriage returns (a progress bar) kept at its last state, and a stream that is only blank
    lines (a closed progress bar's newline) left out."""
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            previous = outputs[-1] if outputs else {}
            same_stream = previous.get("output_type") == "stream" and previous.get("name") == output.get("name")
            if output.output_type == "stream" and same_stream:
                previous.text += output.text
                continue
            outputs.append(output)
        for output in outputs:
            if output.output_type == "stream":
                output.text = re.sub(r"[^\n]*\r(?=[^\n])", "", output.text)
        outputs = [o for o in outputs if o.output_type != "stream" or o.text.strip()]  # merged first: "\n" joins bars
        if "outputs" in cell:
            cell.outputs = outputs
    return notebook


def output_text(output: nbformat.NotebookNode) -> str:
    """The text an output shows: a stream's text, an error's traceback, a display's text forms (not its images)."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join([*output.get("traceback", []), output.get("evalue", "")])
    data = output.get("data", {})
    texts = [data[kind] for kind in ("text/plain", "text/markdown", "text/html", "text/latex") if kind in data]
    return "\n".join(text if isinstance(text, str) else "".join(text) for text in texts)


def unclean_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """The output lines of a notebook that show a local path or a warning, as `"cell N: line"` (N counts from 0).

    Example:
    ```python
    >>> cell = nbformat.v4.new_code_cell("import tqdm.auto")
    >>> cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="/tmp/x.py:1: FutureWarning: old\\n")]
    >>> unclean_outputs(nbformat.v4.new_notebook(cells=[cell]))
    ['cell 0: /tmp/x.py:1: FutureWarning: old']
    ```
    """
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            for line in output_text(output).splitlines():
                if LOCAL_PATH.search(line) or WARNING_LINE.search(line):
                    found.append(f"cell {index}: {line.strip()}")
    return found


def execute(name: str, workdir: Path, timeout: int | None = None) -> nbformat.NotebookNode:
    """Run a notebook in `workdir` on its default settings, after `KERNEL_SETUP`, and return it with its outputs."""
    import nbclient

    os.environ.setdefault("TQDM_DISABLE", "1")  # the kernel inherits it: no progress bars in the stored outputs
    notebook = build_notebook(EXAMPLES / f"{name}.py")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(KERNEL_SETUP))
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    setup = notebook.cells.pop(0)
    if setup.outputs:
        raise RuntimeError(f"{name}: the kernel setup printed {[output_text(o) for o in setup.outputs]}")
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and cell.execution_count:
            cell.execution_count -= 1  # numbered from 1 without the setup cell
    return tidy_streams(notebook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks hold their scripts")
    parser.add_argument("--execute", nargs="+", choices=NOTEBOOKS, metavar="NAME", help="run and store outputs")
    parser.add_argument("--workdir", type=Path, help="where executed notebooks run (default: a temporary folder)")
    parser.add_argument("--timeout", type=int, help="seconds per cell when executing (default: none)")
    args = parser.parse_args(argv)
    if args.execute:
        import tempfile

        import torch

        for name in args.execute:
            if name in GPU_NOTEBOOKS and not torch.cuda.is_available():
                print(f"{name}: needs a GPU for its outputs; left without outputs")
                continue
            workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"{name}-"))
            (EXAMPLES / f"{name}.ipynb").write_text(render(execute(name, workdir, args.timeout)))
            print(f"{name}: executed in {workdir}, stored with its outputs")
        return 0
    stale, unclean = [], []
    for name in NOTEBOOKS:
        fresh = build_notebook(EXAMPLES / f"{name}.py")
        path = EXAMPLES / f"{name}.ipynb"
        stored = nbformat.reads(path.read_text(), as_version=4) if path.is_file() else None
        if stored is not None:
            unclean += [f"{path.name} {line}" for line in unclean_outputs(stored)]
        if stored is not None and cells_of(stored) == cells_of(fresh):
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(render(fresh))
            print(f"{path.name}: rebuilt from its script, without outputs (store them with --execute {name})")
    if stale:
        print(f"Out of date (run `python examples/build_notebooks.py`): {', '.join(stale)}")
    if unclean and args.check:
        print("Outputs with a local path or a warning (store them again with --execute):", *unclean, sep="\n  ")
    return 1 if stale or (unclean and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
