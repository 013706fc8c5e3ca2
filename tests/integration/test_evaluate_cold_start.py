"""`dmpo-trl evaluate --test_targets cold`: each test user ranked at an early target, the results by history length."""

import json
import random

import pytest

from dmpo_trl.cli import main
from dmpo_trl.cold_start import history_group


GROUPS = ["1-2", "3-5", "6-10", "11+"]


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    """A CSV log of 40 users with 8 to 30 distinct items each (so an item's position in a sequence is unique)."""
    folder = tmp_path_factory.mktemp("cold-data")
    rng = random.Random(0)
    items = [f"m{k}" for k in range(60)]
    sequences = {f"u{u}": rng.sample(items, rng.randint(8, 30)) for u in range(40)}
    lines = ["user_id,item_id,timestamp"]
    lines += [f"{user},{item},{t}" for user, sequence in sequences.items() for t, item in enumerate(sequence)]
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    titles = ["item_id,title"] + [f"{i},Heat {i[1:]} (19{40 + int(i[1:])})" for i in items]
    (folder / "items.csv").write_text("\n".join(titles) + "\n")
    flags = ["--interactions", str(folder / "interactions.csv"), "--items", str(folder / "items.csv")]
    return flags, sequences


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_popular_baseline_on_cold_start_targets(long_log, tmp_path, capsys):
    flags, sequences = long_log
    common = ["evaluate", "--baseline", "popular", *flags, "--num_candidates", "6", "--num_test_users", "24"]
    code, out, _ = run_cli(capsys, *common, "--test_targets", "cold", "--output_file", str(tmp_path / "cold.json"))
    assert code == 0
    cold = json.loads((tmp_path / "cold.json").read_text())
    assert cold["settings"]["test_targets"] == "cold" and len(cold["per_user"]) == 24
    for row in cold["per_user"]:
        sequence = sequences[row["user"]]
        position = sequence.index(row["target"])
        assert row["history_length"] == position >= 1
        assert position <= 22  # the open-ended group draws up to twice its lower bound
        if len(sequence) > 23:  # long enough that no group reaches the last item
            assert position < len(sequence) - 1
    by_length = cold["metrics"]["by_history_length"]
    counts = {g: sum(history_group(r["history_length"]) == g for r in cold["per_user"]) for g in GROUPS}
    assert list(by_length) == [g for g in GROUPS if counts[g]] and len(by_length) >= 3
    assert {g: row["num_users"] for g, row in by_length.items()} == {g: n for g, n in counts.items() if n}
    for group, row in by_length.items():
        ranks = [r["rank"] for r in cold["per_user"] if history_group(r["history_length"]) == group]
        assert row["hit_ratio@1"] == pytest.approx(sum(r == 0 for r in ranks) / len(ranks))
    # the printed tables: the usual one, then HR@1 and NDCG@5 with the users of each group
    assert "baseline:popular" in out and "early targets" in out
    table = out[out.index("By interactions before the target:") :].splitlines()[1:]
    assert table[0].split() == ["history", "before", "target", "users", "hit_ratio@1", "ndcg@5"]
    rows = [line.split()[:2] for line in table[1 : 1 + len(by_length)]]
    assert rows == [[g, str(row["num_users"])] for g, row in by_length.items()]
    assert table[1 + len(by_length)].startswith("Wrote")

    # the default ranks the same users at their last item
    code, out, _ = run_cli(capsys, *common, "--output_file", str(tmp_path / "last.json"))
    last = json.loads((tmp_path / "last.json").read_text())
    assert code == 0 and "By interactions before the target" not in out
    assert last["settings"]["test_targets"] == "last" and last["users"] == cold["users"]
    assert [r["target"] for r in last["per_user"]] == [sequences[u][-1] for u in last["users"]]
    assert [r["history_length"] for r in last["per_user"]] == [len(sequences[u]) - 1 for u in last["users"]]


def test_a_model_on_cold_start_targets(long_log, tiny_model_dir, tmp_path, capsys):
    flags, sequences = long_log
    common = ["evaluate", *flags, "--num_test_users", "8", "--max_history", "3", "--no_show_progress"]
    model = ["--model_name_or_path", str(tiny_model_dir), "--test_targets", "cold"]
    output = tmp_path / "model.json"
    code, out, _ = run_cli(capsys, *common, *model, "--num_candidates", "4", "--output_file", str(output))
    result = json.loads(output.read_text())
    assert code == 0 and result["settings"]["test_targets"] == "cold" and "By interactions before the target" in out
    assert sum(row["num_users"] for row in result["metrics"]["by_history_length"].values()) == 8
    assert all(len(r["candidates"]) == 4 and r["target"] in r["candidates"] for r in result["per_user"])
    assert all(sequences[r["user"]].index(r["target"]) == r["history_length"] for r in result["per_user"])
    two_stage = tmp_path / "two.json"
    retriever = ["--retriever", "popular", "--retrieve_top", "8", "--output_file", str(two_stage)]
    code, out, _ = run_cli(capsys, *common, *model, *retriever)
    result = json.loads(two_stage.read_text())
    assert code == 0 and result["settings"]["test_targets"] == "cold"
    assert out.count("by interactions before the target:") == 2
    by_length = result["metrics"]["full_catalogue"]["by_history_length"]
    assert sum(row["num_users"] for row in by_length.values()) == 8 and "ndcg@10" in next(iter(by_length.values()))


def test_cold_targets_with_a_split_file_are_refused(long_log, tmp_path, capsys):
    flags, _ = long_log
    prepared = tmp_path / "prepared"
    prepare = ["prepare", *flags, "--num_train_users", "4", "--num_valid_users", "0", "--num_test_users", "5"]
    assert main([*prepare, "--num_negatives", "2", "--output", str(prepared)]) == 0
    capsys.readouterr()
    args = ["evaluate", "--baseline", "popular", "--split_file", str(prepared), "--test_targets", "cold"]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "" and len(err) == 1
    assert err[0].startswith("dmpo-trl evaluate: error: --test_targets cold:") and "--split_file none" in err[0]
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "popular", *flags, "--test_targets", "first")
    assert code == 2 and "--test_targets" in err[-1]
