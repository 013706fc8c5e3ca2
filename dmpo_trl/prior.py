"""A popularity prior on a model's ranking, its weight chosen on validation users.

`evaluate_ranking(..., popularity_prior=w)` ranks by log-likelihood + `w * log(1 + count)`
(`dmpo_trl.evaluation.with_popularity_prior`). The per-user scores of a likelihood result are enough to apply any
weight afterwards (`result_with_prior`), so choosing the weight costs one ranking pass of the validation users per
candidate regime: `choose_popularity_prior` tries `PRIOR_WEIGHTS` on those results and keeps the weight with the best
mean NDCG@5, the rule the quality study chose `w` by (`benchmarks/quality_prior.py`). `dmpo-trl train` runs this
on its validation users (`--num_valid_users`) unless `--popularity_prior` gives the weight, and saves the weight in
`ranker.json`.

Example:
```python
>>> from dmpo_trl.data import InteractionLog, UserExample
>>> log = InteractionLog({"u": ["a", "b"], "v": ["a", "c"], "w": ["a", "c"]}, {i: i.upper() for i in "abc"})
>>> examples = [UserExample("u", ("a",), "b")]
>>> result = {"settings": {"seed": 0}, "per_user": [
...     {"user": "u", "target": "b", "candidates": ["b", "c"], "target_index": 0, "scores": [-1.0, -1.5]}]}
>>> result_with_prior(result, log, examples, 1.0)["per_user"][0]["rank"]  # c's two interactions win
1
>>> choose_popularity_prior([result], log, examples)[0]  # no weight beats the model alone here
0.0
```
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .data import InteractionLog, UserExample
from .evaluation import baseline_popularity, per_user_ranking_metrics, tie_seed, with_popularity_prior
from .metrics import ndcg, rank_of_target


__all__ = ["PRIOR_REGIMES", "PRIOR_WEIGHTS", "choose_popularity_prior", "result_with_prior"]

PRIOR_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
"""The weights `choose_popularity_prior` tries (the quality study's grid)."""
PRIOR_REGIMES = ("uniform", "popularity_matched")
"""The candidate regimes the validation users are ranked under: a weight must help where popularity does not."""


def result_with_prior(
    result: dict[str, Any],
    log: InteractionLog,
    examples: Sequence[UserExample],
    weight: float,
    popularity: Counter | None = None,
) -> dict[str, Any]:
    """A copy of the likelihood `result` of `examples` (from `evaluate_ranking` without a prior) ranked with the prior
    at `weight`: its ranks and metrics are those `evaluate_ranking(..., popularity_prior=weight)` returns, its
    per-user scores carry the prior. The counts are `popularity`, or else `baseline_popularity(log, examples)`."""
    if weight < 0:
        raise ValueError(f"weight={weight}: the prior's weight is >= 0")
    _check(result, examples)
    counts = baseline_popularity(log, examples) if popularity is None else popularity
    out = copy.deepcopy(result)
    for row, (scores, rank) in zip(out["per_user"], _ranked_with_prior(result, examples, weight, counts)):
        row["scores"], row["rank"] = scores, rank
    out["metrics"] = per_user_ranking_metrics(out["per_user"], seed=result["settings"]["seed"])
    out["settings"] = {**out["settings"], **({"popularity_prior": weight} if weight else {})}
    return out


def choose_popularity_prior(
    results: Sequence[dict[str, Any]],
    log: InteractionLog,
    examples: Sequence[UserExample],
    weights: Sequence[float] = PRIOR_WEIGHTS,
) -> tuple[float, dict[float, float]]:
    """The weight of `weights` whose prior gives the best NDCG@5, averaged over `results` (likelihood results of
    the same validation `examples`, ranked without a prior, e.g. one per candidate regime of `PRIOR_REGIMES`); the
    first best wins a tie. Returns the weight and the criterion at every weight."""
    if not results or not weights:
        raise ValueError("choose_popularity_prior needs at least one result and one weight")
    for result in results:
        _check(result, examples)
    counts = baseline_popularity(log, examples)
    curve = {}
    for weight in weights:
        ranks = [[rank for _, rank in _ranked_with_prior(result, examples, weight, counts)] for result in results]
        curve[float(weight)] = sum(ndcg(r, 5) for r in ranks) / len(ranks)
    return max(curve, key=curve.get), curve  # max keeps the first of equal weights


def _check(result: dict[str, Any], examples: Sequence[UserExample]) -> None:
    if result.get("settings", {}).get("popularity_prior"):
        raise ValueError("result_with_prior takes a result ranked without a prior")
    per_user = result["per_user"]
    if len(per_user) != len(examples) or any(
        row["user"] != e.user or row["target"] != e.target for row, e in zip(per_user, examples)
    ):
        raise ValueError("result_with_prior: the result ranked other users than `examples`, or in another order")


def _ranked_with_prior(
    result: dict[str, Any], examples: Sequence[UserExample], weight: float, counts: Mapping[str, int]
) -> list[tuple[list[float], int]]:
    """Each user's scores with the prior and the target's rank under them (ties broken as the evaluator does)."""
    seed = result["settings"]["seed"]
    out = []
    for row, example in zip(result["per_user"], examples):
        scores = with_popularity_prior(row["scores"], row["candidates"], counts, weight)
        out.append((scores, rank_of_target(scores, row["target_index"], ties="random", seed=tie_seed(seed, example))))
    return out
