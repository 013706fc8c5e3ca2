"""The common form every loader returns: each user's time-ordered items, plus item titles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


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

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.titles)

    def popularity(self, users: Iterable[str] | None = None) -> Counter:
        """Interaction counts per item, over `users` (all users when None)."""
        users = self.sequences.keys() if users is None else users
        return Counter(item for user in users for item in self.sequences[user])


@dataclass(frozen=True)
class UserExample:
    """One next-item prediction: the user's recent history (oldest first) and the item that came next."""

    user: str
    history: tuple[str, ...]
    target: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)
