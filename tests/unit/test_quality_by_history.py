"""The main comparison by history length: lengths from the log, per-group tables and differences, the classic match."""

import json

import numpy as np
import pytest

from benchmarks.quality.by_history import (
    LONG_GROUPS,
    classic_per_user,
    differences,
    history_lengths,
    markdown,
    tables,
)
from dmpo_trl.cold_start import HISTORY_GROUPS


SEQUENCES = {"a": ["x", "y", "x", "z"], "b": ["p", "q", "r", "s", "t", "u", "v", "w"], "c": ["m"] * 3 + ["n"] * 20}


def test_history_length_is_the_targets_last_position_in_the_users_sequence():
    rows = [{"user": "a", "target": "x"}, {"user": "a", "target": "z"}, {"user": "b", "target": "w"}]
    rows.append({"user": "c", "target": "m"})
    assert history_lengths(SEQUENCES, rows) == [2, 3, 7, 2]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"user": "nobody", "target": "x"}, "row 1: user 'nobody' (field 'user') is not in the log"),
        ({"user": "a", "target": "w"}, "row 1: target 'w' (field 'target') is not in user 'a'"),
        ({"user": "a"}, "row 1: no 'target' field"),
    ],
)
def test_a_row_that_does_not_match_the_log_is_named(row, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        history_lengths(SEQUENCES, [{"user": "a", "target": "x"}, row])


LENGTHS = [1, 2, 4, 7, 12, 30, 45]
PER_USER = {
    "uniform": {
        "m": {"hit_ratio@1": [1, 0, 1, 1, 0, 0, 1], "ndcg@5": [1.0, 0.5, 1.0, 1.0, 0.0, 0.25, 1.0]},
        "ref": {"hit_ratio@1": [1, 1, 0, 1, 1, 1, 1], "ndcg@5": [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0]},
    },
    "popularity_matched": {
        "m": {"hit_ratio@1": [0, 0, 0, 0, 0, 0, 0], "ndcg@5": [0.0] * 7},
        "ref": {"hit_ratio@1": [1, 0, 1, 0, 1, 0, 1], "ndcg@5": [0.5] * 7},
    },
}


def test_tables_average_each_method_within_each_group_per_regime_and_metric():
    out = tables(PER_USER, LENGTHS)
    assert set(out) == {"uniform", "popularity_matched"}
    assert set(out["uniform"]) == {"hit_ratio@1", "ndcg@5"}
    table = out["uniform"]["ndcg@5"]
    assert list(table) == ["1-2", "3-5", "6-10", "11+"]
    assert [table[g]["num_users"] for g in table] == [2, 1, 1, 3]
    assert table["1-2"]["m"][0] == pytest.approx(0.75)
    assert table["11+"]["m"][0] == pytest.approx((0.0 + 0.25 + 1.0) / 3)
    assert table["11+"]["ref"][0] == pytest.approx(1.0)
    assert out["popularity_matched"]["hit_ratio@1"]["11+"]["ref"][0] == pytest.approx(2 / 3)
    # other groups: 12 is in 11-20, 30 and 45 in 21-40 and 41-80; nothing above 80
    long = tables(PER_USER, LENGTHS, LONG_GROUPS)["uniform"]["hit_ratio@1"]
    assert [long[g]["num_users"] for g in long] == [4, 1, 1, 1, 0, 0]
    assert "m" not in long["161+"]


def test_tables_refuse_values_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="m: 3 per-user values for 7 users"):
        tables({"uniform": {"m": {"hit_ratio@1": [1, 0, 1]}}}, LENGTHS)


def test_differences_are_paired_within_each_group():
    values = {name: PER_USER["uniform"][name]["hit_ratio@1"] for name in ("m", "ref")}
    out = differences(values, LENGTHS, "ref", ["m", "absent", "ref"])
    assert list(out) == ["m"]
    assert out["m"]["1-2"][0] == pytest.approx(0.5)  # (1 - 1 + 1 - 0) / 2
    assert out["m"]["3-5"][0] == pytest.approx(-1.0)
    assert out["m"]["11+"][0] == pytest.approx(2 / 3)
    low, high = out["m"]["11+"][1:]
    assert low <= 2 / 3 <= high
    assert differences(values, LENGTHS, "ref", ["m"], ((1, 10), (11, 20), (21, None)))["m"]["11-20"][0] == 1.0


