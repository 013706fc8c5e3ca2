"""Training negatives for the two-stage regime: the wrong items among a retriever's top ones."""

from __future__ import annotations

from collections import Counter

import pytest
from skewed_logs import skewed_log

from dmpo_trl.classic import training_sequences
from dmpo_trl.data import InteractionLog, UserExample
from dmpo_trl.recipe import RecDataArguments, build_datasets, split_users
from dmpo_trl.retrieval import PopularityRetriever, retrieve, retriever_negatives


def _log() -> InteractionLog:
    return skewed_log(num_users=30, num_items=60, length=9)


def test_negatives_are_wrong_items_of_the_retrievers_top():
    log = _log()
    examples = [UserExample(u, tuple(seq[-6:-1]), seq[-1], extra={"position": len(seq) - 1})
                for u, seq in list(log.sequences.items())[:10]]  # fmt: skip
    negatives = retriever_negatives("popular", log, examples, num_negatives=4, top_m=8, seed=3)
    assert negatives == retriever_negatives("popular", log, examples, num_negatives=4, top_m=8, seed=3)
    tops = retrieve(PopularityRetriever(), log, examples, top_m=8, seed=3)
    for example, drawn, top in zip(examples, negatives, tops):
        assert len(drawn) == len(set(drawn)) == 4
        assert set(drawn) <= set(top.items)  # from the retriever's top 8
        assert example.target not in drawn and not set(drawn) & set(log.sequences[example.user])
    # the retriever learnt without the examples' targets: counts over the log minus them
    counts = Counter(i for seq in training_sequences(log, examples).values() for i in seq)
    assert counts["i0"] > 0 and sum(counts.values()) == sum(len(s) for s in log.sequences.values()) - len(examples)


def test_too_small_a_pool_is_refused_naming_the_example():
    log = InteractionLog({"u1": ["a", "b"], "u2": ["a", "c"]}, {i: i for i in "abcd"})
    example = UserExample("u1", ("a",), "b")
    with pytest.raises(ValueError, match=r"examples\[0\] \(user 'u1'\): 2 wrong items among the retriever's top 4"):
        retriever_negatives("popular", log, [example], num_negatives=3, top_m=4)  # u1 touched a and b: c, d left
    with pytest.raises(ValueError, match="top_m=2 must exceed num_negatives=2"):
        retriever_negatives("popular", log, [example], num_negatives=2, top_m=2)


def test_recipe_rows_take_their_negatives_from_the_retriever():
    log = _log()
    args = RecDataArguments(
        num_train_users=8, num_valid_users=4, num_test_users=10, max_history=5,
        negative_strategy="retriever", negative_retriever="popular", retriever_pool=10,
    )  # fmt: skip
    split = split_users(args, log)
    data = build_datasets(args, log, split)
    assert args.candidate_strategy == "uniform"
    retriever = PopularityRetriever().fit(log, [*split.train, *split.valid, *split.test])
    titles = {f" {title}": item for item, title in log.titles.items()}
    for name, examples in (("train", split.train), ("validation", split.valid)):
        rows = data[name]
        tops = retrieve(retriever, log, examples, top_m=10, fit=False)
        for row, top in zip(rows, tops):
            rejected = [titles[t] for t in row["rejected"]]
            assert len(rejected) == 4 and set(rejected) <= set(top.items) - {row["target"]}
    uniform = build_datasets(RecDataArguments(**{**vars(args), "negative_strategy": "uniform"}), log, split)
    assert data["train"]["rejected"] != uniform["train"]["rejected"]
    for column in ("prompt", "chosen"):
        assert data["train"][column] == uniform["train"][column]


def test_retriever_settings_are_checked():
    with pytest.raises(ValueError, match="needs a prompt without a candidate list"):
        RecDataArguments(negative_strategy="retriever", prompt_style="candidates")
    with pytest.raises(ValueError, match="retriever_pool=4 must exceed num_negatives=4"):
        RecDataArguments(negative_strategy="retriever", retriever_pool=4)
    with pytest.raises(ValueError, match="Unknown negative_retriever 'knn'"):
        RecDataArguments(negative_retriever="knn")
