"""The example notebooks hold their scripts, are stored with outputs (those that run on CPU) free of local paths and
warnings, and execute (nbclient, seconds-scale settings, the tiny test model) without being rewritten."""

import importlib.util
import sys
import time
from pathlib import Path

import pytest


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import build_notebooks  # noqa: E402
from build_notebooks import (  # noqa: E402
    GPU_NOTEBOOKS,
    NOTEBOOKS,
    build_notebook,
    cells_of,
    tidy_streams,
    unclean_outputs,
)
from docstring_examples import run_docstring_examples  # noqa: E402


def stored(name: str):
    return nbformat.read(str(EXAMPLES / f"{name}.ipynb"), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_script(name):
    assert cells_of(stored(name)) == cells_of(build_notebook(EXAMPLES / f"{name}.py")), (
        f"examples/{name}.ipynb is out of date: run `python examples/build_notebooks.py --execute {name}`"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_with_its_outputs(name):
    code = [cell for cell in stored(name).cells if cell.cell_type == "code"]
    if name in GPU_NOTEBOOKS:  # says in its first cell that it is stored without outputs
        assert "stored without outputs" in stored(name).cells[0].source and not any(c.outputs for c in code)
        return
    assert all(cell.execution_count for cell in code), f"{name}: not every code cell was run before storing"
    assert not any(o.get("output_type") == "error" for cell in code for o in cell.outputs)
    if name == "quickstart_movielens":  # the plots the README promises
        images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images and "same scores as the evaluator: True" in text_of(code)


def test_check_passes_on_the_stored_notebooks(capsys):
    """`build_notebooks.py --check`: every notebook holds its script, and no stored output shows a local path or a
    warning."""
    assert build_notebooks.main(["--check"]) == 0, capsys.readouterr().out


def notebook_printing(text: str, name: str = "stderr", kind: str = "stream"):
    cell = nbformat.v4.new_code_cell("run()")
    if kind == "stream":
        cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text)]
    else:
        cell.outputs = [nbformat.v4.new_output(kind, data={"text/plain": text})]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A"), cell])


@pytest.mark.parametrize(
    "line",
    [
        "/opt/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.",
        "utils.py:3: FutureWarning: `is_gradient_checkpointing` is deprecated",
        "[2026-11-29 17:22:24,505] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.",
        "saved to /tmp/quickstart-x1y2/outputs/quickstart",
        "'/home/someone/data/ml-100k'",
        "/root/.cache/huggingface/hub",
        "C:\\Users\\someone\\notebooks",
    ],
)
def test_unclean_outputs_finds_paths_and_warnings(line):
    assert unclean_outputs(notebook_printing(f"fine\n{line}\n")) == [f"cell 1: {line.strip()}"]
    assert unclean_outputs(notebook_printing(line, kind="execute_result")) == [f"cell 1: {line.strip()}"]


def test_unclean_outputs_keeps_ordinary_output():
    text = (
        "Data: movielens-100k, 80 train / 0 valid / 80 test users\n"
        "['README.md', 'adapter_config.json', 'split.json']\nsee https://huggingface.co/papers/2405.16127/home/\n"
        "os.path.join(training_args.output_dir, 'merged')  outputs/quickstart/merged\n"
    )
    assert unclean_outputs(notebook_printing(text, name="stdout")) == []


def test_tidy_streams_keeps_each_progress_bar_at_its_last_state():
    """Two progress bars, each closed by a newline output, stay two lines; a stream left blank is dropped."""
    cell = nbformat.v4.new_code_cell("rank()")
    stream = [("stderr", "\rbar1 50%\rbar1 100%"), ("stderr", "\n"), ("stderr", "\rbar2 100%"), ("stdout", "table\n")]
    cell.outputs = [
        nbformat.v4.new_output("stream", name=name, text=text) for name, text in [*stream, ("stderr", "\n")]
    ]
    outputs = tidy_streams(nbformat.v4.new_notebook(cells=[cell])).cells[0].outputs
    assert [(output.name, output.text) for output in outputs] == [
        ("stderr", "bar1 100%\nbar2 100%"),
        ("stdout", "table\n"),
    ]


def test_build_notebooks_docstring_examples():
    assert run_docstring_examples(build_notebooks) == 0


def text_of(cells) -> str:
    return "\n".join(output.get("text", "") for cell in cells for output in cell.outputs)


@pytest.fixture
def smoke_env(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("DMPO_EXAMPLES_SMOKE", "1")
    monkeypatch.setenv("DMPO_EXAMPLES_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("DMPO_TRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what `--execute` sets
    return tmp_path


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="MovieLens-100K comes from `recbole`")
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, smoke_env):
    """Run as `--execute` runs it (after `KERNEL_SETUP`, from its script's cells): no traceback and no warning."""
    started = time.perf_counter()
    notebook = build_notebooks.execute(name, smoke_env, timeout=240)
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    outputs = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    warnings = [line for line in unclean_outputs(notebook) if build_notebooks.WARNING_LINE.search(line)]
    assert not warnings, f"{name} shows warnings: {warnings}"  # (paths: the tiny model lives in a temporary folder)
    assert "Traceback" not in outputs
    if name == "quickstart_movielens":
        assert "hit_ratio@1" in outputs and "zero-shot" in outputs and "dmpo (lora)" in outputs
        assert "same scores as the evaluator: True" in outputs
        assert (smoke_env / "outputs" / "quickstart" / "quickstart.png").is_file()
        assert any(o.get("output_type") == "display_data" for c in notebook.cells for o in c.get("outputs", []))
    if name == "dpo_to_dmpo":
        assert "dpo (K=1)" in outputs and "dmpo (K=2)" in outputs
    if name == "qlora_consumer_gpu":
        assert "QLoRA total" in outputs and "4-bit base: True" in outputs
        reloaded = next(line for line in outputs.splitlines() if line.startswith("reloaded vs trained:"))
        assert float(reloaded.split(":")[1]) < 1e-4  # the saved adapter gives back the trained model
        assert (smoke_env / "outputs" / "qlora" / "merged" / "config.json").is_file()
