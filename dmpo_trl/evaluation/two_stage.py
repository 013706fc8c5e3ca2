"""Two-stage ranking's pure part: fuse the LLM's and the retriever's scores, score the final rankings.

A retriever proposes each user's top M unseen items of the whole catalogue, the LLM reranks them.

This is how an LLM ranker is deployed, and the measure that goes with it is full-catalogue: Recall@10, NDCG@10 and
MRR over every item the user has not seen, a target the retriever missed counted as a miss
(`dmpo_trl.retrieval.full_catalogue_metrics`). Reranking permutes the retrieved items, so the two-stage Recall@M is
the retriever's; what the LLM can change is the order within them.

- `two_stage_result(retrieved, llm_result)`: the two-stage ranking of each user's retrieved items by the LLM's
  scores, scored beside the retriever's own order. `evaluate_two_stage` and `evaluate_ranking(..., retriever=...)`
  (`dmpo_trl.evaluation.evaluate`) run the model to get those scores.
- Fusion: `fusion_weight > 0` ranks by the LLM's log-likelihood plus `fusion_weight` times the retriever's score,
  standardised within each user's list (`fused_scores`); `choose_fusion_weight` picks the weight from
  `FUSION_WEIGHTS` by mean NDCG@10 on validation users, the rule the popularity prior's weight is chosen by.

Example:
```python
>>> from dmpo_trl.data import InteractionLog, UserExample
>>> from dmpo_trl.retrieval import Retrieved
>>> retrieved = [Retrieved(UserExample("u", ("a",), "c"), ["b", "c"], [2.0, 1.0])]
>>> llm = {"per_user": [{"user": "u", "candidates": ["b", "c"], "scores": [-3.0, -1.0]}]}
>>> two_stage_result(retrieved, llm, k=1)["metrics"]["full_catalogue"]["recall@1"]  # the LLM moves c up
1.0
>>> two_stage_result(retrieved, llm, fusion_weight=10.0, k=1)["metrics"]["full_catalogue"]["recall@1"]
0.0
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cold_start import HISTORY_GROUPS, history_group, history_length
from ..metrics import tie_seed
from ..retrieval import Retrieved, best_first, full_catalogue_metrics


__all__ = ["FUSION_WEIGHTS", "choose_fusion_weight", "fused_scores", "two_stage_result"]

FUSION_WEIGHTS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0)
"""The weights `choose_fusion_weight` tries on the retriever's standardised score (100: the retriever's order, the
LLM breaking its ties)."""


def fused_scores(llm_scores: Sequence[float], retriever_scores: Sequence[float], weight: float) -> np.ndarray:
    """`llm_scores + weight * z`, z the retriever's scores standardised within the list (mean 0, standard deviation
    1; an item the retriever scored `-inf` gets the lowest finite z minus 1).

    Example:
    ```python
    >>> fused_scores([-2.0, -1.0], [3.0, 1.0], 1.0).tolist()
    [-1.0, -2.0]
    ```
    """
    llm = np.asarray(llm_scores, dtype=np.float64)
    if weight == 0:
        return llm
    raw = np.asarray(retriever_scores, dtype=np.float64)
    finite = np.isfinite(raw)
    z = np.zeros_like(raw)
    if finite.any():
        values = raw[finite]
        spread = values.std() or 1.0
        z[finite] = (values - values.mean()) / spread
        z[~finite] = z[finite].min() - 1.0
    return llm + weight * z


def two_stage_result(
    retrieved: Sequence[Retrieved],
    llm_result: dict[str, Any],
    fusion_weight: float = 0.0,
    k: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """The two-stage ranking of each user's `retrieved` items by the LLM's per-user scores in `llm_result` (a
    likelihood result of the users whose list holds the target, on those lists), fused with the retriever's scores
    at `fusion_weight`; its full-catalogue metrics under `metrics["full_catalogue"]`, the retriever alone's under
    `retriever["full_catalogue"]`."""
    by_user = {row["user"]: row for row in llm_result["per_user"]}
    rankings, per_user = [], []
    for item in retrieved:
        row = by_user.get(item.example.user)
        if row is None:
            if item.hit:
                raise ValueError(f"user {item.example.user!r}: the target was retrieved but the LLM ranked no list")
            order = list(item.items)  # a miss whatever the order
        else:
            if list(row["candidates"]) != list(item.items):
                raise ValueError(f"user {item.example.user!r}: the LLM ranked another list than the retrieved one")
            scores = fused_scores(row["scores"], item.scores, fusion_weight)
            order = [item.items[i] for i in best_first(scores, tie_seed(seed, item.example.user, item.example.target))]
        rankings.append(order)
        length = history_length(item.example)
        per_user.append(
            {"user": item.example.user, "target": item.example.target, "history_length": length, "ranking": order}
        )
    targets = [item.example.target for item in retrieved]
    lengths = [history_length(item.example) for item in retrieved]
    metrics = _with_breakdown(rankings, targets, lengths, k)
    alone = _with_breakdown([item.items for item in retrieved], targets, lengths, k)
    return {
        "metrics": {"full_catalogue": metrics},
        "retriever": {"full_catalogue": alone},
        "settings": {"fusion_weight": fusion_weight, "k": k, "seed": seed},
        "per_user": per_user,
    }


def _with_breakdown(
    rankings: Sequence[Sequence[str]], targets: Sequence[str], lengths: Sequence[int], k: int
) -> dict[str, Any]:
    """`full_catalogue_metrics` of all users, with `by_history_length`: the same metrics (less the per-user values)
    of the users in each group of `HISTORY_GROUPS` that has any, `num_users` first."""
    metrics = full_catalogue_metrics(rankings, targets, k)
    by_length: dict[str, dict[str, Any]] = {}
    for low, _ in HISTORY_GROUPS:
        label = history_group(low)
        chosen = [u for u, n in enumerate(lengths) if n >= 1 and history_group(n) == label]
        if chosen:
            group = full_catalogue_metrics([rankings[u] for u in chosen], [targets[u] for u in chosen], k)
            by_length[label] = {"num_users": group.pop("num_users")}
            by_length[label].update({key: value for key, value in group.items() if key != "per_user"})
    metrics["by_history_length"] = by_length
    return metrics


def choose_fusion_weight(
    retrieved: Sequence[Retrieved],
    llm_result: dict[str, Any],
    weights: Sequence[float] = FUSION_WEIGHTS,
    k: int = 10,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The weight of `weights` with the best mean NDCG@k of the two-stage ranking on these (validation) users; the
    first best wins a tie. Returns the weight and the criterion at every weight."""
    if not weights:
        raise ValueError("choose_fusion_weight needs at least one weight")
    curve = {
        float(w): two_stage_result(retrieved, llm_result, w, k, seed)["metrics"]["full_catalogue"][f"ndcg@{k}"]
        for w in weights
    }
    return max(curve, key=curve.get), curve
