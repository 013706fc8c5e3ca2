"""The example notebooks hold their scripts, are stored with outputs (those that run on CPU), and execute (nbclient,
seconds-scale settings, the tiny test model) without being rewritten."""

import copy
import importlib.util
import sys
import time
from pathlib import Path

import pytest


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from build_notebooks import GPU_NOTEBOOKS, NOTEBOOKS, build_notebook, cells_of  # noqa: E402


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


def text_of(cells) -> str:
    return "\n".join(output.get("text", "") for cell in cells for output in cell.outputs)


@pytest.fixture
def smoke_env(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("DMPO_EXAMPLES_SMOKE", "1")
    monkeypatch.setenv("DMPO_EXAMPLES_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("DMPO_TRL_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="MovieLens-100K comes from `recbole`")
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, smoke_env):
    notebook = copy.deepcopy(stored(name))
    for cell in notebook.cells:  # only what this run prints counts
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(smoke_env)}}
    )
    started = time.perf_counter()
    client.execute()
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    outputs = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
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
