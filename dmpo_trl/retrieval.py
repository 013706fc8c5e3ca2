"""The first stage of two-stage ranking: a retriever proposes each user's top M unseen items of the whole catalogue.

An LLM ranker is deployed behind a retriever: a cheap model scores every item, the LLM reranks the top M. This module
holds that first stage and the full-catalogue metrics that judge the pair:

- `PopularityRetriever`, `ClassicRetriever` (SASRec, GRU4Rec or BPR from the `classic` extra) and `ScoreRetriever`
  (any callable that scores the catalogue for an example) give one score per catalogue item.
- `retrieve(retriever, log, examples, top_m)`: each example's top `top_m` items the user has not interacted with
  before the target, best first, with the retriever's scores. The target may be missing: that is a retriever miss.
- `retriever_negatives(retriever, log, examples, num_negatives, top_m)`: training negatives for the two-stage regime,
  drawn from the wrong items among each example's top `top_m` (the items a reranker behind this retriever faces).
- `full_catalogue_metrics(rankings, targets, k=10)`: Recall@k, NDCG@k and MRR over all unseen items, given each
  user's final ranked list (the retriever's own order, or the reranker's order of the same items). A target outside
  the list counts as a miss, so reranking M items can never recall more than the retriever did at M.

The retrievers learn only from the interactions before each held-out target (`dmpo_trl.classic.training_sequences`),
as the `popular` and classic baselines do.

Example:
```python
>>> from dmpo_trl.data import InteractionLog, UserExample
>>> log = InteractionLog({"u1": ["a", "b", "c"], "u2": ["a", "c"], "u3": ["a", "d"]}, {i: i for i in "abcd"})
>>> example = UserExample("u1", ("a", "b"), "c", extra={"position": 2})
>>> retrieved = retrieve(PopularityRetriever(), log, [example], top_m=2)
>>> retrieved[0].items  # "a" and "b" were seen; "c" and "d" each counted once outside u1's target
['c', 'd']
>>> full_catalogue_metrics([r.items for r in retrieved], [example.target], k=1)["recall@1"]
1.0
```
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .classic import CLASSIC_BASELINES, ClassicRecommender, training_sequences
from .data import InteractionLog, UserExample
from .metrics import tie_seed


RETRIEVERS = ("popular", *CLASSIC_BASELINES)


class Retriever:
    """Scores every catalogue item for a held-out example. `fit` sees the log and the held-out examples (so it can
    leave their targets out); `scores` returns one float per item of `items`, higher = more likely next."""

    name = "retriever"

    def fit(self, log: InteractionLog, held_out: Sequence[UserExample]) -> Retriever:
        return self

    def scores(self, example: UserExample, items: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class PopularityRetriever(Retriever):
    """The most-interacted items first, counted on the interactions before each held-out target.

    Example:
    ```python
    >>> from dmpo_trl.data import InteractionLog, UserExample
    >>> log = InteractionLog({"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["b"]}, {i: i for i in "ab"})
    >>> PopularityRetriever().fit(log, [UserExample("u1", ("a",), "b")]).scores(None, ["a", "b"]).tolist()
    [2.0, 2.0]
    ```
    """

    name = "popular"

    def fit(self, log: InteractionLog, held_out: Sequence[UserExample]) -> PopularityRetriever:
        self.counts = Counter(item for seq in training_sequences(log, held_out).values() for item in seq)
        return self

    def scores(self, example: UserExample, items: Sequence[str]) -> np.ndarray:
        return np.array([float(self.counts.get(i, 0)) for i in items])


class ClassicRetriever(Retriever):
    """Cornac's SASRec, GRU4Rec or BPR (`dmpo_trl.classic.ClassicRecommender`) scoring the whole catalogue; items it
    never saw in training score below every item it knows. Needs the `classic` extra."""

    def __init__(self, name: str = "sasrec", seed: int = 0, **settings: Any):
        self.name = name
        self.model = ClassicRecommender(name, seed=seed, **settings)

    def fit(self, log: InteractionLog, held_out: Sequence[UserExample]) -> ClassicRetriever:
        self.model.fit(training_sequences(log, held_out))
        return self

    def scores(self, example: UserExample, items: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.score(example.user, list(items)), dtype=np.float64)


class ScoreRetriever(Retriever):
    """Any scorer: `score(example, items)` returns one score per item (a sequence or a `{item: score}` mapping;
    items missing from a mapping score below every scored item).

    Example:
    ```python
    >>> ScoreRetriever(lambda example, items: {"b": 1.0}).scores(None, ["a", "b"]).tolist()
    [-inf, 1.0]
    ```
    """

    def __init__(self, score: Callable[[UserExample, Sequence[str]], Any], name: str = "custom"):
        self.score, self.name = score, name

    def scores(self, example: UserExample, items: Sequence[str]) -> np.ndarray:
        values = self.score(example, items)
        if isinstance(values, Mapping):
            return np.array([float(values.get(i, -np.inf)) for i in items])
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(items):
            raise ValueError(f"the retriever {self.name!r} returned {values.shape[0]} scores for {len(items)} items")
        return values


def make_retriever(name: str | Retriever | Callable, seed: int = 0, **settings: Any) -> Retriever:
    """A retriever from a name in `RETRIEVERS`, a `Retriever`, or a scoring callable (`ScoreRetriever`)."""
    if isinstance(name, Retriever):
        return name
    if callable(name):
        return ScoreRetriever(name)
    if name == "popular":
        return PopularityRetriever()
    if name in CLASSIC_BASELINES:
        return ClassicRetriever(name, seed=seed, **settings)
    raise ValueError(f"Unknown retriever {name!r}; choose from {RETRIEVERS} or pass a callable")


@dataclass
class Retrieved:
    """One example's retrieved items, best first, with the retriever's scores (same order)."""

    example: UserExample
    items: list[str]
    scores: list[float]

    @property
    def hit(self) -> bool:
        """Whether the target is among the retrieved items."""
        return self.example.target in self.items


def best_first(scores: Sequence[float], seed: str) -> list[int]:
    """Indices of `scores` from highest to lowest, equal scores in a random order seeded by `seed` (a string).

    Example:
    ```python
    >>> best_first([0.1, 0.9, 0.5], "s")
    [1, 2, 0]
    ```
    """
    scores = np.asarray(scores, dtype=np.float64)
    tie_break = np.random.default_rng(random.Random(seed).getrandbits(64)).random(scores.shape[0])
    return np.lexsort((tie_break, -scores)).tolist()


def seen_items(log: InteractionLog, example: UserExample) -> set[str]:
    """The items `example`'s user interacted with before its target (they are never proposed)."""
    sequence = log.sequences[example.user]
    position = example.extra.get("position")
    if position is None:
        position = len(sequence) - 1 - sequence[::-1].index(example.target)
    return set(sequence[:position]) | set(example.history)


