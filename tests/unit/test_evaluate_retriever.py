"""`evaluate_ranking(..., retriever=...)` on a tiny model: the two-stage result of `evaluate_two_stage`, its Recall@M
the retriever's, and the arguments that only make sense together refused."""

import json

import pytest
from skewed_logs import skewed_log

from dmpo_trl.data import few_shot_split
from dmpo_trl.evaluation import evaluate_ranking, evaluate_two_stage
from dmpo_trl.retrieval import PopularityRetriever, full_catalogue_metrics, retrieve
from dmpo_trl.settings import EvaluationSettings


@pytest.fixture(scope="module")
def log():
    return skewed_log(seed=1, title=lambda item: f"Heat {item[1:]}", name="tiny")


@pytest.fixture(scope="module")
def split(log):
    return few_shot_split(log, num_train_users=5, num_valid_users=4, num_test_users=12, max_history=3, seed=0)


SETTINGS = EvaluationSettings(seed=3, progress=False)


def full(result):
    """The full-catalogue metrics without the per-user lists."""
    return {k: v for k, v in result.items() if k != "per_user"}


def test_evaluate_ranking_with_a_retriever_is_the_two_stage_evaluation(tokenizer, tiny_model, log, split):
    result = evaluate_ranking(tiny_model, tokenizer, split.test, log, settings=SETTINGS, retriever="popular",
                              retrieve_top=6)  # fmt: skip
    reference = evaluate_two_stage(tiny_model, tokenizer, split.test, log, "popular", 6, settings=SETTINGS)
    assert full(result["metrics"]["full_catalogue"]) == full(reference["metrics"]["full_catalogue"])
    assert result["per_user"] == reference["per_user"]
    assert result["retriever"]["num_hits"] == reference["retriever"]["num_hits"]
    # the two-stage Recall@6 is the retriever's: what popularity retrieved on its own, counted independently
    retrieved = retrieve("popular", log, split.test, top_m=6, seed=3)
    alone = full_catalogue_metrics([r.items for r in retrieved], [r.example.target for r in retrieved], k=10)
    assert 0 < alone["recall@6"] < 1  # some hits and some misses on this log
    assert result["metrics"]["full_catalogue"]["recall@6"] == alone["recall@6"]
    assert result["retriever"]["full_catalogue"]["recall@6"] == alone["recall@6"]
    # the LLM ranked exactly the retrieved lists that hold the target
    assert [row["candidates"] for row in result["llm"]["per_user"]] == [r.items for r in retrieved if r.hit]
    # the former keyword form reaches the two-stage evaluation too
    legacy = evaluate_ranking(tiny_model, tokenizer, split.test, log, seed=3, progress=False, retriever="popular",
                              retrieve_top=6)  # fmt: skip
    assert legacy["per_user"] == result["per_user"]


def test_retriever_fusion_held_out_and_output(tokenizer, tiny_model, log, split, tmp_path):
    def by_index(example, items):  # distinct scores: the lower an item's number, the higher
        return [-float(item[1:]) for item in items]

    output = tmp_path / "two_stage.json"
    kwargs = {"settings": SETTINGS, "retriever": by_index, "retrieve_top": 5}
    llm_order = evaluate_ranking(tiny_model, tokenizer, split.test, log, output=output, **kwargs)
    assert json.loads(output.read_text())["metrics"]["full_catalogue"] == llm_order["metrics"]["full_catalogue"]
    assert llm_order["retriever"]["name"] == "custom" and llm_order["retriever"]["top_m"] == 5
    # a weight large enough gives back the retriever's own order
    retriever_order = evaluate_ranking(tiny_model, tokenizer, split.test, log, fusion_weight=1e6, **kwargs)
    alone = retriever_order["retriever"]["full_catalogue"]
    assert retriever_order["metrics"]["full_catalogue"]["ndcg@10"] == pytest.approx(alone["ndcg@10"])
    assert retriever_order["settings"]["fusion_weight"] == 1e6
    # held_out: the validation users' targets stay out of the popularity counts as well
    retrieved = {}
    for held_out in (None, split.test + split.valid):
        result = evaluate_ranking(tiny_model, tokenizer, split.test, log, settings=SETTINGS, retriever="popular",
                                  retrieve_top=4, held_out=held_out)  # fmt: skip
        retrieved[held_out is None] = [sorted(row["ranking"]) for row in result["per_user"]]
    fitted = PopularityRetriever().fit(log, split.test + split.valid)
    expected = retrieve(fitted, log, split.test, top_m=4, seed=3, fit=False)
    assert retrieved[False] == [sorted(r.items) for r in expected]
    assert retrieved[False] != retrieved[True]  # the counts, and so the lists, differ


def test_arguments_that_need_each_other_are_refused(tokenizer, tiny_model, log, split):
    examples = split.test[:2]
    with pytest.raises(ValueError, match="give `candidates` or a `retriever`, not both"):
        evaluate_ranking(tiny_model, tokenizer, examples, log, settings=SETTINGS, retriever="popular",
                         candidates=[["i1", "i2"], ["i1", "i2"]])  # fmt: skip
    with pytest.raises(ValueError, match="pass a `retriever` too"):
        evaluate_ranking(tiny_model, tokenizer, examples, log, settings=SETTINGS, fusion_weight=1.0)
    with pytest.raises(ValueError, match="pass a `retriever` too"):
        evaluate_ranking(tiny_model, tokenizer, examples, log, settings=SETTINGS, held_out=examples)
    with pytest.raises(ValueError, match="reranks by likelihood"):
        evaluate_ranking(tiny_model, tokenizer, examples, log, mode="auc", progress=False, retriever="popular")
    with pytest.raises(ValueError, match="top_m must be at least 1"):
        evaluate_ranking(tiny_model, tokenizer, examples, log, settings=SETTINGS, retriever="popular",
                         retrieve_top=0)  # fmt: skip
