import json
import random
import subprocess
import sys

import pytest
from datasets import load_from_disk
from docstring_examples import run_docstring_examples

from dmpo_trl import cli
from dmpo_trl.cli import main


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


def test_evaluate_baseline_end_to_end(tiny_dataset, tmp_path, capsys):
    output = tmp_path / "results.json"
    args = ["evaluate", "--baseline", "popular", *tiny_dataset, "--num-candidates", "5", "--num-users", "10"]
    assert main([*args, "--seed", "0", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "baseline:popular" in table and "hit_ratio@1" in table and "ndcg@5" in table
    result = json.loads(output.read_text())
    assert {"hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr"} <= set(result["metrics"])
    assert result["settings"]["num_candidates"] == 5 and result["settings"]["num_users"] == 10
    assert result["settings"]["seed"] == 0 and result["settings"]["dataset"] == "interactions"
    assert len(result["per_user"]) == 10


def test_evaluate_model_end_to_end_uses_the_same_candidates(tiny_dataset, tiny_model_dir, tmp_path):
    common = [*tiny_dataset, "--num-candidates", "4", "--num-users", "3", "--max-history", "3", "--no-progress"]
    main(["evaluate", "--baseline", "random", *common, "--output", str(tmp_path / "random.json")])
    main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            *common,
            "--batch-size",
            "4",
            "--output",
            str(tmp_path / "m.json"),
        ]
    )
    baseline = json.loads((tmp_path / "random.json").read_text())
    model = json.loads((tmp_path / "m.json").read_text())
    assert [u["candidates"] for u in model["per_user"]] == [u["candidates"] for u in baseline["per_user"]]
    assert model["settings"]["model"] == str(tiny_model_dir) and model["settings"]["conversational"] is True
    assert {"hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr"} <= set(model["metrics"])


def test_evaluate_rejects_model_and_baseline_together(tiny_dataset):
    with pytest.raises(SystemExit):
        main(["evaluate", "--baseline", "random", "--model", "x", *tiny_dataset])
    with pytest.raises(SystemExit, match="needs a model"):
        main(["evaluate", "--baseline", "random", "--mode", "generation", *tiny_dataset, "--num-users", "3"])


@pytest.mark.parametrize("fmt", ["arrow", "jsonl"])
def test_prepare_writes_a_preference_dataset(tiny_dataset, tmp_path, fmt):
    output = tmp_path / "prepared"
    args = ["prepare", *tiny_dataset, "--num-train-users", "6", "--num-valid-users", "2", "--num-test-users", "10"]
    assert (
        main([*args, "--num-negatives", "3", "--num-candidates", "6", "--format", fmt, "--output", str(output)]) == 0
    )
    if fmt == "arrow":
        data = load_from_disk(str(output))
        train, valid = data["train"], data["validation"]
    else:
        train = [json.loads(line) for line in (output / "train.jsonl").read_text().splitlines()]
        valid = [json.loads(line) for line in (output / "validation.jsonl").read_text().splitlines()]
    assert len(train) == 6 and len(valid) == 2
    assert all(len(row["rejected"]) == 3 and row["prompt"].endswith("Answer:") for row in train)
    # the prepared users never overlap the users `evaluate --num-users 10` scores
    args = cli.build_parser().parse_args(["evaluate", *tiny_dataset])
    evaluated = cli.split_log(args, cli.load_log(args), 0, 0, 10).test
    assert not {row["user"] for row in train} & {e.user for e in evaluated}


def test_prepare_conversational(tiny_dataset, tmp_path):
    output = tmp_path / "chat"
    main(
        [
            "prepare",
            *tiny_dataset,
            "--num-train-users",
            "4",
            "--num-valid-users",
            "1",
            "--num-test-users",
            "5",
            "--conversational",
            "--output",
            str(output),
        ]
    )
    row = load_from_disk(str(output))["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_cli_choices_match_the_evaluator():
    from dmpo_trl.evaluation import BASELINES, MODES

    assert cli.EVALUATION_MODES == MODES and cli.EVALUATION_BASELINES == BASELINES


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "dmpo_trl.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "evaluate" in done.stdout and "prepare" in done.stdout


def test_docstring_examples():
    assert run_docstring_examples(cli) == 0
