"""Cold-start users: results broken down by how many interactions a test user had before the target.

An LLM knows titles before it sees any interaction, so where a user has only a handful of interactions is where it
should help most. This module draws test examples with short histories and breaks per-user results down by
history length:

- `history_length(example)`: the number of the user's interactions before the target (`extra["position"]`).
- `cold_start_examples(log, users, seed=...)`: one test example per user, the target drawn at an early position so
  that the users fill every group of `HISTORY_GROUPS` (1-2, 3-5, 6-10, more) about equally. Everything from the
  target on is held out as usual (`training_sequences`, `baseline_popularity` cut there).
- `breakdown(per_user, lengths)`: each method's mean and 95% bootstrap interval per group, and `format_breakdown`
  as a markdown table.
- `history_breakdown(values, lengths)`: one method's per-user metrics averaged per group, the
  `metrics["by_history_length"]` of every ranking result (`dmpo_trl.evaluation`).

Example:
```python
>>> from dmpo_trl.data import InteractionLog
>>> items = [f"i{j}" for j in range(15)]
>>> log = InteractionLog({f"u{k}": items for k in range(8)}, {i: i.upper() for i in items})
>>> examples = cold_start_examples(log, sorted(log.sequences), seed=0)
>>> sorted({history_group(history_length(e)) for e in examples})
['1-2', '11+', '3-5', '6-10']
```
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .data import InteractionLog, UserExample
from .data.splits import example_at
from .metrics import interval


HISTORY_GROUPS: tuple[tuple[int, int | None], ...] = ((1, 2), (3, 5), (6, 10), (11, None))


def history_group(length: int, groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS) -> str:
    """The label of the group a history of `length` items falls in ("1-2", "3-5", "6-10", "11+").

    Example:
    ```python
    >>> [history_group(n) for n in (1, 4, 10, 40)]
    ['1-2', '3-5', '6-10', '11+']
    ```
    """
    for low, high in groups:
        if length >= low and (high is None or length <= high):
            return f"{low}+" if high is None else f"{low}-{high}"
    raise ValueError(f"a history of {length} items is in none of the groups {groups}")


def _group_or_none(length: int, groups: Sequence[tuple[int, int | None]]) -> str | None:
    """`history_group(length, groups)`, or None where `length` is in none of the groups."""
    try:
        return history_group(length, groups)
    except ValueError:
        return None


def history_length(example: UserExample) -> int:
    """How many interactions the user had before the target: `extra["position"]`, else the shown history's length."""
    return int(example.extra.get("position", len(example.history)))


def cold_start_examples(
    log: InteractionLog,
    users: Sequence[str],
    seed: int = 0,
    max_history: int = 10,
    groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS,
) -> list[UserExample]:
    """One example per user with the target at an early position: users are dealt round-robin (in a seeded order)
    to `groups`, and each gets a position drawn in its group's range (capped by the user's sequence). A user whose
    sequence is too short for its group goes to the longest group it can fill.

    The open-ended last group draws positions up to `max(low, 2 * low)` so it stays comparable across users.
    """
    rng = random.Random(f"dmpo-trl-cold-start|{seed}")
    order = list(users)
    rng.shuffle(order)
    out = []
    for k, user in enumerate(order):
        length = len(log.sequences[user])
        group = k % len(groups)
        while group > 0 and groups[group][0] > length - 1:
            group -= 1
        low, high = groups[group]
        high = 2 * low if high is None else high
        high = min(high, length - 1)
        if low > high:
            raise ValueError(f"user {user!r} has {length} interactions: too few for a target after {low} of them")
        out.append(example_at(log, user, rng.randint(low, high), max_history))
    by_user = {e.user: e for e in out}
    return [by_user[user] for user in users]


def breakdown(
    per_user: Mapping[str, Sequence[float]],
    lengths: Sequence[int],
    groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS,
) -> dict[str, dict[str, Any]]:
    """`{group: {"num_users": n, method: (mean, low, high)}}`: each method's per-user values averaged within each
    history-length group (the same users for every method), with 95% bootstrap intervals.

    Example:
    ```python
    >>> table = breakdown({"model": [1, 0, 1, 1]}, [1, 2, 4, 30])
    >>> table["1-2"]["num_users"], table["1-2"]["model"][0], table["6-10"]["num_users"]
    (2, 0.5, 0)
    ```
    """
    labels = [history_group(n, groups) for n in lengths]
    out: dict[str, dict[str, Any]] = {}
    for low, _ in groups:
        label = history_group(low, groups)
        mask = np.array([lab == label for lab in labels], dtype=bool)
        row: dict[str, Any] = {"num_users": int(mask.sum())}
        for name, values in per_user.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape[0] != len(lengths):
                raise ValueError(f"{name}: {values.shape[0]} per-user values for {len(lengths)} users")
            if mask.any():
                row[name] = interval(values[mask])
        out[label] = row
    return out


def history_breakdown(
    values: Mapping[str, Sequence[float]],
    lengths: Sequence[int],
    groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS,
) -> dict[str, dict[str, float | int]]:
    """`{group: {"num_users": n, metric: mean}}` for each group of `groups` that has users, in the groups' order:
    each metric's per-user `values` averaged over the users whose history length (`lengths`, one per user) falls in
    the group. A length outside every group (a target with no interaction before it) is counted in none.

    Example:
    ```python
    >>> history_breakdown({"hit_ratio@1": [1.0, 0.0, 1.0]}, [1, 2, 12])
    {'1-2': {'num_users': 2, 'hit_ratio@1': 0.5}, '11+': {'num_users': 1, 'hit_ratio@1': 1.0}}
    ```
    """
    columns = {name: np.asarray(column, dtype=np.float64) for name, column in values.items()}
    for name, column in columns.items():
        if column.shape[0] != len(lengths):
            raise ValueError(f"{name}: {column.shape[0]} per-user values for {len(lengths)} users")
    labels = [_group_or_none(n, groups) for n in lengths]
    out: dict[str, dict[str, float | int]] = {}
    for low, _ in groups:
        label = history_group(low, groups)
        mask = np.array([lab == label for lab in labels], dtype=bool)
        if mask.any():
            out[label] = {"num_users": int(mask.sum())}
            out[label].update({name: float(column[mask].mean()) for name, column in columns.items()})
    return out


def format_breakdown(table: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> str:
    """A markdown table of `breakdown(...)`: one row per group, one column per method ("mean [low, high]").

    Example:
    ```python
    >>> print(format_breakdown(breakdown({"m": [1, 0]}, [1, 4]), ["m"]))
    | history before target | users | m |
    |---|---|---|
    | 1-2 | 1 | 1.000 [1.000, 1.000] |
    | 3-5 | 1 | 0.000 [0.000, 0.000] |
    | 6-10 | 0 | - |
    | 11+ | 0 | - |
    ```
    """
    lines = ["| history before target | users | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for label, row in table.items():
        cells = [f"{row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]" if m in row else "-" for m in methods]
        lines.append(f"| {label} | {row['num_users']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
