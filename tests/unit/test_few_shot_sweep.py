"""The few-shot curve's training users: the split's own first, then further users in a fixed seeded order."""

import pytest

from benchmarks.few_shot_curve import size_value, training_users_at
from dmpo_trl.classic import few_shot_sequences
from dmpo_trl.data import InteractionLog, few_shot_split


@pytest.fixture(scope="module")
def log():
    sequences = {f"u{k}": [f"i{(3 * k + j) % 40}" for j in range(8 + k % 5)] for k in range(30)}
    return InteractionLog(sequences, {f"i{j}": f"Title {j}" for j in range(40)})


@pytest.fixture(scope="module")
def split(log):
    return few_shot_split(log, num_train_users=5, num_valid_users=4, num_test_users=6, max_history=3, seed=0)


def test_larger_n_keeps_the_split_users_first_and_nests(log, split):
    held_out = split.valid + split.test
    at = {n: training_users_at(log, split.train, held_out, n, seed=1, max_history=3) for n in (5, 9, 12, None)}
    assert at[5] == split.train
    assert [e.user for e in at[9]] == [e.user for e in at[12]][:9]
    assert [e.user for e in at[12]] == [e.user for e in at[None]][:12]
    users = [e.user for e in at[None]]
    held = {e.user for e in held_out}
    assert len(users) == len(set(users)) == 30 - len(held)
    assert set(users) == set(log.sequences) - held
    # each added user gives its whole sequence; held-out users only their shown history
    data = few_shot_sequences(log, at[12], held_out)
    for e in at[12][5:]:
        assert data[e.user] == log.sequences[e.user]
    for e in held_out:
        assert data[e.user] == list(e.history)
    # another seed orders the added users differently, the split's users still first
    other = training_users_at(log, split.train, held_out, None, seed=2, max_history=3)
    assert other[:5] == split.train and [e.user for e in other] != users


def test_bad_sizes_are_clear_errors(log, split):
    held_out = split.valid + split.test
    with pytest.raises(ValueError, match="below the split's 5 training users"):
        training_users_at(log, split.train, held_out, 4)
    with pytest.raises(ValueError, match="5 training users \\+ 15 others"):
        training_users_at(log, split.train, held_out, 21)
    with pytest.raises(ValueError, match="both a training and a held-out user"):
        training_users_at(log, split.train, split.train[:1], None)
    assert size_value("all") is None and size_value("200") == 200
    with pytest.raises(ValueError, match="'1k'"):
        size_value("1k")


def test_docstring_examples():
    from docstring_examples import run_docstring_examples

    import benchmarks.few_shot_curve as module

    assert run_docstring_examples(module) == 0
