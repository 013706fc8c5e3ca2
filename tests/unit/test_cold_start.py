"""Cold-start test users and the breakdown of per-user results by history length."""

from collections import Counter

import numpy as np
import pytest

from dmpo_trl.classic import training_sequences
from dmpo_trl.cold_start import HISTORY_GROUPS, breakdown, cold_start_examples, history_group, history_length
from dmpo_trl.data import InteractionLog


def log_of(num_users: int = 40, length: int = 25) -> InteractionLog:
    items = [f"i{j}" for j in range(60)]
    sequences = {f"u{k}": [items[(k + j) % 60] for j in range(length)] for k in range(num_users)}
    return InteractionLog(sequences, {i: f"Title {i}" for i in items})


def test_groups_are_filled_evenly_and_targets_are_the_position():
    log = log_of()
    users = sorted(log.sequences)
    examples = cold_start_examples(log, users, seed=3, max_history=10)
    assert [e.user for e in examples] == users
    groups = Counter(history_group(history_length(e)) for e in examples)
    assert groups == {"1-2": 10, "3-5": 10, "6-10": 10, "11+": 10}
    for e in examples:
        position = e.extra["position"]
        assert log.sequences[e.user][position] == e.target
        assert e.history == tuple(log.sequences[e.user][max(0, position - 10) : position])
    assert cold_start_examples(log, users, seed=3) == examples
    assert cold_start_examples(log, users, seed=4) != examples


def test_everything_from_the_target_on_is_held_out():
    log = log_of(num_users=8)
    examples = cold_start_examples(log, sorted(log.sequences), seed=0)
    sequences = training_sequences(log, examples)
    for e in examples:
        assert sequences[e.user] == log.sequences[e.user][: e.extra["position"]]


def test_short_sequences_fall_back_to_a_group_they_can_fill():
    log = log_of(num_users=8, length=4)
    examples = cold_start_examples(log, sorted(log.sequences), seed=0)
    assert {history_group(history_length(e)) for e in examples} <= {"1-2", "3-5"}
    with pytest.raises(ValueError, match="too few"):
        cold_start_examples(log_of(num_users=2, length=1), ["u0", "u1"])


def test_breakdown_groups_average_back_to_the_whole():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=200).tolist()
    values = rng.integers(0, 2, size=200).astype(float)
    table = breakdown({"model": values}, lengths)
    assert sum(row["num_users"] for row in table.values()) == 200
    weighted = sum(row["model"][0] * row["num_users"] for row in table.values() if row["num_users"]) / 200
    assert weighted == pytest.approx(values.mean())
    assert list(table) == [history_group(low) for low, _ in HISTORY_GROUPS]
    with pytest.raises(ValueError, match="3 per-user values for 200 users"):
        breakdown({"model": [1, 0, 1]}, lengths)
