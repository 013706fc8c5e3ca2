"""Classic recommenders as candidate scorers: SASRec, GRU4Rec and BPR (Cornac's), on the LLM's candidate lists.

A practitioner weighs an LLM recommender against a sequential recommender trained on the same log. This module
wraps Cornac's models (no model is written here) so that they rank exactly the candidate lists the LLM ranks:

- `training_sequences(log, held_out)`: the interactions a model may learn from: every user's sequence, cut before
  each held-out example's target (so held-out targets, and anything after them, are never seen); the same cut as
  the `popular` baseline (`dmpo_trl.evaluation.baseline_popularity`).
- `few_shot_sequences(log, train, held_out)`: the few-shot protocol's data instead: only the training users'
  interactions (those DMPO trains on) and the held-out users' shown histories.
- `ClassicRecommender(name, seed, **settings).fit(sequences)`: trains Cornac's `SASRec`, `GRU4Rec` (one session per
  user, in time order) or `BPR` (user-item pairs, order ignored).
- `.score(user, candidates)`: one score per candidate, given the user's whole training sequence as history
  (SASRec keeps its last `max_len` items). An item the model never saw in training gets a score below every item it
  knows (ties among such items are broken at random by the ranking metrics), so it is neither dropped nor favoured.
- `.score_history(history, candidates)` (SASRec, GRU4Rec): the same scores after any history of item ids, a user's
  the model never trained on included (items it never saw are left out of the history); BPR has no such scores.

Cornac is optional: `pip install "dmpo-trl[classic]"`. Importing this module does not need it; using a model
without it raises `ImportError` naming the extra.

Example:
```python
>>> from dmpo_trl.data import InteractionLog, UserExample
>>> log = InteractionLog({f"u{k}": ["a", "b", "c", "d"] for k in range(4)}, {i: i for i in "abcd"})
>>> held_out = [UserExample("u0", ("b", "c"), "d", extra={"position": 3})]
>>> training_sequences(log, held_out)["u0"]
['a', 'b', 'c']
>>> model = ClassicRecommender("bpr", seed=0, k=4, max_iter=5).fit(training_sequences(log, held_out))
>>> len(model.score("u0", ["a", "d"]))
2
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import InteractionLog, UserExample


CLASSIC_BASELINES = ("sasrec", "gru4rec", "bpr")
EXTRA = "classic"

# Settings used when none are given (the benchmark tunes some of them on validation users).
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "sasrec": {"embedding_dim": 64, "n_epochs": 5, "max_len": 20, "batch_size": 256, "learning_rate": 1e-3},
    "gru4rec": {"layers": [100], "n_epochs": 5, "batch_size": 256, "learning_rate": 0.05},
    "bpr": {"k": 64, "max_iter": 100, "learning_rate": 0.01, "lambda_reg": 0.01},
}


def require_cornac():
    """The `cornac` module, or an `ImportError` saying which extra installs it."""
    try:
        import cornac
    except ImportError as error:
        raise ImportError(
            f'The classic baselines {CLASSIC_BASELINES} need Cornac: pip install "dmpo-trl[{EXTRA}]"'
        ) from error
    return cornac


def training_sequences(log: InteractionLog, held_out: Sequence[UserExample]) -> dict[str, list[str]]:
    """Every user's sequence, cut before each held-out example's target (`extra["position"]`, else the target's last
    occurrence); users left with nothing are omitted.

    Example:
    ```python
    >>> log = InteractionLog({"u1": ["a", "b", "c"], "u2": ["a", "c"]}, {i: i for i in "abc"})
    >>> training_sequences(log, [UserExample("u1", ("a",), "b", extra={"position": 1})])
    {'u1': ['a'], 'u2': ['a', 'c']}
    ```
    """
    cut: dict[str, int] = {}
    for example in held_out:
        if example.user not in log.sequences:
            raise ValueError(f"held-out example for user {example.user!r}: that user is not in the log")
        sequence = log.sequences[example.user]
        position = example.extra.get("position")
        if position is None:
            if example.target not in sequence:
                raise ValueError(f"held-out example for user {example.user!r}: target {example.target!r} not in log")
            position = len(sequence) - 1 - sequence[::-1].index(example.target)
        cut[example.user] = min(cut.get(example.user, len(sequence)), position)
    out = {user: list(seq[: cut.get(user, len(seq))]) for user, seq in log.sequences.items()}
    return {user: seq for user, seq in out.items() if seq}


def few_shot_sequences(
    log: InteractionLog, train: Sequence[UserExample], held_out: Sequence[UserExample]
) -> dict[str, list[str]]:
    """The training data of the few-shot protocol, where a classic model learns from what the LLM learns from:
    each training user's sequence up to and including their last training target (the interactions DMPO's rows are
    drawn from), plus each held-out example's shown history (the titles the LLM's prompt shows), so a model scores
    a held-out user from exactly the history the LLM sees. Nothing else of the log is used.

    Example:
    ```python
    >>> log = InteractionLog({"u1": ["a", "b", "c", "d"], "u2": ["a", "c", "d"]}, {i: i for i in "abcd"})
    >>> train = [UserExample("u1", ("a", "b"), "c", extra={"position": 2})]
    >>> few_shot_sequences(log, train, [UserExample("u2", ("c",), "d", extra={"position": 2})])
    {'u1': ['a', 'b', 'c'], 'u2': ['c']}
    ```
    """
    out: dict[str, list[str]] = {}
    for example in train:
        sequence = log.sequences[example.user]
        position = example.extra.get("position")
        if position is None:
            position = len(sequence) - 1 - sequence[::-1].index(example.target)
        out[example.user] = list(sequence[: max(position + 1, len(out.get(example.user, [])))])
    for example in held_out:
        if example.user in out:
            raise ValueError(f"user {example.user!r} is both a training and a held-out user")
        if example.history:
            out[example.user] = list(example.history)
    return out


class ClassicRecommender:
    """One of Cornac's `SASRec`, `GRU4Rec` or `BPR`, trained on `{user: [items in time order]}`, scoring candidates.

    `settings` are passed to the Cornac model (see `DEFAULT_SETTINGS` for the ones used when omitted; GRU4Rec's
    `batch_size` is capped at the number of training users); `seed` seeds its initialisation and sampling. Training
    uses torch's current thread count (set it with `torch.set_num_threads`).

    Example:
    ```python
    >>> model = ClassicRecommender("bpr", seed=0, k=4, max_iter=5).fit({"u1": ["a", "b"], "u2": ["b", "c"]})
    >>> model.unknown_items(["a", "z"])
    ['z']
    ```
    """

    def __init__(self, name: str, seed: int = 0, **settings: Any):
        if name not in CLASSIC_BASELINES:
            raise ValueError(f"Unknown classic baseline {name!r}; choose from {CLASSIC_BASELINES}")
        self.name, self.seed = name, seed
        self.settings = {**DEFAULT_SETTINGS[name], **settings}
        self.model = None
        self.sequences: dict[str, list[str]] = {}

    def fit(self, sequences: dict[str, Sequence[str]]) -> ClassicRecommender:
        """Train on `sequences` (each user's items, oldest first). Returns self."""
        cornac = require_cornac()
        self.sequences = {str(user): [str(i) for i in items] for user, items in sequences.items() if items}
        if not self.sequences:
            raise ValueError("no training interactions: every sequence is empty")
        if self.name == "bpr":
            triples = [(u, i, 1.0) for u, items in self.sequences.items() for i in dict.fromkeys(items)]
            self.train_set = cornac.data.Dataset.from_uir(triples, seed=self.seed)
            self.model = cornac.models.BPR(seed=self.seed, num_threads=1, **self.settings)
        else:  # Cornac's sequential models run on torch; both load only when one is fitted
            import torch
            from cornac.data import SequentialDataset

            rows = [(u, u, i, t) for u, items in self.sequences.items() for t, i in enumerate(items)]
            self.train_set = SequentialDataset.build(rows, fmt="USIT", seed=self.seed)
            model_class = cornac.models.SASRec if self.name == "sasrec" else cornac.models.GRU4Rec
            settings = dict(self.settings)
            if self.name == "gru4rec":  # its mini-batches are parallel sessions: no more than there are users
                settings["batch_size"] = min(settings["batch_size"], len(self.sequences))
            torch.manual_seed(self.seed)
            self.model = model_class(seed=self.seed, **settings)
        self.model.fit(self.train_set)
        return self

    @property
    def num_interactions(self) -> int:
        """How many interactions the model was trained on (BPR: distinct user-item pairs)."""
        return len(self.train_set.uir_tuple[0])

    def unknown_items(self, items: Sequence[str]) -> list[str]:
        """The `items` the model never saw in training."""
        return [i for i in items if str(i) not in self.train_set.iid_map]

    def all_scores(self, user: str) -> np.ndarray:
        """Scores of every training item (Cornac's item index order) for `user`, after their training sequence."""
        if self.model is None:
            raise RuntimeError("call fit() before scoring")
        if user not in self.sequences:
            raise KeyError(f"user {user!r} has no training interactions, so the {self.name} model cannot score for it")
        if self.name == "bpr":
            return np.asarray(self.model.score(self.train_set.uid_map[user]), dtype=np.float64)
        return self._sequence_scores(self.train_set.uid_map[user], self.sequences[user])

    def _sequence_scores(self, user_index: int, history: Sequence[str]) -> np.ndarray:
        """SASRec's or GRU4Rec's scores of every training item after `history` (item ids the model knows)."""
        indices = [self.train_set.iid_map[i] for i in history]
        scores = self.model.score(user_index, indices)
        return np.asarray(scores, dtype=np.float64).reshape(-1)[: self.train_set.num_items]

    def _candidate_scores(self, scores: np.ndarray, candidates: Sequence[str]) -> list[float]:
        floor = float(scores.min()) - 1.0
        index = self.train_set.iid_map
        return [float(scores[index[str(i)]]) if str(i) in index else floor for i in candidates]

    def score(self, user: str, candidates: Sequence[str]) -> list[float]:
        """One score per candidate (higher = more likely next); unseen items score below every known item."""
        return self._candidate_scores(self.all_scores(user), candidates)

    def score_history(self, history: Sequence[str], candidates: Sequence[str]) -> list[float]:
        """One score per candidate after `history` (item ids, oldest first), whoever's it is: SASRec and GRU4Rec read
        the user from the history alone. Items the model never saw in training are left out of the history (with
        none left, every known item scores the same); unseen candidates score below every known item, as in
        `score`. A training user's whole sequence scores as `score(user, ...)` does. BPR raises `ValueError`: it
        learns one vector per training user and cannot score a history.

        Example:
        ```python
        >>> model = ClassicRecommender("gru4rec", seed=0, layers=[8], n_epochs=1).fit({"u1": ["a", "b", "c"]})
        >>> scores = model.score_history(["b", "not-in-training"], ["c", "z"])
        >>> scores[1] < scores[0]  # "z" was never seen in training
        True
        ```
        """
        if self.model is None:
            raise RuntimeError("call fit() before scoring")
        if self.name == "bpr":
            raise ValueError(
                "bpr cannot score a history: it learns one vector per user of its training log; use sasrec or gru4rec"
            )
        known = [str(i) for i in history if str(i) in self.train_set.iid_map]
        # the user index is not read by SASRec's or GRU4Rec's scores (the history is the user); any valid one will do
        return self._candidate_scores(self._sequence_scores(0, known), candidates)


def score_examples(
    name: str,
    log: InteractionLog,
    examples: Sequence[UserExample],
    candidates: Sequence[Sequence[str]],
    seed: int = 0,
    **settings: Any,
) -> list[list[float]]:
    """Train `name` on `training_sequences(log, examples)` and score each example's candidate list.

    Example:
    ```python
    >>> log = InteractionLog({f"u{k}": ["a", "b", "c"] for k in range(3)}, {i: i for i in "abcd"})
    >>> example = UserExample("u0", ("a", "b"), "c", extra={"position": 2})
    >>> [len(s) for s in score_examples("bpr", log, [example], [["c", "d"]], k=4, max_iter=5)]
    [2]
    ```
    """
    if len(candidates) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(candidates)} candidate lists")
    model = ClassicRecommender(name, seed=seed, **settings).fit(training_sequences(log, examples))
    return [model.score(e.user, c) for e, c in zip(examples, candidates)]
