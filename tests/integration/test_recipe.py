"""The recipe (data -> model -> rank -> train -> rank) and the `dmpo-trl train` / `demo` commands, on tiny models."""

import json

import pytest
import torch
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import recipe
from dmpo_trl.cli import main
from dmpo_trl.inputs import InputError
from dmpo_trl.models import RecModelConfig
from dmpo_trl.recipe import (
    DEMO_SETTINGS,
    SPLIT_FILE,
    RecDataArguments,
    RecipeArguments,
    demo_arguments,
    parse_recipe_arguments,
    run_recipe,
    summary_table,
)


@pytest.fixture(scope="module")
def tiny_log_files(tmp_path_factory):
    return write_tiny_log(tmp_path_factory.mktemp("tiny-log"))


def test_flags_and_yaml_config(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        "num_train_users: 32\nnum_negatives: 3\nloss_type: [sdpo, sft]\nloss_weights: [1.0, 0.5]\n"
        "load_in_4bit: true\nlora_r: 8\nlearning_rate: 0.001\noutput_dir: from-yaml\nreport_to: none\n"
    )
    data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
        ["--config", str(config), "--learning_rate", "2e-4", "--baselines", "random", "popular"]
    )
    assert (data_args.num_train_users, data_args.num_negatives) == (32, 3)
    assert training_args.loss_type == ["sdpo", "sft"] and training_args.loss_weights == [1.0, 0.5]
    assert training_args.learning_rate == 2e-4  # the flag wins over the file
    assert training_args.output_dir == "from-yaml"
    assert model_args.load_in_4bit and model_args.use_peft and model_args.lora_r == 8  # one switch: QLoRA
    assert model_args.use_bnb_nested_quant and model_args.lora_target_modules == "all-linear"
    assert recipe_args.baselines == ["random", "popular"]


def test_bad_settings_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no_such_flag"):
        parse_recipe_arguments(["--no_such_flag", "1"])
    config = tmp_path / "bad.yaml"
    config.write_text("num_train_user: 3\n")
    with pytest.raises(ValueError, match="num_train_user"):
        parse_recipe_arguments(["--config", str(config)])
    with pytest.raises(ValueError, match="num_candidates"):
        RecDataArguments(num_candidates=1)
    with pytest.raises(ValueError, match="--items"):
        RecDataArguments(interactions="log.csv")
    with pytest.raises(ValueError, match="num_negatives=9 must be at most num_candidates - 1 = 4"):
        RecDataArguments(num_candidates=5, num_negatives=9, prompt_style="candidates")
    assert RecDataArguments(num_candidates=5, num_negatives=9, prompt_style="history").num_negatives == 9
    with pytest.raises(ValueError, match="num_negatives=9"):  # generation mode lists the candidates
        RecDataArguments(num_candidates=5, num_negatives=9).for_mode("generation")
    with pytest.raises(ValueError, match="item_noun"):
        RecDataArguments(item_noun="{x}")
    with pytest.raises(InputError, match="Unknown loss_type"):
        parse_recipe_arguments(["--loss_type", "dmpo", "kto"])
    with pytest.raises(InputError, match="unrecognized arguments: --num_negative 4"):
        parse_recipe_arguments(["--num_negative", "4"])  # no abbreviations
    with pytest.raises(ValueError, match="prompt_style"):
        RecDataArguments(prompt_style="{nothing}")
    with pytest.raises(ValueError, match="baselines"):
        RecipeArguments(baselines=["oracle"])
    with pytest.raises(ValueError, match="Unknown recipe settings"):
        demo_arguments(num_train_user=3)


def test_defaults_are_the_best_measured_prompt():
    """Likelihood ranking uses the history prompt (3x chance zero-shot in the quality study, where the candidate-list
    prompt sat at chance); generation mode keeps the candidate list, which it needs to name a candidate."""
    data_args, _, _, recipe_args = demo_arguments()
    assert data_args.prompt_style is None and data_args.for_mode(recipe_args.ranking_mode).prompt_style == "history"
    assert RecDataArguments().for_mode("generation").prompt_style == "candidates"
    assert RecDataArguments(prompt_style="candidates").for_mode().prompt_style == "candidates"


def test_demo_arguments():
    data_args, training_args, model_args, recipe_args = demo_arguments(["--num_test_users", "20"])
    assert data_args.num_test_users == 20 and data_args.num_train_users == DEMO_SETTINGS["num_train_users"]
    assert model_args.model_name_or_path is None and model_args.use_peft and not model_args.load_in_4bit
    assert training_args.loss_type == ["dmpo"] and not training_args.gradient_checkpointing
    assert recipe_args.baselines == ["random", "popular"]


