"""Turn a log into next-item `UserExample`s: leave-last-out per user, or a user-disjoint few-shot split."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from .log import InteractionLog, UserExample
from .tables import natural_key


def example_at(log: InteractionLog, user: str, position: int, max_history: int = 10) -> UserExample:
    """The example whose target is `log.sequences[user][position]`, with up to `max_history` items before it.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c", "d"]}, {i: i.upper() for i in "abcd"})
    >>> example_at(log, "u", -1, max_history=2)
    UserExample(user='u', history=('b', 'c'), target='d', extra={'position': 3})
    ```
    """
    sequence = log.sequences[user]
    position = position % len(sequence)
    history = tuple(sequence[max(0, position - max_history) : position])
    return UserExample(user, history, sequence[position], extra={"position": position})


def leave_last_out(log: InteractionLog, max_history: int = 10, min_history: int = 1) -> dict[str, list[UserExample]]:
    """Per user: test target = last item, valid target = second to last, train target = third to last.

    Each history is the up to `max_history` items right before the target. A user gets an example in a split
    only when at least `min_history` items precede that target (so a user with 3 items and `min_history=1` is in
    valid and test, not train). No randomness: the result depends on the log alone.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c", "d", "e"]}, {i: i.upper() for i in "abcde"})
    >>> splits = leave_last_out(log, max_history=2)
    >>> [(e.history, e.target) for e in splits["train"] + splits["valid"] + splits["test"]]
    [(('a', 'b'), 'c'), (('b', 'c'), 'd'), (('c', 'd'), 'e')]
    ```
    """
    if max_history < 1 or min_history < 0:
        raise ValueError(f"need max_history >= 1 and min_history >= 0, got {max_history} and {min_history}")
    splits: dict[str, list[UserExample]] = {"train": [], "valid": [], "test": []}
    for user, sequence in log.sequences.items():
        for split, offset in (("train", 3), ("valid", 2), ("test", 1)):
            if len(sequence) - offset >= min_history and len(sequence) >= offset:
                splits[split].append(example_at(log, user, len(sequence) - offset, max_history))
    return splits


@dataclass
class FewShotSplit:
    """User-disjoint train/valid/test examples; `skipped_users` had fewer than `min_history` + 1 items."""

    train: list[UserExample]
    valid: list[UserExample]
    test: list[UserExample]
    skipped_users: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_users)


def few_shot_split(
    log: InteractionLog,
    num_train_users: int = 100,
    num_valid_users: int = 100,
    num_test_users: int = 500,
    max_history: int = 10,
    min_history: int = 5,
    seed: int = 0,
    strict: bool = True,
    targets_per_user: int | None = 1,
) -> FewShotSplit:
    """Sample disjoint groups of users; each valid and test user gives ONE example whose target is their last item.

    Each training user gives `targets_per_user` examples (default 1: the last item): the targets are the user's
    latest positions that have at least `min_history` items before them, oldest first, each with the up to
    `max_history` items right before it as history. `None` takes every such position. Valid and test users never
    give training examples, so no held-out target is ever a training target.

    Users with fewer than `min_history` items before their last one are skipped (listed in `skipped_users`).
    The eligible users are shuffled with `seed`, then dealt out test first, then valid, then train, so the test
    users stay the same when only `num_train_users` changes (few-shot curves compare like with like).
    Asking for more users than are eligible raises `ValueError` (`strict=False`: warn and shrink train, then
    valid, then test, saying how many there are).

    Example:
    ```python
    >>> log = InteractionLog({f"u{i}": ["a", "b", "c"] for i in range(10)}, {i: i for i in "abc"})
    >>> split = few_shot_split(log, num_train_users=4, num_valid_users=2, num_test_users=3, min_history=2)
    >>> len(split.train), len(split.valid), len(split.test), split.num_skipped
    (4, 2, 3, 0)
    >>> more = few_shot_split(log, num_train_users=4, num_valid_users=2, num_test_users=3, min_history=1,
    ...                       targets_per_user=None)
    >>> len(more.train), [(e.history, e.target) for e in more.train[:2]], more.test == split.test
    (8, [(('a',), 'b'), (('a', 'b'), 'c')], True)
    ```
    """
    if targets_per_user is not None and (isinstance(targets_per_user, bool) or targets_per_user < 1):
        raise ValueError(f"targets_per_user must be >= 1 or None (every position), got {targets_per_user!r}")
    counts = {"test": num_test_users, "valid": num_valid_users, "train": num_train_users}
    if min(counts.values()) < 0 or max_history < 1:
        raise ValueError(f"user counts must be >= 0 and max_history >= 1, got {counts}, max_history={max_history}")
    users = sorted(log.sequences, key=natural_key)
    eligible = [u for u in users if len(log.sequences[u]) > max(min_history, 0)]
    skipped = [u for u in users if len(log.sequences[u]) <= max(min_history, 0)]
    wanted = sum(counts.values())
    if wanted > len(eligible):
        message = (
            f"few_shot_split asked for {wanted} users ({num_train_users} train + {num_valid_users} valid + "
            f"{num_test_users} test) but only {len(eligible)} of {len(users)} users have more than "
            f"min_history={min_history} items"
        )
        if strict:
            raise ValueError(message + "; ask for fewer users or lower min_history")
        left = len(eligible)
        for split in ("test", "valid", "train"):
            counts[split] = min(counts[split], left)
            left -= counts[split]
        using = f"using {counts['train']} train, {counts['valid']} valid, {counts['test']} test users"
        warnings.warn(f"{message}; {using}", stacklevel=2)
    random.Random(seed).shuffle(eligible)
    groups, start = {}, 0
    for split in ("test", "valid", "train"):
        groups[split] = [example_at(log, u, -1, max_history) for u in eligible[start : start + counts[split]]]
        start += counts[split]
    if targets_per_user != 1:
        train_users = [example.user for example in groups["train"]]
        groups["train"] = [
            example_at(log, user, position, max_history)
            for user in train_users
            for position in target_positions(len(log.sequences[user]), min_history, targets_per_user)
        ]
    return FewShotSplit(groups["train"], groups["valid"], groups["test"], skipped_users=skipped, seed=seed)


def target_positions(length: int, min_history: int = 5, targets_per_user: int | None = 1) -> list[int]:
    """The positions of a sequence of `length` items that become targets: the latest `targets_per_user` (all when
    `None`) of those with at least `min_history` items before them, in ascending order.

    Example:
    ```python
    >>> target_positions(6, min_history=2, targets_per_user=3), target_positions(6, 2, None)
    ([3, 4, 5], [2, 3, 4, 5])
    ```
    """
    first = max(min_history, 0)
    positions = list(range(first, length))
    return positions if targets_per_user is None else positions[max(len(positions) - targets_per_user, 0) :]


def sample_examples(examples: Sequence[UserExample], num_examples: int | None, seed: int = 0) -> list[UserExample]:
    """At most `num_examples` of `examples` (all when `None`), a seeded sample kept in the given order.

    Samples are nested: for one seed, the 100 examples kept are among the 1,000 kept, so a curve over the number of
    training rows adds rows rather than drawing new ones.

    Example:
    ```python
    >>> examples = [UserExample("u", ("a",), t) for t in "bcdefg"]
    >>> [e.target for e in sample_examples(examples, 3, seed=0)], len(sample_examples(examples, None))
    (['b', 'f', 'g'], 6)
    >>> {e.target for e in sample_examples(examples, 2)} <= {e.target for e in sample_examples(examples, 4)}
    True
    ```
    """
    if num_examples is None or num_examples >= len(examples):
        return list(examples)
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0 or None, got {num_examples}")
    order = list(range(len(examples)))
    random.Random(f"dmpo-trl-rows|{seed}").shuffle(order)
    return [examples[index] for index in sorted(order[:num_examples])]
