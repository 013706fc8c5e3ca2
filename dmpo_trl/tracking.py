"""Weights & Biases logging of ranking results: metrics and a table of example recommendations.

The trainer's own metrics go to wandb through transformers' `WandbCallback` (`report_to=["wandb"]`); this module adds
what the trainer cannot see: HitRatio/NDCG before and after training, and a `wandb.Table` with, per user, the history,
the candidates, the model's pick and the truth. wandb is imported only inside `log_ranking_to_wandb`, so nothing about
it is needed when it is not used. Offline runs (`WANDB_MODE=offline`) write everything under `$WANDB_DIR/wandb/`.

Example:
```python
>>> from dmpo_trl.tracking import wandb_requested
>>> wandb_requested(["tensorboard", "wandb"]), wandb_requested("none"), wandb_requested([])
(True, False, False)
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .data import InteractionLog, UserExample


__all__ = ["TABLE_COLUMNS", "log_ranking_to_wandb", "metric_key", "recommendation_rows", "wandb_requested"]

TABLE_COLUMNS = ["model", "user", "history", "candidates", "pick", "truth", "hit", "truth_rank"]


def wandb_requested(report_to: str | Sequence[str] | None) -> bool:
    """Whether a `report_to` setting (a name, a list of names, "all" or "none") includes wandb.

    Example:
    ```python
    >>> wandb_requested("all"), wandb_requested("wandb"), wandb_requested(None)
    (True, True, False)
    ```
    """
    if report_to is None:
        return False
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return "wandb" in names or "all" in names


def metric_key(name: str, metric: str) -> str:
    """The wandb key of one ranking metric of one model: `ranking/<name>/<metric>`, the name made key-safe.

    Example:
    ```python
    >>> metric_key("baseline:popular", "hit_ratio@1"), metric_key("dmpo (lora)", "ndcg@5")
    ('ranking/baseline_popular/hit_ratio@1', 'ranking/dmpo_lora/ndcg@5')
    ```
    """
    return f"ranking/{re.sub(r'[^0-9A-Za-z_.-]+', '_', name).strip('_')}/{metric}"


def _pick(entry: Mapping[str, Any]) -> int | None:
    """The candidate index the model recommends: the best score (likelihood mode) or the first one named."""
    if "scores" in entry:
        scores = entry["scores"]
        return max(range(len(scores)), key=scores.__getitem__) if scores else None
    named = entry.get("named")
    return named[0] if named else None


def recommendation_rows(
    name: str,
    result: Mapping[str, Any],
    log: InteractionLog,
    examples: Sequence[UserExample],
    max_rows: int = 16,
) -> list[list[Any]]:
    """Rows for the examples table (`TABLE_COLUMNS`) from an `evaluate_ranking` / `evaluate_baseline` result.

    `examples` are the evaluated users (for their histories); titles come from `log`. `pick` is the top-scored
    candidate (likelihood mode) or the first candidate the generated answer names (generation mode; "" when it
    names none). AUC results have no single pick and give no rows.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"]}, {"a": "Heat", "b": "Babe", "c": "Fargo", "d": "Casino"})
    >>> result = {"per_user": [{"user": "u", "target": "c", "candidates": ["d", "c"], "target_index": 1,
    ...                         "rank": 0, "scores": [-3.0, -1.0]}]}
    >>> recommendation_rows("dmpo", result, log, [UserExample("u", ("a", "b"), "c")])
    [['dmpo', 'u', 'Heat | Babe', 'Casino | Fargo', 'Fargo', 'Fargo', True, 1]]
    ```
    """
    histories = {(e.user, e.target): e.history for e in examples}
    rows = []
    for entry in result.get("per_user", [])[:max_rows]:
        if "scores" not in entry and "named" not in entry:
            continue
        pick = _pick(entry)
        history = histories.get((entry["user"], entry["target"]), ())
        rank = entry.get("rank")
        rows.append(
            [
                name,
                str(entry["user"]),
                " | ".join(log.titles[i] for i in history),
                " | ".join(log.titles[i] for i in entry["candidates"]),
                log.titles[entry["candidates"][pick]] if pick is not None else "",
                log.titles[entry["target"]],
                pick == entry["target_index"],
                rank + 1 if rank is not None else None,
            ]
        )
    return rows


def log_ranking_to_wandb(
    results: Mapping[str, Mapping[str, Any]],
    log: InteractionLog,
    examples: Sequence[UserExample],
    max_rows: int = 16,
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    finish: bool = False,
) -> str | None:
    """Log ranking results to the active wandb run (started by the trainer), or to a new one.

    Each scalar metric of each named result goes to `ranking/<name>/<metric>`, both as a logged value and in the
    run summary; the table `ranking/examples` holds up to `max_rows` users per result (`recommendation_rows`). A new
    run, when none is active, goes to project `$WANDB_PROJECT` (default "dmpo-trl"). `finish=True` closes the run,
    which writes the summary (offline: `<run dir>/files/wandb-summary.json`). Returns the run's directory.

    Example:
    ```python
    >>> import os; os.environ["WANDB_MODE"] = "offline"  # doctest: +SKIP
    >>> log_ranking_to_wandb({"zero-shot": before, "dmpo": after}, log, split.test, finish=True)  # doctest: +SKIP
    '.../wandb/offline-run-20250101_000000-abcd1234/files'
    ```
    """
    import wandb  # only when results go to wandb: importing it starts its machinery

    run = wandb.run
    if run is None:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dmpo-trl"), name=run_name, config=dict(config or {}))
    elif config:
        run.config.update(dict(config), allow_val_change=True)
    metrics = {
        metric_key(name, key): value
        for name, result in results.items()
        for key, value in result["metrics"].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    table = wandb.Table(columns=TABLE_COLUMNS)
    for name, result in results.items():
        for row in recommendation_rows(name, result, log, examples, max_rows):
            table.add_data(*row)
    run.log({**metrics, "ranking/examples": table})
    run.summary.update(metrics)
    directory = run.dir
    if finish:
        run.finish()
    return directory
