"""Ranking metrics for one target among N candidates: HitRatio@k, NDCG@k, MRR, pairwise AUC, bootstrap intervals,
paired differences, and the seed that breaks ties (the same for the library and the benchmarks).

Every function is pure (no model, no global state). A *rank* is the 0-based position of the target once the candidates
are sorted by decreasing score: rank 0 means the target came first.

Example:
```python
>>> ranks = [0, 2, 7]
>>> hit_ratio(ranks, k=1), hit_ratio(ranks, k=5)
(0.3333333333333333, 0.6666666666666666)
>>> round(ndcg(ranks, k=5), 4)  # (1 + 1/log2(4) + 0) / 3
0.5
>>> round(mrr(ranks), 4)  # (1 + 1/3 + 1/8) / 3
0.4861
```
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np


def _as_ranks(ranks: Sequence[int]) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be a flat sequence of integers, got shape {ranks.shape}")
    if (ranks < 0).any():
        raise ValueError("ranks are 0-based and cannot be negative")
    return ranks


def hits_at_k(ranks: Sequence[int], k: int) -> np.ndarray:
    """Per-user hit (1.0 when the target is in the top `k`, else 0.0).

    Example:
    ```python
    >>> hits_at_k([0, 3, 5], k=5).tolist()
    [1.0, 1.0, 0.0]
    ```
    """
    return (_as_ranks(ranks) < k).astype(np.float64)


def ndcg_at_k(ranks: Sequence[int], k: int) -> np.ndarray:
    """Per-user NDCG@k for a single relevant item: `1 / log2(rank + 2)` when `rank < k`, else 0.

    With one relevant item the ideal DCG is 1, so NDCG equals DCG.

    Example:
    ```python
    >>> ndcg_at_k([0, 1, 5], k=5).round(4).tolist()
    [1.0, 0.6309, 0.0]
    ```
    """
    ranks = _as_ranks(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def reciprocal_ranks(ranks: Sequence[int]) -> np.ndarray:
    """Per-user reciprocal rank `1 / (rank + 1)`.

    Example:
    ```python
    >>> reciprocal_ranks([0, 1, 3]).tolist()
    [1.0, 0.5, 0.25]
    ```
    """
    return 1.0 / (_as_ranks(ranks) + 1.0)


def hit_ratio(ranks: Sequence[int], k: int) -> float:
    """HitRatio@k: the fraction of users whose target is in the top `k`.

    Example:
    ```python
    >>> hit_ratio([0, 1, 4, 9], k=2)
    0.5
    ```
    """
    return float(hits_at_k(ranks, k).mean()) if len(ranks) else float("nan")


def ndcg(ranks: Sequence[int], k: int) -> float:
    """Mean NDCG@k over users (binary relevance, one target per user).

    Example:
    ```python
    >>> ndcg([0, 0], k=5)
    1.0
    ```
    """
    return float(ndcg_at_k(ranks, k).mean()) if len(ranks) else float("nan")


def mrr(ranks: Sequence[int]) -> float:
    """Mean reciprocal rank over users (no cut-off).

    Example:
    ```python
    >>> mrr([0, 1])
    0.75
    ```
    """
    return float(reciprocal_ranks(ranks).mean()) if len(ranks) else float("nan")


def rank_of_target(scores: Sequence[float], target_index: int, ties: str = "random", seed: int | str = 0) -> int:
    """0-based rank of `scores[target_index]` among `scores` (higher score = better).

    `ties` says where the target goes among candidates with exactly its score: "pessimistic" (after all of them),
    "optimistic" (before all of them) or "random" (a uniformly random place, drawn with `seed`). "random" keeps a
    constant scorer at chance level instead of giving it a perfect or a null score.

    Example:
    ```python
    >>> rank_of_target([0.1, 0.9, 0.5], target_index=2)
    1
    >>> rank_of_target([1.0, 1.0, 1.0], target_index=0, ties="pessimistic")
    2
    >>> rank_of_target([1.0, 1.0, 1.0], target_index=0, ties="optimistic")
    0
    ```
    """
    scores = np.asarray(scores, dtype=np.float64)
    target = scores[target_index]
    better = int((scores > target).sum())
    tied = int((scores == target).sum()) - 1
    if ties == "pessimistic":
        return better + tied
    if ties == "optimistic":
        return better
    if ties == "random":
        return better + (random.Random(seed).randint(0, tied) if tied else 0)
    raise ValueError(f"ties must be 'random', 'pessimistic' or 'optimistic', got {ties!r}")


def pairwise_auc(target_score: float, negative_scores: Sequence[float]) -> float:
    """AUC of one user: the fraction of negatives the target outscores (a tie counts one half).

    Example:
    ```python
    >>> pairwise_auc(0.5, [0.1, 0.9, 0.5, 0.2])
    0.625
    ```
    """
    negatives = np.asarray(negative_scores, dtype=np.float64)
    if negatives.size == 0:
        raise ValueError("pairwise_auc needs at least one negative score")
    return float(((target_score > negatives).sum() + 0.5 * (target_score == negatives).sum()) / negatives.size)


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over per-user `values` (resampling users with replacement).

    Seeded: the same inputs give the same interval.

    Example:
    ```python
    >>> low, high = bootstrap_interval([0, 1] * 50, seed=0)
    >>> 0.35 < low < 0.5 < high < 0.65
    True
    ```
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, values.size, size=(num_resamples, values.size))
    if statistic is np.mean:
        stats = values[indices].mean(axis=1)
    else:
        stats = np.array([statistic(values[row]) for row in indices])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def tie_seed(seed: int, user: str, target: str) -> str:
    """The seed that breaks a tie between a user's candidates (`rank_of_target(..., ties="random", seed=...)`).

    Every ranking in the library and the benchmarks uses it, so the same scores give the same ranks everywhere.

    Example:
    ```python
    >>> tie_seed(0, "u1", "i7")
    'dmpo-trl-ties|0|u1|i7'
    ```
    """
    return f"dmpo-trl-ties|{seed}|{user}|{target}"


def interval(values: Sequence[float], num_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-user `values` and its 95% percentile bootstrap interval.

    Example:
    ```python
    >>> mean, low, high = interval([0, 1] * 50)
    >>> mean, low < mean < high
    (0.5, True)
    ```
    """
    values = np.asarray(values, dtype=np.float64)
    low, high = bootstrap_interval(values, seed=seed, num_resamples=num_resamples)
    return float(np.mean(values)) if values.size else float("nan"), low, high


def paired_difference(a: Sequence[float], b: Sequence[float], **kwargs) -> tuple[float, float, float]:
    """(mean, low, high) of the per-user difference `a - b` (same users, same candidates): a paired bootstrap.

    An interval that excludes 0 marks a win (low > 0) or a loss (high < 0).

    Example:
    ```python
    >>> mean, low, high = paired_difference([1, 1, 0, 1] * 25, [0, 1, 0, 0] * 25)
    >>> mean, low > 0
    (0.5, True)
    ```
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same users in both: shapes {a.shape} and {b.shape}")
    return interval(a - b, **kwargs)