def summary(included=True):
    return {
        "quality_dir": "q",
        "classic_dir": "c",
        "num_candidates": 20,
        "seeds": [0],
        "rows": 7,
        "distinct_users": 7,
        "history_length": {"min": 1, "median": 7.0, "max": 45},
        "methods": ["m", "ref"],
        "classic": {
            "included": ["m"] if included else [],
            "left_out_because": None if included else "no such folder",
            "settings": {"m": {"k": 1}} if included else {},
        },
        "tables": {"history_groups": tables(PER_USER, LENGTHS, HISTORY_GROUPS)},
        "differences": {
            "history_groups": {
                r: differences({n: PER_USER[r][n]["hit_ratio@1"] for n in ("m", "ref")}, LENGTHS, "ref", ["m"])
                for r in PER_USER
            }
        },
    }


def test_markdown_has_a_table_per_regime_and_metric_and_says_where_cold_start_users_are():
    text = markdown(summary())
    assert text.count("| history before target | users | m | ref |") == 4
    assert "### NDCG@5, candidates: popularity_matched" in text
    assert "| 11+ | 3 | 0.417 [" in text  # uniform NDCG@5 of m: (0 + 0.25 + 1) / 3
    assert "1 to 45 interactions before the target (median 7)" in text
    assert "benchmarks/results/classic/few-shot/cold_start.md" in text and "sampled/cold" in text
    assert "| uniform | m | 0.500 [" in text  # ref - m in 1-2
    assert "left out" not in text
    assert "The classic rows are left out: no such folder." in markdown(summary(included=False))


# --- matching the classic baselines' saved scores to the main folder's users and candidates -----------------------

CONFIG = {"seeds": [0], "dataset_name": "toy", "num_candidates": 3, "num_test_users": 2}


def classic_folder(tmp_path, figure=None, config=CONFIG, rows=2):
    candidates = {
        0: {
            regime: [
                {"user": "a", "target": "x", "candidates": ["x", "y", "z"], "target_index": 0},
                {"user": "b", "target": "q", "candidates": ["p", "q", "r"], "target_index": 1},
            ]
            for regime in ("uniform", "popularity_matched")
        }
    }
    # the target first for user a, second for user b: HR@1 0.5, NDCG@5 (1 + 1 / log2(3)) / 2
    scores = [[3.0, 1.0, 2.0], [3.0, 2.0, 1.0]][:rows]
    run = {"seed": 0, "test": {regime: {"score": scores} for regime in ("uniform", "popularity_matched")}}
    (tmp_path / "runs" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "seed0" / "sasrec__n_epochs4.json").write_text(json.dumps(run))
    ndcg = (1 + 1 / np.log2(3)) / 2
    figures = {"hit_ratio@1": [0.5 if figure is None else figure, 0, 1], "ndcg@5": [ndcg, 0, 1]}
    saved = {
        "quality_config": config,
        "selection": {"sasrec": {"chosen": {"n_epochs": 4}}},
        "methods": {"sasrec": {"num_users": 2, "uniform": figures, "popularity_matched": figures}},
    }
    (tmp_path / "classic.json").write_text(json.dumps(saved))
    return candidates


def test_classic_rows_are_taken_where_they_reproduce_the_classic_reports_figures(tmp_path):
    candidates = classic_folder(tmp_path)
    out, why = classic_per_user(tmp_path, {"config": CONFIG}, candidates, {})
    assert why is None
    assert list(out) == ["sasrec"]
    assert out["sasrec"]["uniform"]["hit_ratio@1"].tolist() == [1.0, 0.0]
    assert out["sasrec"]["popularity_matched"]["ndcg@5"][1] == pytest.approx(1 / np.log2(3))


def test_classic_rows_that_do_not_match_are_left_out_with_the_reason(tmp_path):
    (tmp_path / "figure").mkdir()
    candidates = classic_folder(tmp_path / "figure", figure=0.25)
    out, why = classic_per_user(tmp_path / "figure", {"config": CONFIG}, candidates, {})
    assert out == {} and why == "sasrec uniform hit_ratio@1: the scores do not give the classic report's figure"

    (tmp_path / "config").mkdir()
    candidates = classic_folder(tmp_path / "config", config={**CONFIG, "num_candidates": 20})
    out, why = classic_per_user(tmp_path / "config", {"config": CONFIG}, candidates, {})
    assert out == {} and why == "its study settings differ from the main folder's: num_candidates"

    (tmp_path / "rows").mkdir()
    candidates = classic_folder(tmp_path / "rows", rows=1)
    out, why = classic_per_user(tmp_path / "rows", {"config": CONFIG}, candidates, {})
    assert out == {} and "other number of users" in why

    out, why = classic_per_user(tmp_path / "absent", {"config": CONFIG}, candidates, {})
    assert out == {} and "does not exist" in why


def test_docstring_examples():
    from docstring_examples import run_docstring_examples

    import benchmarks.quality.by_history as module

    assert run_docstring_examples(module) == 0
