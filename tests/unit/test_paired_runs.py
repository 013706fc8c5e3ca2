"""`python -m benchmarks.paired_runs`: two rows of `ranking_results.json` files, paired on the same users."""

import json

import pytest

from benchmarks import paired_runs


def write_results(path, row, ranks, candidates=("a", "b", "c")):
    users = [
        {"user": f"u{i}", "target": "a", "candidates": list(candidates), "target_index": 0, "rank": rank}
        for i, rank in enumerate(ranks)
    ]
    path.write_text(json.dumps({"results": {row: {"per_user": users}}}))
    return f"{path}:{row}"


def test_the_difference_is_per_user_and_paired(tmp_path):
    a = write_results(tmp_path / "a.json", "dmpo+sft (lora)", [0, 0, 2, 1])
    b = write_results(tmp_path / "b.json", "dmpo (lora)", [0, 1, 2, 3])
    result = paired_runs.main([a, b, "--out", str(tmp_path / "paired.md")])
    hits = result["metrics"]["hit_ratio@1"]
    assert hits["a"][0] == 0.5 and hits["b"][0] == 0.25 and hits["a_minus_b"][0] == 0.25
    ndcg = result["metrics"]["ndcg@5"]["a_minus_b"][0]  # u1: 1 - 1/log2(3); u3: 1/log2(3) - 1/log2(5)
    assert ndcg == pytest.approx((1 - 1 / 1.5849625 + 1 / 1.5849625 - 1 / 2.3219281) / 4, abs=1e-6)
    saved = json.loads((tmp_path / "paired.json").read_text())
    assert saved["users"] == 4 and "| hit_ratio@1 | 0.500" in (tmp_path / "paired.md").read_text()


def test_other_users_or_candidates_or_a_missing_row_are_refused(tmp_path):
    a = write_results(tmp_path / "a.json", "x", [0, 1])
    b = write_results(tmp_path / "b.json", "y", [0, 1], candidates=("a", "c", "b"))
    with pytest.raises(SystemExit, match="ranked other users or candidates"):
        paired_runs.compare(a, b)
    with pytest.raises(SystemExit, match="has no row 'z'; its rows: x"):
        paired_runs.compare(f"{tmp_path / 'a.json'}:z", a)
