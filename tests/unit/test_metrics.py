import math

import numpy as np
import pytest

from dmpo_trl.metrics import (
    bootstrap_interval,
    hit_ratio,
    hits_at_k,
    mrr,
    ndcg,
    ndcg_at_k,
    pairwise_auc,
    rank_of_target,
)


# Three users: the target ranked first, third and eighth among their candidates.
RANKS = [0, 2, 7]


def test_hit_ratio_by_hand():
    assert hit_ratio(RANKS, k=1) == pytest.approx(1 / 3)
    assert hit_ratio(RANKS, k=3) == pytest.approx(2 / 3)
    assert hit_ratio(RANKS, k=5) == pytest.approx(2 / 3)
    assert hit_ratio(RANKS, k=8) == pytest.approx(1.0)
    assert hits_at_k(RANKS, k=3).tolist() == [1.0, 1.0, 0.0]


def test_ndcg_by_hand():
    # user 1: 1/log2(2) = 1; user 2: 1/log2(4) = 0.5; user 3: rank 7 >= 5 -> 0
    assert ndcg(RANKS, k=5) == pytest.approx((1 + 0.5 + 0) / 3)
    assert ndcg(RANKS, k=1) == pytest.approx(1 / 3)
    # with k=10 the third user counts: 1/log2(9)
    assert ndcg(RANKS, k=10) == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 3)
    assert ndcg_at_k([1], k=5)[0] == pytest.approx(1 / math.log2(3))


def test_mrr_by_hand():
    assert mrr(RANKS) == pytest.approx((1 + 1 / 3 + 1 / 8) / 3)


def test_rank_of_target_and_ties():
    assert rank_of_target([0.2, 0.1, 0.3], target_index=0) == 1
    assert rank_of_target([0.2, 0.1, 0.3], target_index=2) == 0
    assert rank_of_target([0.2, 0.1, 0.3], target_index=1) == 2
    assert rank_of_target([5, 5, 5, 5], 0, ties="pessimistic") == 3
    assert rank_of_target([5, 5, 5, 5], 0, ties="optimistic") == 0
    draws = {rank_of_target([5, 5, 5, 5], 0, ties="random", seed=s) for s in range(50)}
    assert draws == {0, 1, 2, 3}
    assert rank_of_target([5, 5, 5, 5], 0, seed=3) == rank_of_target([5, 5, 5, 5], 0, seed=3)
    with pytest.raises(ValueError):
        rank_of_target([1, 2], 0, ties="nope")


def test_pairwise_auc():
    assert pairwise_auc(1.0, [0.0, 0.5]) == 1.0
    assert pairwise_auc(0.0, [0.5, 1.0]) == 0.0
    assert pairwise_auc(0.5, [0.5]) == 0.5
    assert pairwise_auc(0.5, [0.1, 0.9, 0.5, 0.2]) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError):
        pairwise_auc(0.5, [])


def test_bad_ranks_rejected():
    with pytest.raises(ValueError):
        hit_ratio([-1, 0], k=1)


def test_bootstrap_interval_seeded_and_covers_mean():
    values = np.random.default_rng(1).integers(0, 2, size=400).astype(float)
    low, high = bootstrap_interval(values, seed=0)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, seed=0)
    assert (low, high) != bootstrap_interval(values, seed=1)
    # a binomial proportion's 95% interval is about +-1.96 * sqrt(p(1-p)/n)
    half_width = 1.96 * math.sqrt(values.mean() * (1 - values.mean()) / values.size)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.2)
    assert bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    median_low, median_high = bootstrap_interval(values, statistic=np.median, num_resamples=200)
    assert median_low <= median_high
