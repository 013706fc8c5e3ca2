"""Every ranking result broken down by how many interactions the test user had before the target."""

import math
import random

import pytest
from tiny_models import build_model

from dmpo_trl.cold_start import history_breakdown
from dmpo_trl.data import InteractionLog, UserExample, example_at
from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking, format_history_breakdown
from dmpo_trl.evaluation.two_stage import two_stage_result
from dmpo_trl.journal import Journal
from dmpo_trl.retrieval import Retrieved


# (user, position of the target): 1 and 2 -> "1-2", 4 -> "3-5", 7 -> "6-10", 14 and 15 -> "11+"
POSITIONS = {"u0": 1, "u1": 2, "u2": 4, "u3": 7, "u4": 14, "u5": 15, "u6": 2}


def history_log() -> InteractionLog:
    rng = random.Random(0)
    items = [f"i{k}" for k in range(40)]
    sequences = {f"u{k}": rng.sample(items, 16) for k in range(12)}
    return InteractionLog(sequences, {i: f"Film {i[1:]}" for i in items}, name="history")


def examples_of(log: InteractionLog) -> list[UserExample]:
    return [example_at(log, user, position, max_history=5) for user, position in POSITIONS.items()]


def expected_groups(per_user: list[dict]) -> dict[str, dict[str, float]]:
    """hit_ratio@1 and ndcg@5 per group, worked out from the per-user ranks and history lengths by hand."""
    bounds = {"1-2": (1, 2), "3-5": (3, 5), "6-10": (6, 10), "11+": (11, 10**9)}
    out = {}
    for label, (low, high) in bounds.items():
        ranks = [row["rank"] for row in per_user if low <= row["history_length"] <= high]
        if ranks:
            out[label] = {
                "num_users": len(ranks),
                "hit_ratio@1": sum(r == 0 for r in ranks) / len(ranks),
                "ndcg@5": sum(1 / math.log2(r + 2) if r < 5 else 0.0 for r in ranks) / len(ranks),
            }
    return out


@pytest.mark.parametrize("baseline", ["popular", "random"])
def test_baseline_results_carry_history_lengths_and_groups(baseline):
    log = history_log()
    result = evaluate_baseline(baseline, examples_of(log), log, num_candidates=8, seed=1)
    assert [row["history_length"] for row in result["per_user"]] == list(POSITIONS.values())  # not the shown 5
    by_length = result["metrics"]["by_history_length"]
    assert list(by_length) == ["1-2", "3-5", "6-10", "11+"]
    assert [row["num_users"] for row in by_length.values()] == [3, 1, 1, 2]
    expected = expected_groups(result["per_user"])
    for label, row in by_length.items():
        assert row == pytest.approx(expected[label])
    # the groups average back to the overall metrics
    for key in ("hit_ratio@1", "ndcg@5"):
        pooled = sum(row[key] * row["num_users"] for row in by_length.values()) / len(POSITIONS)
        assert pooled == pytest.approx(result["metrics"][key])


def test_groups_without_users_are_left_out_and_a_history_of_none_is_in_no_group():
    log = history_log()
    examples = [example_at(log, "u0", 3), example_at(log, "u1", 4), UserExample("u2", (), log.sequences["u2"][0])]
    result = evaluate_baseline("popular", examples, log, num_candidates=5)
    assert [row["history_length"] for row in result["per_user"]] == [3, 4, 0]
    assert list(result["metrics"]["by_history_length"]) == ["3-5"]
    assert result["metrics"]["by_history_length"]["3-5"]["num_users"] == 2
    assert result["metrics"]["num_users"] == 3


def test_history_breakdown_checks_its_input_and_the_table_prints_each_group():
    with pytest.raises(ValueError, match="2 per-user values for 3 users"):
        history_breakdown({"ndcg@5": [1.0, 0.0]}, [1, 2, 3])
    table = history_breakdown({"hit_ratio@1": [1.0, 0.0, 0.0], "ndcg@5": [1.0, 0.5, 0.0]}, [1, 12, 13])
    printed = format_history_breakdown({"by_history_length": table}).splitlines()
    assert printed[0].split() == ["history", "before", "target", "users", "hit_ratio@1", "ndcg@5"]
    assert printed[1].split() == ["1-2", "1", "1.0000", "1.0000"]
    assert printed[2].split() == ["11+", "2", "0.0000", "0.2500"]
    assert format_history_breakdown({}).split() == ["history", "before", "target", "users"]


def test_two_stage_results_break_down_the_full_catalogue_metrics():
    log = history_log()
    examples = examples_of(log)[:3]  # history lengths 1, 2, 4
    unseen = [[i for i in log.titles if i not in log.sequences[e.user]][:2] for e in examples]
    # the targets of the first and third user retrieved first, the second user's missed
    retrieved = [
        Retrieved(e, [e.target, other[0]] if k != 1 else other, [2.0, 1.0])
        for k, (e, other) in enumerate(zip(examples, unseen))
    ]
    llm = {
        "per_user": [
            {"user": e.user, "candidates": item.items, "scores": [-1.0, -2.0]}
            for e, item in zip(examples, retrieved)
            if item.hit
        ]
    }
    result = two_stage_result(retrieved, llm, k=1)
    assert [row["history_length"] for row in result["per_user"]] == [1, 2, 4]
    for metrics in (result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]):
        by_length = metrics["by_history_length"]
        assert list(by_length) == ["1-2", "3-5"]
        assert by_length["1-2"]["num_users"] == 2 and by_length["1-2"]["recall@1"] == 0.5  # u1's target missed
        assert by_length["3-5"] == {"num_users": 1, "recall@1": 1.0, "ndcg@1": 1.0, "mrr": 1.0, "recall@2": 1.0}


def test_model_results_break_down_in_every_mode(tokenizer):
    log = history_log()
    examples = examples_of(log)
    model = build_model(tokenizer)
    for mode, keys in (("likelihood", ["hit_ratio@1", "ndcg@5"]), ("auc", ["auc"])):
        result = evaluate_ranking(model, tokenizer, examples, log, num_candidates=4, mode=mode, progress=False)
        assert [row["history_length"] for row in result["per_user"]] == list(POSITIONS.values())
        by_length = result["metrics"]["by_history_length"]
        assert [row["num_users"] for row in by_length.values()] == [3, 1, 1, 2]
        assert all(list(row) == ["num_users", *keys] for row in by_length.values())
        if mode == "likelihood":
            for label, row in by_length.items():
                assert row == pytest.approx(expected_groups(result["per_user"])[label])


def test_a_journal_of_other_targets_is_not_continued(tokenizer, tmp_path, monkeypatch):
    """A killed run's journal holds which targets it ranked: the same users at other targets are refused, not mixed."""
    log = history_log()
    last = [example_at(log, user, -1, max_history=5) for user in POSITIONS]
    output = tmp_path / "ranking.json"
    monkeypatch.setattr(Journal, "remove", lambda self: None)  # as if killed before the journal went
    model = build_model(tokenizer)
    evaluate_ranking(model, tokenizer, last, log, num_candidates=4, progress=False, output=output)
    with pytest.raises(ValueError, match="targets"):
        evaluate_ranking(model, tokenizer, examples_of(log), log, num_candidates=4, progress=False, output=output)
    again = evaluate_ranking(model, tokenizer, last, log, num_candidates=4, progress=False, output=output)
    assert [row["history_length"] for row in again["per_user"]] == [15] * len(POSITIONS)
