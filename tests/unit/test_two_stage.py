"""Two-stage ranking on a tiny model: the retriever's recall bounds the reranker, the LLM's scores order the
retrieved lists, fusion interpolates between the two orders."""

import numpy as np
import pytest
from skewed_logs import skewed_log

from dmpo_trl.data import few_shot_split
from dmpo_trl.evaluation import evaluate_ranking
from dmpo_trl.retrieval import retrieve
from dmpo_trl.settings import EvaluationSettings
from dmpo_trl.two_stage import choose_fusion_weight, evaluate_two_stage, fused_scores, two_stage_result


@pytest.fixture(scope="module")
def log():
    return skewed_log(seed=0, title=lambda item: f"Heat {item[1:]}", name="tiny")


def test_two_stage_recall_at_m_is_the_retrievers_and_scores_come_from_the_llm(tokenizer, tiny_model, log):
    split = few_shot_split(log, num_train_users=5, num_valid_users=0, num_test_users=12, max_history=3, seed=0)
    settings = EvaluationSettings(seed=3, progress=False)
    result = evaluate_two_stage(tiny_model, tokenizer, split.test, log, retriever=by_index, top_m=6, settings=settings)
    two_stage, alone = result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]
    assert two_stage["recall@6"] == alone["recall@6"] == result["retriever"]["num_hits"] / len(split.test)
    assert 0 < result["retriever"]["num_hits"] < len(split.test)  # some hits and some misses on this log
    # the LLM ranked exactly the lists holding the target, and its order is the two-stage order
    retrieved = retrieve(by_index, log, split.test, top_m=6, seed=3)
    hits = [r for r in retrieved if r.hit]
    llm = evaluate_ranking(
        tiny_model, tokenizer, [r.example for r in hits], log, settings=settings, candidates=[r.items for r in hits]
    )
    assert [row["scores"] for row in result["llm"]["per_user"]] == [row["scores"] for row in llm["per_user"]]
    rankings = {row["user"]: row["ranking"] for row in result["per_user"]}
    for row in llm["per_user"]:
        best = row["candidates"][int(np.argmax(row["scores"]))]
        assert rankings[row["user"]][0] == best
    # a weight large enough gives back the retriever's order (its scores are distinct)
    retriever_order = two_stage_result(retrieved, llm, fusion_weight=1e6, k=3, seed=3)
    assert retriever_order["metrics"]["full_catalogue"]["ndcg@3"] == pytest.approx(alone_ndcg(retrieved, 3))
    weight, curve = choose_fusion_weight(retrieved, llm, weights=(0.0, 1e6), k=3, seed=3)
    assert curve[weight] == max(curve.values())


def by_index(example, items):
    """A retriever with distinct scores: the lower an item's number (the more popular in this log), the higher."""
    return [-float(item[1:]) for item in items]


def alone_ndcg(retrieved, k):
    values = [
        1 / np.log2(r.items.index(r.example.target) + 2) if r.hit and r.items.index(r.example.target) < k else 0.0
        for r in retrieved
    ]
    return float(np.mean(values))


def test_fused_scores_standardise_the_retriever():
    fused = fused_scores([0.0, 0.0, 0.0], [10.0, 20.0, float("-inf")], 1.0)
    assert fused[1] > fused[0] > fused[2]
    assert fused_scores([1.0, 2.0], [5.0, 5.0], 3.0).tolist() == [1.0, 2.0]  # no spread: no change


def test_mismatched_lists_are_refused(log):
    split = few_shot_split(log, num_train_users=5, num_valid_users=0, num_test_users=4, max_history=3, seed=0)
    retrieved = retrieve("popular", log, split.test, top_m=25, seed=0)
    bad = {"per_user": [{"user": retrieved[0].example.user, "candidates": ["x"], "scores": [0.0]}]}
    with pytest.raises(ValueError, match="another list"):
        two_stage_result(retrieved, bad)
    with pytest.raises(ValueError, match="the LLM ranked no list"):
        two_stage_result(retrieved, {"per_user": []})
