"""Baselines on the evaluation's candidate lists, and the popularity counts they and the popularity prior use.

"random" (seeded random scores), "popular" (interaction counts, `baseline_popularity`), and Cornac's "sasrec",
"gru4rec" and "bpr" (`dmpo_trl.classic`, the `classic` extra) rank the same candidates as `evaluate_ranking`.
`with_popularity_prior` adds `w * log(1 + count)` to a model's scores: the model and the popular baseline in one score.

Example:
```python
>>> log = InteractionLog({"u1": ["a", "b"], "u2": ["a", "c"]}, {i: i for i in "abc"})
>>> baseline_popularity(log, [UserExample("u1", ("a",), "b")])["a"]
2
```
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..classic import CLASSIC_BASELINES, score_examples  # Cornac, the `classic` extra, loads when a model trains
from ..data import InteractionLog, UserExample, candidate_sets
from .candidates import RankingPrompt, given_candidate_sets
from .results import _finish, _rank_result, _settings, check_result_path


__all__ = ["BASELINES", "baseline_popularity", "evaluate_baseline", "with_popularity_prior"]

BASELINES = ("random", "popular", *CLASSIC_BASELINES)  # = `recipe_cli.EVALUATION_BASELINES`
"""The baselines `evaluate_baseline` ranks with."""


def baseline_popularity(log: InteractionLog, examples: Sequence[UserExample]) -> Counter:
    """Item interaction counts for the "popular" baseline, with nothing from the evaluated targets.

    Counts every interaction in `log` except, for each evaluated example, its target and everything after it in
    that user's sequence (`example.extra["position"]` when set, else the target's last occurrence). So test targets
    never count, while the test users' histories, which the model sees in its prompt, do.

    Example:
    ```python
    >>> log = InteractionLog({"u1": ["a", "b"], "u2": ["a", "c"]}, {i: i for i in "abc"})
    >>> sorted(baseline_popularity(log, [UserExample("u1", ("a",), "b")]).items())
    [('a', 2), ('c', 1)]
    ```
    """
    cut = {}
    for example in examples:
        sequence = log.sequences[example.user]
        position = example.extra.get("position")
        if position is None:
            position = len(sequence) - 1 - sequence[::-1].index(example.target)
        cut[example.user] = min(cut.get(example.user, len(sequence)), position)
    return Counter(item for user, seq in log.sequences.items() for item in seq[: cut.get(user, len(seq))])


def with_popularity_prior(
    scores: Sequence[float], candidates: Sequence[str], popularity: Mapping[str, int], weight: float
) -> list[float]:
    """Each candidate's score plus `weight * log(1 + count)`: the model's likelihood times `(1 + count) ** weight`.

    `popularity` counts interactions per item (`baseline_popularity` leaves out the evaluated targets); an item it
    lacks counts 0. With `weight` 0 the scores are unchanged; a large weight ranks by popularity, the model breaking
    ties.

    Example:
    ```python
    >>> [round(s, 3) for s in with_popularity_prior([-5.0, -4.0], ["a", "b"], Counter(a=9), 1.0)]
    [-2.697, -4.0]
    ```
    """
    return [float(s) + weight * math.log1p(popularity.get(c, 0)) for s, c in zip(scores, candidates, strict=True)]


def evaluate_baseline(
    baseline: str,
    examples: Sequence[UserExample],
    log: InteractionLog,
    num_candidates: int = 20,
    seed: int = 0,
    negative_strategy: str = "uniform",
    popularity: Counter | None = None,
    output: str | Path | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Rank the same candidates as `evaluate_ranking` with a baseline: "random", "popular", "sasrec", "gru4rec", "bpr".

    "random" draws one uniform score per candidate, seeded by (seed, user, target). "popular" scores a candidate
    by its count in `popularity` (default: `baseline_popularity(log, examples)`, which leaves out the evaluated
    targets). Ties are broken at random (seeded), so equal counts do not favour the target. `popularity` is also what
    `candidate_sets` draws popularity-matched negatives from, as in `evaluate_ranking`: to rank a model's candidates,
    pass both the same `popularity` (or neither). "sasrec", "gru4rec" and "bpr" train Cornac's model on the log
    minus the evaluated targets, with `dmpo_trl.classic.DEFAULT_SETTINGS` (needs the `classic` extra).

    `candidates` (one list of item ids per example) replaces the drawn lists, as in `evaluate_ranking`.

    Returns `{"metrics": {...}, "settings": {...}, "users": [...], "per_user": [...], "wall_time_s": ...}`.

    Example:
    ```python
    >>> log = InteractionLog({f"u{k}": ["a", "b", "c"] for k in range(3)}, {i: i for i in "abcdefgh"})
    >>> result = evaluate_baseline("popular", [UserExample("u0", ("a", "b"), "c")], log, num_candidates=4)
    >>> result["metrics"]["hit_ratio@1"]  # "c" was chosen by the two other users
    1.0
    ```
    """
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose from {BASELINES}")
    check_result_path(output)
    started = time.perf_counter()
    if candidates is None:
        sets = candidate_sets(log, examples, num_candidates, seed, negative_strategy, popularity)
    else:
        sets = given_candidate_sets(log, examples, candidates)
    items = [RankingPrompt(e, c, t, "", []) for e, (c, t) in zip(examples, sets)]
    if baseline == "random":
        all_scores = []
        for item in items:
            rng = random.Random(f"dmpo-trl-random|{seed}|{item.example.user}|{item.example.target}")
            all_scores.append([rng.random() for _ in item.candidates])
    elif baseline != "popular":
        all_scores = score_examples(baseline, log, examples, [item.candidates for item in items], seed=seed)
    else:
        counts = baseline_popularity(log, examples) if popularity is None else popularity
        all_scores = [[float(counts.get(i, 0)) for i in item.candidates] for item in items]
    settings = _settings(
        log,
        examples,
        model=f"baseline:{baseline}",
        mode="likelihood",
        num_candidates=num_candidates,
        seed=seed,
        negative_strategy=negative_strategy,
        popularity=(
            "log minus evaluated targets and later items" if baseline == "popular" and popularity is None else None
        ),
    )
    return _finish(_rank_result(items, all_scores, seed), settings, started, output)
