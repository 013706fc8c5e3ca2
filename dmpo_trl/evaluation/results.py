"""Evaluation results: the ranking metrics, the result dict every evaluation returns, and writing it.

A result is `{"metrics", "settings", "users", "provenance", "per_user", "wall_time_s"}` (`_finish`), written as
indented JSON by `save_result`; `progress_path` is the journal beside it that lets a killed evaluation continue.
Each per-user record carries the user's `history_length` (interactions before the target,
`dmpo_trl.cold_start.history_length`), and `metrics["by_history_length"]` the metrics per group of
`dmpo_trl.cold_start.HISTORY_GROUPS` that has users (`format_history_breakdown` prints them).

Example:
```python
>>> ranking_metrics([0, 1])["hit_ratio@1"]
0.5
```
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cold_start import history_breakdown, history_length
from ..data import InteractionLog, UserExample
from ..journal import atomic_write_text
from ..metrics import bootstrap_interval, hit_ratio, hits_at_k, mrr, ndcg, ndcg_at_k, rank_of_target
from ..metrics import tie_seed as metrics_tie_seed
from ..provenance import provenance
from ..version import __version__
from .candidates import RankingPrompt


__all__ = [
    "check_result_path",
    "format_history_breakdown",
    "format_table",
    "per_user_ranking_metrics",
    "progress_path",
    "ranking_metrics",
    "save_result",
    "tie_seed",
]


def ranking_metrics(ranks: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """hit_ratio@1/@5/@10, ndcg@5/@10, mrr and 95% bootstrap intervals for hit_ratio@1 and ndcg@5.

    Example:
    ```python
    >>> ranking_metrics([0, 2, 7])["ndcg@5"]
    0.5
    ```
    """
    return {
        "hit_ratio@1": hit_ratio(ranks, 1),
        "hit_ratio@5": hit_ratio(ranks, 5),
        "hit_ratio@10": hit_ratio(ranks, 10),
        "ndcg@5": ndcg(ranks, 5),
        "ndcg@10": ndcg(ranks, 10),
        "mrr": mrr(ranks),
        "hit_ratio@1_ci95": list(bootstrap_interval(hits_at_k(ranks, 1), seed=seed)),
        "ndcg@5_ci95": list(bootstrap_interval(ndcg_at_k(ranks, 5), seed=seed)),
        "num_users": len(ranks),
    }


def tie_seed(seed: int, example: UserExample) -> str:
    """The seed that breaks a tie between `example`'s candidates (`dmpo_trl.metrics.tie_seed`)."""
    return metrics_tie_seed(seed, example.user, example.target)


def _user_record(item: RankingPrompt, **values: Any) -> dict[str, Any]:
    """One user's entry in a result's `per_user`: who, the target, the candidates and where the target is, the
    number of interactions before the target, then what the mode measured (`values`, in order)."""
    return {
        "user": item.example.user,
        "target": item.example.target,
        "candidates": item.candidates,
        "target_index": item.target_index,
        "history_length": history_length(item.example),
        **values,
    }


def _by_history_length(items: Sequence[RankingPrompt], values: dict[str, Sequence[float]]) -> dict[str, dict]:
    """`metrics["by_history_length"]`: the per-user `values` averaged per history-length group that has users."""
    return history_breakdown(values, [history_length(item.example) for item in items])


def _rank_result(items: Sequence[RankingPrompt], all_scores: Sequence[Sequence[float]], seed: int) -> dict:
    per_user, ranks = [], []
    for item, scores in zip(items, all_scores):
        rank = rank_of_target(scores, item.target_index, ties="random", seed=tie_seed(seed, item.example))
        ranks.append(rank)
        per_user.append(_user_record(item, rank=rank, scores=[float(s) for s in scores]))
    return {"metrics": per_user_ranking_metrics(per_user, seed=seed), "per_user": per_user}


