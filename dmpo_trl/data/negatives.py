"""Negative items for a user, and fixed candidate lists (target + negatives) shared by training and evaluation.

A negative is an item the user never touched: not in the user's whole sequence, not the target, not in
`exclude`. Negatives also never share a title with any of those items or with each other (MovieLens-100K has 18
titles listed under two ids), so a prompt never offers the same title twice.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence

from .log import InteractionLog, UserExample


STRATEGIES = ("uniform", "popularity", "popularity_matched")


class NegativeSampler:
    """Precomputes per-log tables once; `sample()` then draws negatives for one example.

    Strategies:
    - "uniform": every allowed item is equally likely.
    - "popularity": weighted by `popularity` counts + 1 (the +1 lets never-seen items be drawn).
    - "popularity_matched": negatives are the target's neighbours in popularity rank. A random r in 0..n of
      them come from just above the target (sampled from the 2r nearest allowed items above), the rest from just
      below, so the target's popularity rank among the candidates is uniform and ranking by popularity alone
      scores near chance (MovieLens-100K, last items, 20 candidates: hit@1 of a popularity ranker 0.06, chance
      0.05, against 0.25 with uniform negatives). It cannot when the target is more popular than every item the
      user has not touched: then all negatives are less popular.

    `popularity` defaults to counts over the whole log; pass training-user counts to avoid using test targets.
    """

    def __init__(
        self,
        log: InteractionLog,
        strategy: str = "uniform",
        popularity: Counter | dict[str, int] | None = None,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown negative strategy {strategy!r}; choose from {STRATEGIES}")
        self.log, self.strategy = log, strategy
        self.items = list(log.titles)
        if popularity is None:  # uniform draws never read the counts: skip a pass over the whole log
            popularity = Counter() if strategy == "uniform" else log.popularity()
        counts = popularity
        self.cumulative = list(itertools.accumulate(counts.get(i, 0) + 1 for i in self.items))
        self.ranked = sorted(self.items, key=lambda i: counts.get(i, 0))  # least popular first; ties: catalog order
        self.rank_of = {item: rank for rank, item in enumerate(self.ranked)}
        self.counts = counts

    def sample(self, example: UserExample, n: int, rng: random.Random, exclude: Iterable[str] = ()) -> list[str]:
        """`n` distinct allowed items, drawn with `rng`; `ValueError` if fewer than `n` exist."""
        picker = _Picker(self.log.titles, {*self.log.sequences.get(example.user, ()), example.target, *exclude}, n)
        if picker.done:
            return []
        if self.strategy == "popularity_matched":
            return self._matched(example, n, rng, picker)
        total = self.cumulative[-1]
        for _ in range(20 * n + 100):  # fast path: rejection sampling
            if self.strategy == "uniform":
                item = self.items[rng.randrange(len(self.items))]
            else:
                item = self.items[bisect.bisect_right(self.cumulative, rng.random() * total)]
            if picker.take(item):
                return picker.chosen
        # slow path (heavy users, small catalogues): enumerate what is left
        rest = picker.remaining(self.items)
        need = n - len(picker.chosen)
        self._check(example, n, len(picker.chosen) + len(rest))
        if self.strategy == "uniform":
            return picker.chosen + rng.sample(rest, need)
        # weighted sampling without replacement (Efraimidis-Spirakis keys)
        keys = {i: rng.random() ** (1.0 / (self.counts.get(i, 0) + 1)) for i in rest}
        return picker.chosen + sorted(rest, key=keys.__getitem__, reverse=True)[:need]

    def _matched(self, example: UserExample, n: int, rng: random.Random, picker: _Picker) -> list[str]:
        if example.target in self.rank_of:
            rank = self.rank_of[example.target]
        else:
            counts = [self.counts.get(i, 0) for i in self.ranked]
            rank = bisect.bisect_left(counts, self.counts.get(example.target, 0))
        seen: set[str] = set()
        above = picker.nearest(self.ranked[rank + 1 :], 2 * n, seen)
        below = picker.nearest(self.ranked[:rank][::-1], 2 * n, seen)
        self._check(example, n, len(above) + len(below))
        num_above = min(max(rng.randint(0, n), n - len(below)), len(above))
        chosen = rng.sample(above[: 2 * num_above], num_above)
        chosen += rng.sample(below[: 2 * (n - num_above)], n - num_above)
        rng.shuffle(chosen)
        return chosen

    def _check(self, example: UserExample, n: int, available: int) -> None:
        if available < n:
            raise ValueError(
                f"Only {available} items are allowed as negatives for user {example.user!r} (catalog of "
                f"{len(self.items)} items, minus the {len(set(self.log.sequences.get(example.user, ())))} the user "
                f"touched and same-title duplicates), but {n} were asked for"
            )


class _Picker:
    """Collects up to `n` items, refusing banned ids, banned titles and repeated titles."""

    def __init__(self, titles: dict[str, str], banned: set[str], n: int):
        self.titles, self.banned, self.n = titles, banned, n
        self.banned_titles = set(map(titles.get, banned, banned))  # titles.get(i, i), without a Python loop
        self.chosen: list[str] = []

    @property
    def done(self) -> bool:
        return len(self.chosen) >= self.n

    def allowed(self, item: str) -> bool:
        return item not in self.banned and self.titles[item] not in self.banned_titles

    def take(self, item: str) -> bool:
        """Add `item` if allowed; True once `n` items are collected."""
        if self.allowed(item):
            self.chosen.append(item)
            self.banned_titles.add(self.titles[item])
        return self.done

    def nearest(self, items: Sequence[str], k: int, seen: set[str]) -> list[str]:
        """The first `k` allowed items of `items` whose titles are not in `seen` (which is updated)."""
        out = []
        for item in items:
            if len(out) == k:
                break
            if self.allowed(item) and self.titles[item] not in seen:
                seen.add(self.titles[item])
                out.append(item)
        return out

    def remaining(self, items: Sequence[str]) -> list[str]:
        """Allowed items, one per title (the first in `items` order)."""
        seen, out = set(), []
        for item in items:
            if self.allowed(item) and self.titles[item] not in seen:
                seen.add(self.titles[item])
                out.append(item)
        return out


def sample_negatives(
    log: InteractionLog,
    example: UserExample,
    n: int,
    rng: random.Random,
    strategy: str = "uniform",
    popularity: Counter | dict[str, int] | None = None,
    exclude: Iterable[str] = (),
) -> list[str]:
    """`n` distinct items the user never touched, with titles distinct from theirs and from each other.

    See `NegativeSampler` for the strategies; build one sampler yourself when sampling for many examples.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b"]}, {i: i.upper() for i in "abcdef"})
    >>> sorted(sample_negatives(log, UserExample("u", ("a",), "b"), 3, random.Random(0), exclude=["c"]))
    ['d', 'e', 'f']
    ```
    """
    return NegativeSampler(log, strategy, popularity).sample(example, n, rng, exclude)


def example_rng(example: UserExample, seed: int = 0) -> random.Random:
    """A generator seeded by (seed, user, target): the same draws for this example in every run and every model."""
    return random.Random(f"dmpo-trl|{seed}|{example.user}|{example.target}")


def candidate_sets(
    log: InteractionLog,
    examples: Sequence[UserExample],
    num_candidates: int = 20,
    seed: int = 0,
    strategy: str = "uniform",
    popularity: Counter | dict[str, int] | None = None,
) -> list[tuple[list[str], int]]:
    """For each example: (`num_candidates` item ids = target + negatives in shuffled order, index of the target).

    Each example's draws use `example_rng(example, seed)`, so a user's candidates do not depend on the other
    examples, their order, or the model: training prompts and every evaluated model see the same list.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b"]}, {i: i.upper() for i in "abcdef"})
    >>> [(candidates, index)] = candidate_sets(log, [UserExample("u", ("a",), "b")], num_candidates=3)
    >>> candidates[index], len(set(candidates)), "a" in candidates
    ('b', 3, False)
    ```
    """
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    sampler = NegativeSampler(log, strategy, popularity)
    out = []
    for example in examples:
        rng = example_rng(example, seed)
        candidates = [*sampler.sample(example, num_candidates - 1, rng), example.target]
        rng.shuffle(candidates)
        out.append((candidates, candidates.index(example.target)))
    return out
