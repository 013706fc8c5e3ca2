"""wandb logging, offline: the trainer's metrics, the ranking metrics and the examples table, read back from disk."""

import json
import struct
import subprocess
import sys
import time

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl.recipe import parse_recipe_arguments, run_recipe
from dmpo_trl.tracking import TABLE_COLUMNS, metric_key


def read_wandb_records(path):
    """The records of a `.wandb` transaction log (LevelDB log format: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", "not a .wandb file"
    records, pending = [], b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # the rest of a block too short for a header is padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind in (2, 3):  # first, middle
            pending += chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
            pending = b""
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def read_finished_run(path, timeout=30.0):
    """The records once wandb's background process has written the whole run (an exit record, a settled size)."""
    deadline, size = time.monotonic() + timeout, -1
    while True:
        records = read_wandb_records(path)
        finished = any(record.WhichOneof("record_type") == "exit" for record in records)
        if (finished and path.stat().st_size == size) or time.monotonic() > deadline:
            return records
        size = path.stat().st_size
        time.sleep(0.5)


def history_and_summary(records):
    history, summary = [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return history, summary


@pytest.mark.slow
def test_wandb_offline_run_holds_trainer_and_ranking_metrics(tiny_model_dir, tmp_path, monkeypatch):
    tiny_log_files = write_tiny_log(tmp_path)
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    flags = tiny_flags(tiny_log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--baselines", "popular")
    args = parse_recipe_arguments(
        [*flags, "--report_to", "wandb", "--run_name", "tiny-dmpo", "--num_logged_examples", "3"]
    )
    result = run_recipe(*args, verbose=False)

    [run_dir] = (tmp_path / "wandb").glob("offline-run-*")
    [log_file] = run_dir.glob("run-*.wandb")
    records = read_finished_run(log_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "tiny-dmpo" and run.project == "dmpo-trl"
    history, summary = history_and_summary(records)

    # the trainer's metrics (transformers' WandbCallback), per step
    losses = [step["train/loss"] for step in history if "train/loss" in step]
    assert len(losses) == 2
    assert "train/rewards/accuracies" in summary and "train/rewards/rejected_max" in summary
    # the ranking metrics, before and after, and the baseline
    for name in ("zero-shot", "dmpo (lora)", "popular"):
        for metric in ("hit_ratio@1", "ndcg@5", "mrr"):
            assert summary[metric_key(name, metric)] == pytest.approx(result.metric(name, metric))
    # the table of example recommendations
    prefix = "ranking/examples/"  # a logged dict arrives as one summary item per nested key
    table_info = {key[len(prefix) :]: value for key, value in summary.items() if key.startswith(prefix)}
    assert table_info["_type"] == "table-file" and table_info["nrows"] == 9  # 3 users x 3 models
    table = json.loads((run_dir / "files" / table_info["path"]).read_text())
    assert table["columns"] == TABLE_COLUMNS
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {row["model"] for row in rows} == {"zero-shot", "dmpo (lora)", "popular"}
    for row in rows:
        candidates = row["candidates"].split(" | ")
        assert row["truth"] in candidates and row["pick"] in candidates
        assert row["hit"] == (row["pick"] == row["truth"]) and 1 <= row["truth_rank"] <= len(candidates)
        assert row["history"].startswith("Heat ")
    first = result.results["zero-shot"]["per_user"][0]
    scores = first["scores"]
    best = first["candidates"][max(range(len(scores)), key=scores.__getitem__)]
    zero_shot_rows = [row for row in rows if row["model"] == "zero-shot"]
    assert zero_shot_rows[0]["pick"] == f"Heat {best[1:]}"


@pytest.mark.slow
def test_wandb_is_not_imported_when_not_used():
    # Our modules import wandb only to log to it. (TRL's DPOTrainer module imports wandb itself where it is installed,
    # so the trainer and the recipe load it through TRL.)
    code = (
        "import sys\n"
        "from dmpo_trl import evaluation, models, ranking, tracking\n"
        "assert not tracking.wandb_requested(['none'])\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