def test_run_recipe_with_lora(tiny_log_files, tiny_model_dir, tmp_path):
    args = parse_recipe_arguments(
        tiny_flags(tiny_log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--baselines", "random")
    )
    result = run_recipe(*args, verbose=False)
    assert list(result.results) == ["random", "zero-shot", "dmpo (lora)"]
    zero_shot, trained = result.results["zero-shot"], result.results["dmpo (lora)"]
    # the same candidate lists for every model and baseline
    assert [u["candidates"] for u in zero_shot["per_user"]] == [u["candidates"] for u in trained["per_user"]]
    assert [u["candidates"] for u in zero_shot["per_user"]] == [
        u["candidates"] for u in result.results["random"]["per_user"]
    ]
    assert zero_shot["metrics"]["num_users"] == 5
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    assert "rewards/accuracies" in result.log_history[0]
    table = result.table()
    assert table.splitlines()[0].split() == ["model", "hit_ratio@1", "ndcg@5"]
    assert "dmpo (lora)" in table and "zero-shot" in table
    saved = json.loads((tmp_path / "out" / "ranking_results.json").read_text())
    assert set(saved["results"]) == set(result.results) and "train_s" in saved["timings"]
    assert (tmp_path / "out" / "adapter_config.json").is_file()  # the LoRA adapter, not the full model
    split = tmp_path / "out" / SPLIT_FILE  # written before the model, so a push_to_hub carries it
    assert split.stat().st_mtime_ns <= (tmp_path / "out" / "adapter_model.safetensors").stat().st_mtime_ns
    assert json.loads(split.read_text())["test"] == zero_shot["users"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written atomically, no temporary file left


@pytest.mark.slow
def test_run_recipe_with_model_negatives_and_several_targets_per_user(tiny_log_files, tiny_model_dir, tmp_path):
    from dmpo_trl.data import candidate_sets

    extra = [
        "--use_peft", "--negative_strategy", "model", "--model_negative_fraction", "0.5", "--mining_pool_size", "6",
        "--targets_per_user", "0", "--num_train_rows", "12", "--max_steps", "-1", "--num_train_epochs", "2",
        "--no_evaluate_before",
    ]  # fmt: skip
    data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
        tiny_flags(tiny_log_files, tiny_model_dir, tmp_path, *extra)
    )
    assert (data_args.targets_per_user, data_args.num_train_rows, data_args.candidate_strategy) == (0, 12, "uniform")
    result = run_recipe(data_args, training_args, model_args, recipe_args, verbose=False)
    # 8 users x 2 positions with >= 5 items before them (7 items each), capped at 12 rows: 3 steps per epoch
    assert len(result.trainer.train_dataset) == 12
    rounds = [entry["mining_round"] for entry in result.log_history if "loss" in entry]
    assert rounds == [0, 0, 0, 1, 1, 1]
    saved = json.loads((tmp_path / SPLIT_FILE).read_text())
    assert len(saved["train"]) == len(set(saved["train"])) <= 8 and not set(saved["train"]) & set(saved["test"])
    assert saved["data"]["negative_strategy"] == "model"
    log = recipe.load_interaction_log(data_args)
    seed = data_args.split_seed  # 0 by default, whatever the training seed
    test = recipe.split_users(data_args, log, training_args.seed).test
    uniform = [c for c, _ in candidate_sets(log, test, data_args.num_candidates, seed, "uniform")]
    assert [u["candidates"] for u in result.results["dmpo (lora)"]["per_user"]] == uniform


def test_full_finetuning_trains_every_weight(tiny_log_files, tiny_model_dir, tmp_path):
    data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
        tiny_flags(tiny_log_files, tiny_model_dir, tmp_path, "--no_evaluate_before", "--no_save_final_model")
    )
    assert not model_args.use_peft and model_args.dtype is None
    result = run_recipe(data_args, training_args, model_args, recipe_args, verbose=False)
    model = result.trainer.model
    assert model.dtype == torch.float32 and all(p.requires_grad for p in model.parameters())
    assert list(result.results) == ["dmpo"]
    assert not (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("loss_type", ["sdpo", "sigmoid", "sft"])
def test_train_command_each_loss(tiny_log_files, tiny_model_dir, tmp_path, capsys, loss_type):
    flags = tiny_flags(tiny_log_files, tiny_model_dir, tmp_path, "--use_peft", "--loss_type", loss_type)
    assert main(["train", *flags, "--no_evaluate_before", "--num_test_users", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{loss_type} (lora)" in out and "hit_ratio@1" in out and "Wall time" in out
    history = json.loads((tmp_path / "ranking_results.json").read_text())
    assert history["results"][f"{loss_type} (lora)"]["metrics"]["num_users"] == 3


def test_train_command_help_lists_dataclass_fields(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--num_train_users", "--num_negatives", "--loss_type", "--load_in_4bit", "--lora_r", "--baselines"):
        assert flag in out


@pytest.mark.slow
def test_demo_command_with_overrides(tiny_log_files, tiny_model_dir, tmp_path, capsys):
    flags = tiny_flags(tiny_log_files, tiny_model_dir, tmp_path)
    assert main(["demo", *flags, "--baselines", "random"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.split()[:3] == ["model", "hit_ratio@1", "ndcg@5"]]
    header = headers[-1]  # the final before/after table (the first one, before training, has no trained row)
    rows = [line.split()[0] for line in lines[header + 1 : header + 4]]
    assert rows == ["random", "zero-shot", "dmpo"]
    assert "a random pick has HitRatio@1 = 0.25" in out


@pytest.mark.slow
def test_resume_from_checkpoint(tiny_log_files, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    flags = tiny_flags(
        tiny_log_files, tiny_model_dir, out, "--use_peft", "--no_evaluate_before", "--no_evaluate_after"
    )
    flags = [*flags, "--save_strategy", "steps", "--save_steps", "1"]  # the last --save_strategy wins
    first = run_recipe(*parse_recipe_arguments(flags), verbose=False)
    assert first.trainer.state.global_step == 2 and (out / "checkpoint-2").is_dir()

    resumed = run_recipe(
        *parse_recipe_arguments([*flags, "--max_steps", "3", "--resume_from_checkpoint", "true"]), verbose=False
    )
    state = resumed.trainer.state
    assert state.global_step == 3
    # the first two steps are the restored history of checkpoint-2; one new step was trained
    restored = [e["loss"] for e in first.log_history if "loss" in e]
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    assert losses[:2] == restored and len(losses) == 3
    explicit = run_recipe(
        *parse_recipe_arguments(
            [*flags, "--max_steps", "3", "--resume_from_checkpoint", str(out / "checkpoint-2"), "--output_dir",
             str(tmp_path / "again")]
        ),
        verbose=False,
    )  # fmt: skip
    assert [e["loss"] for e in explicit.trainer.state.log_history if "loss" in e] == losses
    with pytest.raises(InputError, match="no checkpoint folder"):
        run_recipe(*parse_recipe_arguments([*flags, "--resume_from_checkpoint", str(tmp_path / "nope")]))


@pytest.mark.slow
def test_trust_remote_code_reaches_model_and_tokenizer(
    tiny_log_files, tiny_model_dir, tmp_path, capsys, monkeypatch, fresh_remote_code_modules
):
    """A model folder whose config and model class are its own code (`auto_map`) loads only when trusted."""
    import shutil

    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep the user's cache clean
    monkeypatch.setattr("transformers.utils.hub.HF_MODULES_CACHE", str(tmp_path / "modules"), raising=False)

    model_dir = tmp_path / "remote-code-model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "configuration_tinyremote.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass TinyRemoteConfig(LlamaConfig):\n"
        "    model_type = 'tinyremote'\n"
    )
    (model_dir / "modeling_tinyremote.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_tinyremote import TinyRemoteConfig\n\n\n"
        "class TinyRemoteForCausalLM(LlamaForCausalLM):\n    config_class = TinyRemoteConfig\n"
    )
    config = json.loads((model_dir / "config.json").read_text())
    config.update(
        model_type="tinyremote",
        architectures=["TinyRemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
            "AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM",
        },
    )
    (model_dir / "config.json").write_text(json.dumps(config))
    flags = tiny_flags(tiny_log_files, model_dir, tmp_path / "out", "--no_evaluate_before", "--no_evaluate_after")
    assert main(["train", *flags]) == 2
    assert "trust_remote_code" in capsys.readouterr().err
    result = run_recipe(*parse_recipe_arguments([*flags, "--trust_remote_code"]), verbose=False)
    assert type(result.trainer.model).__name__ == "TinyRemoteForCausalLM"


def test_summary_table_keeps_only_the_chosen_metrics():
    results = {"a": {"metrics": {"hit_ratio@1": 0.5, "ndcg@5": 0.25, "mrr": 0.1, "hit_ratio@1_ci95": [0, 1]}}}
    assert summary_table(results).splitlines() == ["model  hit_ratio@1  ndcg@5", "a      0.5000       0.2500"]


def test_model_config_defaults():
    args = RecModelConfig()
    assert args.model_name_or_path is None and not args.use_peft and args.dtype is None
    assert (args.lora_r, args.lora_alpha, args.lora_dropout) == (16, 32, 0.05)
