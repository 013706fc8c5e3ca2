"""What a command does before and around its work: help without torch, measured defaults, one default per flag,
quiet third-party notices, files others can read, and an adapter that names its base model by its Hub id."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import journal, quiet
from dmpo_trl.cli import main, stored_help
from dmpo_trl.cli.arguments import command_parsers
from dmpo_trl.cli.train import train_arguments


@pytest.fixture(scope="module")
def tiny_log_files(tmp_path_factory):
    return write_tiny_log(tmp_path_factory.mktemp("tiny-log"))


# --- help -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", stored_help.COMMANDS_WITH_STORED_HELP)
def test_stored_help_is_what_the_parser_prints(command):
    """After changing a flag, run `python -m dmpo_trl.cli.stored_help`: the stored text must equal the live one."""
    assert stored_help.stored_help(command) == stored_help.render_help(command)


@pytest.mark.parametrize("command", ["train", "demo", "prepare", "evaluate", "rank"])
def test_help_answers_without_importing_torch(command):
    code = (
        "import sys\nfrom dmpo_trl.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH 0", done.stderr
    assert f"usage: dmpo-trl {command}" in done.stdout


def test_help_with_other_library_versions_renders_live(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "train.txt"
    stale.write_text(json.dumps({"trl": "0.0.1"}) + "\nusage: stale text\n")
    monkeypatch.setattr(stored_help, "HELP_DIR", tmp_path)
    assert stored_help.stored_help("train") is None
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "stale text" not in out and "--num_negatives" in out


# --- defaults ---------------------------------------------------------------------------------------------------


def _training(argv):
    data_args, training_args, model_args, recipe_args, why = train_arguments([*argv, "--report_to", "none"])
    return training_args, model_args, why


def test_train_defaults_to_the_measured_setting_for_lora_on_the_embedded_model(tmp_path):
    args, model_args, why = _training(["--use_peft", "--output_dir", str(tmp_path)])
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (1e-3, 2.0, 4)
    assert args.warmup_steps == 2 and model_args.lora_dropout == 0.0
    assert "quality/lr/selection.md" in why
    assert args.loss_type == ["dmpo", "sft"] and args.loss_weights is None  # the SFT term, both weighted 1
    assert "loss dmpo + sft" in why
    alone, _, _ = _training(["--use_peft", "--loss_type", "dmpo", "--output_dir", str(tmp_path)])
    assert alone.loss_type == ["dmpo"] and alone.learning_rate == 1e-3  # asked for: DMPO alone
    mixed, _, _ = _training(["--use_peft", "--loss_type", "dmpo", "sdpo", "--output_dir", str(tmp_path)])
    assert mixed.loss_type == ["dmpo", "sdpo"]
    dpo, _, _ = _training(["--use_peft", "--loss_type", "sigmoid", "--output_dir", str(tmp_path)])
    assert (dpo.learning_rate, dpo.num_train_epochs) == (3e-3, 1.0)
    gemma, _, _ = _training(["--load_in_4bit", "--model_name_or_path", "gemma-3-270m", "--output_dir", str(tmp_path)])
    assert (gemma.learning_rate, gemma.num_train_epochs) == (3e-4, 1.0)  # 4-bit means QLoRA
    other, _, why = _training(["--use_peft", "--model_name_or_path", "org/model", "--output_dir", str(tmp_path)])
    assert (other.learning_rate, other.num_train_epochs, other.per_device_train_batch_size) == (3e-4, 1.0, 4)
    assert other.loss_type == gemma.loss_type == ["dmpo"]  # the SFT term was measured on SmolLM2 only
    assert "not measured for this model" in why


def test_flags_and_config_win_over_the_measured_setting(tmp_path):
    args, _, _ = _training(["--use_peft", "--learning_rate", "5e-5", "--output_dir", str(tmp_path)])
    assert (args.learning_rate, args.num_train_epochs) == (5e-5, 2.0)
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"num_train_epochs": 3, "per_device_train_batch_size": 2}))
    args, _, _ = _training(["--use_peft", "--config", str(config), "--output_dir", str(tmp_path)])
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (1e-3, 3.0, 2)


def test_full_fine_tuning_keeps_trl_defaults(tmp_path):
    from trl import DPOConfig

    args, _, why = _training(["--output_dir", str(tmp_path)])
    trl = DPOConfig(str(tmp_path), report_to="none", bf16=False)
    assert (args.learning_rate, args.num_train_epochs) == (trl.learning_rate, trl.num_train_epochs)
    assert "not measured" in why


def test_every_command_has_the_same_data_defaults(tmp_path):
    from dmpo_trl.recipe import RecDataArguments

    required = {"prepare": ["--output_dir", str(tmp_path)], "train": ["--output_dir", str(tmp_path)]}
    defaults = {}
    for command in ("prepare", "train", "evaluate"):
        parsed = command_parsers()[command]().parse_args_and_config(required.get(command, []))
        data_args = next(args for args in parsed if isinstance(args, RecDataArguments))
        defaults[command] = data_args
    assert defaults["prepare"] == defaults["train"] == defaults["evaluate"]
    shared = defaults["train"]
    assert (shared.num_train_users, shared.num_valid_users, shared.num_test_users, shared.split_seed) == (
        100,
        50,
        500,
        0,
    )


# --- quiet ------------------------------------------------------------------------------------------------------


def test_third_party_deprecations_are_hidden_and_ours_shown():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet_third_party_output()
        warnings.warn_explicit("gone in v6", FutureWarning, "modeling_utils.py", 1, module="transformers.x")
        warnings.warn_explicit("pinned", UserWarning, "dataloader.py", 1, module="torch.utils.data")
        warnings.warn_explicit(
            "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be "
            "used.",
            UserWarning,
            "dataloader.py",
            2,
            module="torch.utils.data",
        )
        warnings.warn_explicit("our deprecation", FutureWarning, "recipe.py", 1, module="dmpo_trl.recipe")
    assert [str(w.message) for w in caught] == ["pinned", "our deprecation"]


@pytest.mark.slow
def test_a_command_hides_deepspeeds_accelerator_line(tmp_path):
    pytest.importorskip("deepspeed")
    code = (
        "from dmpo_trl.cli.process import prepare_process\nprepare_process()\n"
        "import deepspeed.accelerator as a\na.get_accelerator()\nprint('imported')"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "Setting accelerator to CPU" not in done.stdout + done.stderr


# --- files ------------------------------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_writes_follow_the_umask(tmp_path, umask_022):
    assert (journal.atomic_write_text(tmp_path / "a.json", "{}").stat().st_mode & 0o777) == 0o644
    os.umask(0o027)
    assert (journal.atomic_write_text(tmp_path / "b.json", "{}").stat().st_mode & 0o777) == 0o640


@pytest.mark.slow
def test_a_trained_run_is_readable_by_others_and_names_its_base(tiny_log_files, tiny_model_dir, tmp_path, umask_022):
    from dmpo_trl import Ranker
    from dmpo_trl.models import name_base_model_by_hub_id
    from dmpo_trl.ranking import base_model_args, read_ranker_config

    output = tmp_path / "run"
    assert main(["train", *tiny_flags(tiny_log_files, tiny_model_dir, output, "--use_peft")]) == 0
    private = {p.name: oct(p.stat().st_mode & 0o777) for p in output.iterdir() if p.stat().st_mode & 0o044 != 0o044}
    assert private == {}
    assert (output / "adapter_model.safetensors").is_file()
    # A tiny local model is not embedded: its path stays, and the run records the base it trained on
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert base_model_args(read_ranker_config(output)).model_name_or_path == str(tiny_model_dir)

    # An embedded base is named by its Hub id; the run still loads offline from what ranker.json records
    ranker = Ranker.from_pretrained(output)
    name_base_model_by_hub_id(ranker.model, None)
    ranker.model.save_pretrained(output)
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    reloaded = Ranker.from_pretrained(output)
    assert main(["evaluate", "--model_name_or_path", str(output), "--no_show_progress"]) == 0
    assert reloaded.model is not None


def test_only_embedded_models_are_renamed(tiny_model):
    from peft import LoraConfig, get_peft_model

    from dmpo_trl.models import name_base_model_by_hub_id

    model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules="all-linear"))
    model.peft_config["default"].base_model_name_or_path = "/somewhere/local"
    name_base_model_by_hub_id(model, "/somewhere/local")
    assert model.peft_config["default"].base_model_name_or_path == "/somewhere/local"
    name_base_model_by_hub_id(model, "gemma-3-270m")
    assert model.peft_config["default"].base_model_name_or_path == "google/gemma-3-270m"
    name_base_model_by_hub_id(model, "gemma-3-270m", gguf_file="x.gguf")  # a GGUF file of one's own is not embedded
    assert model.peft_config["default"].base_model_name_or_path == "google/gemma-3-270m"


def test_help_files_are_package_data():
    setup = (Path(__file__).resolve().parents[2] / "setup.cfg").read_text()
    assert "help/*.txt" in setup


def test_prepare_and_evaluate_hold_out_the_same_test_users(tiny_log_files, tmp_path):
    interactions, items = tiny_log_files
    data = ["--interactions", interactions, "--items", items, "--num_test_users", "5", "--num_candidates", "4"]
    users = ["--num_train_users", "8", "--num_valid_users", "2"]
    assert main(["prepare", *data, *users, "--no_conversational", "--output_dir", str(tmp_path / "data")]) == 0
    held_out = json.loads((tmp_path / "data" / "split.json").read_text())["test"]
    results = tmp_path / "random.json"
    assert main(["evaluate", "--baseline", "random", *data, "--results_file", str(results), "--no_show_progress"]) == 0
    assert json.loads(results.read_text())["users"] == held_out
