"""The example notebooks execute (nbclient, seconds-scale settings, the tiny test model) and match their scripts."""

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
from build_notebooks import NOTEBOOKS, build_notebook, render  # noqa: E402


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_script(name):
    stored = (EXAMPLES / f"{name}.ipynb").read_text()
    assert stored == render(build_notebook(EXAMPLES / f"{name}.py")), (
        f"examples/{name}.ipynb is out of date: run `python examples/build_notebooks.py`"
    )
    notebook = nbformat.reads(stored, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


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
    notebook = nbformat.read(str(EXAMPLES / f"{name}.ipynb"), as_version=4)
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
        assert (smoke_env / "outputs" / "quickstart" / "quickstart.png").is_file()
        assert any(o.get("output_type") == "display_data" for c in notebook.cells for o in c.get("outputs", []))
    if name == "dpo_to_dmpo":
        assert "dpo (K=1)" in outputs and "dmpo (K=2)" in outputs
    if name == "qlora_consumer_gpu":
        assert "QLoRA total" in outputs and "4-bit base: True" in outputs
        reloaded = next(line for line in outputs.splitlines() if line.startswith("reloaded vs trained:"))
        assert float(reloaded.split(":")[1]) < 1e-4  # the saved adapter gives back the trained model
        assert (smoke_env / "outputs" / "qlora" / "merged" / "config.json").is_file()