def per_user_ranking_metrics(per_user: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """`ranking_metrics` of the per-user records' `rank`s, plus `by_history_length` (hit_ratio@1 and ndcg@5 per
    history-length group that has users) when every record has its `history_length`.

    Example:
    ```python
    >>> records = [{"rank": r, "history_length": n} for r, n in [(0, 1), (3, 2), (0, 7)]]
    >>> row = per_user_ranking_metrics(records)["by_history_length"]["1-2"]
    >>> row["num_users"], row["hit_ratio@1"], round(row["ndcg@5"], 3)
    (2, 0.5, 0.715)
    ```
    """
    ranks = [row["rank"] for row in per_user]
    metrics = ranking_metrics(ranks, seed=seed)
    if all("history_length" in row for row in per_user):
        by_length = {"hit_ratio@1": hits_at_k(ranks, 1), "ndcg@5": ndcg_at_k(ranks, 5)}
        metrics["by_history_length"] = history_breakdown(by_length, [row["history_length"] for row in per_user])
    return metrics


def _settings(log: InteractionLog, examples: Sequence[UserExample], **settings) -> dict[str, Any]:
    return {"dataset": log.name, "num_users": len(examples), **settings, "dmpo_trl_version": __version__}


def _finish(result: dict, settings: dict, started: float, output: str | Path | None, model=None) -> dict:
    result = {
        "metrics": result["metrics"],
        "settings": settings,
        "users": [user["user"] for user in result["per_user"]],
        "provenance": provenance(model),
        **{k: v for k, v in result.items() if k != "metrics"},
    }
    result["wall_time_s"] = round(time.perf_counter() - started, 3)
    if output is not None:
        save_result(result, output)
    return result


def save_result(result: dict, path: str | Path) -> Path:
    """Write a result dict as indented JSON, atomically (creating parent folders); returns the path.

    A result without a "provenance" entry gets one (`dmpo_trl.provenance`: versions, commit, the model's origin as
    far as `settings["model"]` names it).

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> save_result({"metrics": {"mrr": 0.5}, "settings": {}}, pathlib.Path(tempfile.mkdtemp()) / "r.json").name
    'r.json'
    ```
    """
    if "provenance" not in result:
        model = (result.get("settings") or {}).get("model")
        named = isinstance(model, str) and not model.startswith("baseline:")
        result = {**result, "provenance": provenance(model if named else None)}
    check_result_path(path)
    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")


def check_result_path(path: str | Path | None) -> None:
    """`ValueError` naming `output` when a results path is a folder (checked before any ranking, not after).

    Example:
    ```python
    >>> try:
    ...     check_result_path(".")
    ... except ValueError as exc:
    ...     print(exc)
    output .: a folder; name the results file to write
    ```
    """
    if path is not None and Path(path).is_dir():
        raise ValueError(f"output {path}: a folder; name the results file to write")


def progress_path(output: str | Path, rank: int = 0, world: int = 1) -> Path:
    """The journal beside `output` where `evaluate_ranking` appends each user's result as it finishes.

    Example:
    ```python
    >>> progress_path("out/ranking.json").name, progress_path("out/ranking.json", 1, 2).name
    ('ranking.json.progress.jsonl', 'ranking.json.progress-1-of-2.jsonl')
    ```
    """
    output = Path(output)
    part = "" if world == 1 else f"-{rank}-of-{world}"
    return output.with_name(f"{output.name}.progress{part}.jsonl")


def _auc_result(items, all_wins, seed) -> dict:
    per_user, aucs = [], []
    for item, wins in zip(items, all_wins):
        auc = sum(wins) / len(wins)
        aucs.append(auc)
        per_user.append(_user_record(item, auc=auc, wins=wins))
    metrics = {
        "auc": sum(aucs) / len(aucs) if aucs else float("nan"),
        "auc_ci95": list(bootstrap_interval(aucs, seed=seed)),
        "num_users": len(items),
        "by_history_length": _by_history_length(items, {"auc": aucs}),
    }
    return {"metrics": metrics, "per_user": per_user}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per named result, one column per scalar metric.

    Example:
    ```python
    >>> print(format_table({"random": {"metrics": {"hit_ratio@1": 0.05, "mrr": 0.18}}}))
    model   hit_ratio@1  mrr
    random  0.0500       0.1800
    ```
    """
    columns: list[str] = []
    for result in results.values():
        for key, value in result["metrics"].items():
            if isinstance(value, float) and key not in columns:
                columns.append(key)
    names = list(results)
    width = max([len("model"), *(len(n) for n in names)])
    cells = [[f"{results[n]['metrics'].get(c, float('nan')):.4f}" for c in columns] for n in names]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(["model".ljust(width), *(c.ljust(w) for c, w in zip(columns, widths))]).rstrip()]
    for name, row in zip(names, cells):
        lines.append("  ".join([name.ljust(width), *(v.ljust(w) for v, w in zip(row, widths))]).rstrip())
    return "\n".join(lines)


def format_history_breakdown(metrics: dict[str, Any]) -> str:
    """A plain-text table of `metrics["by_history_length"]`: one row per history-length group, its users and metrics.

    Example:
    ```python
    >>> by_length = {"1-2": {"num_users": 3, "hit_ratio@1": 0.25, "ndcg@5": 0.5}}
    >>> print(format_history_breakdown({"by_history_length": by_length}))
    history before target  users  hit_ratio@1  ndcg@5
    1-2                    3      0.2500       0.5000
    ```
    """
    rows = metrics.get("by_history_length") or {}
    columns = list(dict.fromkeys(key for row in rows.values() for key in row if key != "num_users"))
    header = ["history before target", "users", *columns]
    cells = [
        [label, str(row["num_users"]), *(f"{row[c]:.4f}" if c in row else "-" for c in columns)]
        for label, row in rows.items()
    ]
    widths = [max([len(header[k]), *(len(line[k]) for line in cells)]) for k in range(len(header))]
    lines = [header, *cells]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
