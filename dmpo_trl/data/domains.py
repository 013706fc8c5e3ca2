"""Cross-domain splits: train on one part of a catalogue (or one log), rank candidates from another.

A domain is a set of items. `split_catalogue` turns item labels (e.g. MovieLens genres) into two disjoint domains,
`restrict_log` keeps one domain's interactions, and `cross_domain_split` deals out users so that the training rows
come from the source domain, the test rows (targets, histories and, through the restricted log, every candidate)
from the target domain, and no user is on both sides. With two logs (games and movies) pass them as they are.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from .log import InteractionLog, UserExample
from .splits import example_at
from .tables import natural_key, read_table


def parse_domain(text: str) -> frozenset[str]:
    """A comma-separated list of labels, e.g. `"Action, Sci-Fi"` -> `{"Action", "Sci-Fi"}`.

    Example:
    ```python
    >>> sorted(parse_domain("Action, Sci-Fi,"))
    ['Action', 'Sci-Fi']
    ```
    """
    labels = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not labels:
        raise ValueError(f"a domain needs at least one label, got {text!r}")
    return labels


def item_labels_from_table(
    path: str, item_col: str = "item_id", label_col: str = "genres", label_sep: str = "|"
) -> dict[str, frozenset[str]]:
    """Each item's labels from an item file (CSV, TSV, parquet), e.g. a `genres` column holding "Action|Comedy"."""
    table = read_table(path)
    table.require(item_col, label_col)
    labels = table.frame[label_col].astype("string").fillna("")
    return {
        str(item).strip(): frozenset(x.strip() for x in str(text).split(label_sep) if x.strip())
        for item, text in zip(table.frame[item_col], labels)
    }


@dataclass
class CatalogueSplit:
    """Two disjoint item sets; `in_both` items carried labels of both domains and were left out of either."""

    source: frozenset[str]
    target: frozenset[str]
    in_both: frozenset[str] = frozenset()
    in_neither: frozenset[str] = frozenset()


def split_catalogue(
    labels: Mapping[str, Iterable[str]], source_labels: Collection[str], target_labels: Collection[str]
) -> CatalogueSplit:
    """Items with a source label go to the source domain, items with a target label to the target domain.

    An item with labels of both domains belongs to neither (warns with the count), so the domains are disjoint.

    Example:
    ```python
    >>> labels = {"1": {"Action"}, "2": {"Comedy"}, "3": {"Action", "Comedy"}, "4": {"Horror"}}
    >>> with warnings.catch_warnings(record=True):
    ...     split = split_catalogue(labels, {"Action"}, {"Comedy"})
    >>> sorted(split.source), sorted(split.target), sorted(split.in_both), sorted(split.in_neither)
    (['1'], ['2'], ['3'], ['4'])
    ```
    """
    source_labels, target_labels = frozenset(source_labels), frozenset(target_labels)
    shared = source_labels & target_labels
    if shared:
        raise ValueError(f"the source and target domains share the labels {sorted(shared)}")
    source, target, both, neither = set(), set(), set(), set()
    for item, item_labels in labels.items():
        item_labels = set(item_labels)
        in_source, in_target = bool(item_labels & source_labels), bool(item_labels & target_labels)
        (both if in_source and in_target else source if in_source else target if in_target else neither).add(item)
    if both:
        warnings.warn(
            f"{len(both)} of {len(labels)} items have labels of both domains and are left out of both "
            f"({len(source)} source items, {len(target)} target items, {len(neither)} items in neither)",
            stacklevel=2,
        )
    if not source or not target:
        raise ValueError(f"a domain is empty: {len(source)} source items, {len(target)} target items")
    return CatalogueSplit(frozenset(source), frozenset(target), frozenset(both), frozenset(neither))


def restrict_log(log: InteractionLog, items: Collection[str], name: str | None = None) -> InteractionLog:
    """The log of `items` alone: other items leave every sequence and the catalogue; users left with none go.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"], "v": ["b"]}, {i: i.upper() for i in "abc"})
    >>> small = restrict_log(log, {"a", "c"})
    >>> small.sequences, small.titles
    ({'u': ['a', 'c']}, {'a': 'A', 'c': 'C'})
    ```
    """
    items = set(items)
    sequences = {u: [i for i in seq if i in items] for u, seq in log.sequences.items()}
    return InteractionLog(
        sequences={u: seq for u, seq in sequences.items() if seq},
        titles={i: t for i, t in log.titles.items() if i in items},
        name=name or log.name,
    )


@dataclass
class CrossDomainSplit:
    """Training examples from `source_log`, test examples (and in-domain training examples of other users) from
    `target_log`; the three user groups are disjoint. Rank `test` against `target_log`, so every candidate is a
    target-domain item."""

    source_log: InteractionLog
    target_log: InteractionLog
    train: list[UserExample]
    test: list[UserExample]
    target_train: list[UserExample] = field(default_factory=list)
    seed: int = 0


def cross_domain_split(
    source_log: InteractionLog,
    target_log: InteractionLog,
    num_train_users: int = 100,
    num_test_users: int = 200,
    num_target_train_users: int = 0,
    max_history: int = 10,
    min_history: int = 5,
    seed: int = 0,
) -> CrossDomainSplit:
    """Deal out users: test users first (from `target_log`), then in-domain training users (`target_log`, others),
    then source training users (`source_log`, none of the former). One example per user: their last item in that
    log, with up to `max_history` items before it; a user needs more than `min_history` items in that log.

    With one log, pass `restrict_log(log, domains.source)` and `restrict_log(log, domains.target)`. Raises
    `ValueError` when there are not enough eligible users. Deterministic for a given `seed`.

    Example:
    ```python
    >>> log = InteractionLog({f"u{k}": ["a", "b", "x", "c", "y", "z"] for k in range(6)}, {i: i for i in "abcxyz"})
    >>> split = cross_domain_split(restrict_log(log, "abc"), restrict_log(log, "xyz"), 3, 2, 1, min_history=2)
    >>> len(split.train), len(split.test), len(split.target_train), split.test[0].target
    (3, 2, 1, 'z')
    ```
    """
    if min(num_train_users, num_test_users, num_target_train_users) < 0 or max_history < 1:
        raise ValueError("user counts must be >= 0 and max_history >= 1")

    def eligible(log: InteractionLog, taken: set[str]) -> list[str]:
        users = [u for u in sorted(log.sequences, key=natural_key) if len(log.sequences[u]) > min_history]
        random.Random(f"dmpo-trl-cross-domain|{seed}|{log.name}").shuffle(users)
        return [u for u in users if u not in taken]

    groups: dict[str, list[str]] = {}
    taken: set[str] = set()
    for group, log, wanted in (
        ("test", target_log, num_test_users),
        ("target_train", target_log, num_target_train_users),
        ("train", source_log, num_train_users),
    ):
        users = eligible(log, taken)
        if len(users) < wanted:
            raise ValueError(
                f"cross_domain_split asked for {wanted} {group} users but only {len(users)} users of {log.name!r} "
                f"have more than min_history={min_history} items and are not already used; ask for fewer users "
                "or lower min_history"
            )
        groups[group] = users[:wanted]
        taken.update(groups[group])
    return CrossDomainSplit(
        source_log,
        target_log,
        train=[example_at(source_log, u, -1, max_history) for u in groups["train"]],
        test=[example_at(target_log, u, -1, max_history) for u in groups["test"]],
        target_train=[example_at(target_log, u, -1, max_history) for u in groups["target_train"]],
        seed=seed,
    )
