"""The retriever stage of two-stage ranking and the full-catalogue metrics, on a tiny log."""

import numpy as np
import pytest
from skewed_logs import skewed_log

from dmpo_trl.classic import training_sequences
from dmpo_trl.data import InteractionLog, few_shot_split
from dmpo_trl.retrieval import (
    PopularityRetriever,
    ScoreRetriever,
    full_catalogue_metrics,
    make_retriever,
    rerank,
    retrieve,
    seen_items,
)


def tiny_log(num_users: int = 40, num_items: int = 30, length: int = 8, seed: int = 0) -> InteractionLog:
    return skewed_log(num_users, num_items, length, seed)


@pytest.fixture(scope="module")
def split():
    log = tiny_log()
    return log, few_shot_split(log, num_train_users=10, num_valid_users=0, num_test_users=20, seed=0)


def test_retrieved_items_are_unseen_distinct_and_best_first(split):
    log, data = split
    retrieved = retrieve("popular", log, data.test, top_m=10)
    counts = PopularityRetriever().fit(log, data.test).counts
    for r in retrieved:
        assert len(r.items) == len(set(r.items)) == 10
        assert not set(r.items) & seen_items(log, r.example)
        assert r.scores == sorted(r.scores, reverse=True)
        assert r.scores == [float(counts.get(i, 0)) for i in r.items]


def test_popularity_leaves_out_held_out_targets(split):
    log, data = split
    counts = PopularityRetriever().fit(log, data.test).counts
    expected = {}
    for seq in training_sequences(log, data.test).values():
        for item in seq:
            expected[item] = expected.get(item, 0) + 1
    assert dict(counts) == expected
    assert sum(counts.values()) < sum(len(s) for s in log.sequences.values())


def test_reranking_keeps_the_retrievers_recall_at_m(split):
    log, data = split
    retrieved = retrieve("popular", log, data.test, top_m=8)
    targets = [r.example.target for r in retrieved]
    alone = full_catalogue_metrics([r.items for r in retrieved], targets, k=3)
    rng = np.random.default_rng(0)
    reranked = [rerank(r, rng.random(len(r.items)).tolist()) for r in retrieved]
    two_stage = full_catalogue_metrics(reranked, targets, k=3)
    assert two_stage["recall@8"] == alone["recall@8"] == np.mean([r.hit for r in retrieved])
    assert all(sorted(a) == sorted(b.items) for a, b in zip(reranked, retrieved))
    # an oracle reranker puts every retrieved target first: its MRR is the retriever's recall
    oracle = [rerank(r, [float(i == r.example.target) for i in r.items]) for r in retrieved]
    assert full_catalogue_metrics(oracle, targets, k=3)["mrr"] == alone["recall@8"]


def test_full_catalogue_metrics_count_a_miss_as_zero():
    metrics = full_catalogue_metrics([["a", "b", "c"], ["d", "e", "f"]], ["c", "z"], k=3)
    assert metrics["recall@3"] == 0.5
    assert metrics["ndcg@3"] == pytest.approx(0.5 / np.log2(4))
    assert metrics["mrr"] == pytest.approx(1 / 6)
    assert metrics["per_user"]["retrieved"] == [1.0, 0.0]


def test_ties_are_broken_by_seed_reproducibly(split):
    log, data = split
    flat = ScoreRetriever(lambda example, items: np.zeros(len(items)))
    first = [r.items for r in retrieve(flat, log, data.test, top_m=5, seed=0)]
    again = [r.items for r in retrieve(flat, log, data.test, top_m=5, seed=0)]
    other = [r.items for r in retrieve(flat, log, data.test, top_m=5, seed=1)]
    assert first == again
    assert first != other


def test_callable_retriever_and_bad_input(split):
    log, data = split
    retriever = make_retriever(lambda example, items: {"i3": 2.0, "i4": 1.0})
    retrieved = retrieve(retriever, log, data.test[:3], top_m=2)
    for r in retrieved:
        expected = [i for i in ("i3", "i4") if i not in seen_items(log, r.example)]
        assert r.items[: len(expected)] == expected
    with pytest.raises(ValueError, match="top_m"):
        retrieve("popular", log, data.test, top_m=0)
    with pytest.raises(ValueError, match="Unknown retriever 'knn'"):
        make_retriever("knn")
    with pytest.raises(ValueError, match="returned 1 scores"):
        retrieve(ScoreRetriever(lambda example, items: [1.0]), log, data.test[:1], top_m=2)
    with pytest.raises(ValueError, match="scores for"):
        rerank(retrieved[0], [1.0])


def test_sasrec_retriever_scores_the_catalogue(split):
    pytest.importorskip("cornac")
    log, data = split
    retrieved = retrieve("sasrec", log, data.test[:5], top_m=6, seed=0)
    for r in retrieved:
        assert len(r.items) == 6 and not set(r.items) & seen_items(log, r.example)
        assert r.scores == sorted(r.scores, reverse=True)
