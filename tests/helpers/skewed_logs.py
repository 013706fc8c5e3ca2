"""A synthetic interaction log with a popularity skew, so that most-popular and the classic retrievers have a top."""

from __future__ import annotations

import random
from collections.abc import Callable

from dmpo_trl.data import InteractionLog


def skewed_log(
    num_users: int = 30,
    num_items: int = 25,
    length: int = 7,
    seed: int = 0,
    title: Callable[[str], str] = lambda item: f"Title {item}",
    name: str | None = None,
) -> InteractionLog:
    """`num_users` users ("u0", ...) with `length` distinct items each of "i0".."i<num_items - 1>", item k drawn with
    weight 1 / (k + 1); `title(item)` names each item."""
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(num_items)]
    weights = [1.0 / (k + 1) for k in range(num_items)]
    sequences = {}
    for u in range(num_users):
        seq: list[str] = []
        while len(seq) < length:
            item = rng.choices(items, weights)[0]
            if item not in seq:
                seq.append(item)
        sequences[f"u{u}"] = seq
    extra = {"name": name} if name is not None else {}
    return InteractionLog(sequences, {i: title(i) for i in items}, **extra)
