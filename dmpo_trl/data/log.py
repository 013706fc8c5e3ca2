"""The common form every loader returns: each user's time-ordered items, plus item titles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain


@dataclass
class InteractionLog:
    """Each user's time-ordered item sequence and each item's title.

    Example:
    ```python
    >>> log = InteractionLog(sequences={"u1": ["i1", "i2"]}, titles={"i1": "Heat (1995)", "i2": "Fargo (1996)"})
    >>> log.num_users, log.num_items
    (1, 2)
    ```
    """

    sequences: dict[str, list[str]]
    titles: dict[str, str]
    name: str = "custom"

    def __post_init__(self):
        """Ids are non-empty strings, every title a non-empty string, every item in a sequence has a title."""
        for what, mapping in (("sequences", self.sequences), ("titles", self.titles)):
            if not isinstance(mapping, Mapping):
                raise ValueError(f"InteractionLog: {what} must be a dict, got {type(mapping).__name__}")
        for item, title in self.titles.items():
            _check_id(item, f"titles: key {item!r}", "item")
            if not isinstance(title, str) or not title.strip():
                raise ValueError(
                    f"InteractionLog: titles[{item!r}]: the title must be a non-empty string, got {title!r}"
                )
        known = self.titles.keys()  # every key is a valid id, so a sequence of known items needs no item checks
        for user, items in self.sequences.items():
            _check_id(user, f"sequences: key {user!r}", "user")
            if not isinstance(items, (list, tuple)):
                raise ValueError(
                    f"InteractionLog: sequences[{user!r}]: a sequence is a list of ids, not {type(items).__name__}"
                )
            try:
                if known >= set(items):
                    continue
            except TypeError:  # an unhashable item: the loop below names it
                pass
            for position, item in enumerate(items):
                where = f"sequences[{user!r}][{position}]"
                _check_id(item, where, "item")
                if item not in self.titles:
                    raise ValueError(f"InteractionLog: {where}: item {item!r} has no title in `titles`")

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.titles)

    def popularity(self, users: Iterable[str] | None = None) -> Counter:
        """Interaction counts per item, over `users` (all users when None)."""
        users = self.sequences.keys() if users is None else users
        return Counter(chain.from_iterable(map(self.sequences.__getitem__, users)))


def _check_id(value, where: str, what: str) -> None:
    if not isinstance(value, str):
        raise ValueError(
            f"InteractionLog: {where}: {what} id {value!r} is {type(value).__name__}; ids are strings (str(id)), "
            "as the loaders give them"
        )
    if not value.strip():
        raise ValueError(f"InteractionLog: {where}: empty {what} id")


@dataclass(frozen=True)
class UserExample:
    """One next-item prediction: the user's recent history (oldest first) and the item that came next."""

    user: str
    history: tuple[str, ...]
    target: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)