def retrieve(
    retriever: str | Retriever | Callable,
    log: InteractionLog,
    examples: Sequence[UserExample],
    top_m: int = 20,
    seed: int = 0,
    fit: bool = True,
) -> list[Retrieved]:
    """Each example's top `top_m` catalogue items the user has not seen, by the retriever's scores (ties broken by
    the library's seeded tie rule, as in ranking). `fit=False` uses a retriever already fitted."""
    if top_m < 1:
        raise ValueError(f"top_m must be at least 1, got {top_m}")
    retriever = make_retriever(retriever, seed=seed)
    if fit:
        retriever.fit(log, examples)
    catalogue = sorted(log.titles)
    out = []
    for example in examples:
        seen = seen_items(log, example)
        items = [i for i in catalogue if i not in seen]
        scores = retriever.scores(example, items)
        order = best_first(scores, tie_seed(seed, example.user, example.target))[:top_m]
        out.append(Retrieved(example, [items[k] for k in order], [float(scores[k]) for k in order]))
    return out


def retriever_negatives(
    retriever: str | Retriever | Callable,
    log: InteractionLog,
    examples: Sequence[UserExample],
    num_negatives: int,
    top_m: int = 20,
    seed: int = 0,
    fit: bool = True,
) -> list[list[str]]:
    """Each example's `num_negatives` training negatives: drawn (seeded per example) from the wrong items among the
    retriever's top `top_m` unseen items, the ones a reranker behind this retriever has to rank below the target.
    Items the user touched anywhere in the log and the target are never drawn. `fit=True` fits the retriever without
    the examples' targets (pass a retriever fitted with `fit=False` to hold out more users, e.g. the test users).

    Example:
    ```python
    >>> from dmpo_trl.data import InteractionLog, UserExample
    >>> log = InteractionLog({"u1": ["a", "b"], "u2": ["c", "d", "b"], "u3": ["c", "d"], "u4": ["c"]},
    ...                      {i: i for i in "abcde"})
    >>> sorted(retriever_negatives("popular", log, [UserExample("u1", ("a",), "b")], num_negatives=2, top_m=3)[0])
    ['c', 'd']
    ```
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if top_m <= num_negatives:
        raise ValueError(f"top_m={top_m} must exceed num_negatives={num_negatives}: the target may be among them")
    extra = max((len(log.sequences.get(e.user, ())) for e in examples), default=0)  # items after a target
    found = retrieve(retriever, log, examples, top_m + extra, seed=seed, fit=fit)
    out = []
    for index, retrieved in enumerate(found):
        example = retrieved.example
        touched = set(log.sequences.get(example.user, ())) | {example.target}
        top = retrieved.items[:top_m]
        pool = [item for item in top if item not in touched]
        if len(pool) < num_negatives:
            raise ValueError(
                f"examples[{index}] (user {example.user!r}): {len(pool)} wrong items among the retriever's top "
                f"{top_m}, fewer than num_negatives={num_negatives}; raise top_m"
            )
        rng = random.Random(f"dmpo-trl-retriever-negatives|{seed}|{example.user}|{example.target}")
        out.append(rng.sample(pool, num_negatives))
    return out


def rerank(retrieved: Retrieved, scores: Sequence[float], seed: int = 0) -> list[str]:
    """`retrieved.items` reordered by `scores` (one per item, higher first; ties by the seeded tie rule)."""
    if len(scores) != len(retrieved.items):
        raise ValueError(f"{len(scores)} scores for {len(retrieved.items)} retrieved items")
    order = best_first(scores, tie_seed(seed, retrieved.example.user, retrieved.example.target))
    return [retrieved.items[k] for k in order]


def full_catalogue_metrics(rankings: Sequence[Sequence[str]], targets: Sequence[str], k: int = 10) -> dict[str, Any]:
    """Recall@k, NDCG@k and MRR of each user's final ranked list against their target, plus Recall@M (M = the list
    length, the retriever's recall); a target outside the list is a miss (0 in every metric).

    Example:
    ```python
    >>> metrics = full_catalogue_metrics([["a", "b"], ["c", "d"]], ["b", "x"], k=1)
    >>> metrics["recall@1"], metrics["mrr"], metrics["recall@2"]
    (0.0, 0.25, 0.5)
    ```
    """
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings but {len(targets)} targets")
    ranks = [list(r).index(t) if t in r else None for r, t in zip(rankings, targets)]
    size = max((len(r) for r in rankings), default=0)
    hit_k = np.array([r is not None and r < k for r in ranks], dtype=np.float64)
    dcg = np.array([1.0 / np.log2(r + 2) if r is not None and r < k else 0.0 for r in ranks])
    reciprocal = np.array([1.0 / (r + 1) if r is not None else 0.0 for r in ranks])
    found = np.array([r is not None for r in ranks], dtype=np.float64)
    return {
        f"recall@{k}": float(hit_k.mean()) if ranks else float("nan"),
        f"ndcg@{k}": float(dcg.mean()) if ranks else float("nan"),
        "mrr": float(reciprocal.mean()) if ranks else float("nan"),
        f"recall@{size}": float(found.mean()) if ranks else float("nan"),
        "num_users": len(ranks),
        "per_user": {f"ndcg@{k}": dcg.tolist(), "reciprocal_rank": reciprocal.tolist(), "retrieved": found.tolist()},
    }
