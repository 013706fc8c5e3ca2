"""The saved split, `split.json`: who trained, who is tested, each test user's candidates, and the data settings
that render and rank them again. `run_recipe` writes it into `output_dir`, `dmpo-trl prepare` beside its data, and
`dmpo-trl evaluate` ranks a trained folder's test users from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..data import FewShotSplit, InteractionLog, UserExample, candidate_sets, example_at
from ..journal import atomic_write_text
from .arguments import RecDataArguments


__all__ = [
    "SPLIT_FILE",
    "check_split",
    "load_split",
    "saved_test_users",
    "split_data_arguments",
    "split_record",
    "write_split",
]

SPLIT_FILE = "split.json"
"""Written to `output_dir` by `run_recipe` (and to its folder by `dmpo-trl prepare`): who trained, who is tested."""


def split_record(
    data_args: RecDataArguments, log: InteractionLog, split: FewShotSplit, seed: int, conversational: bool
) -> dict[str, Any]:
    """The JSON form of a split: dataset, seed, user ids under "train", "valid", "test", each test user's candidate
    list and target, and the data settings (`data`, `conversational`) that render and rank them again.

    Example:
    ```python
    >>> from dmpo_trl.recipe import split_users
    >>> log = InteractionLog({f"u{i}": list("abcdefg") for i in range(9)}, {i: i for i in "abcdefghijkl"})
    >>> args = RecDataArguments(num_train_users=4, num_valid_users=0, num_test_users=3, num_candidates=4).for_mode()
    >>> record = split_record(args, log, split_users(args, log), 0, False)
    >>> len(record["train"]), len(record["test"]), len(record["candidates"][record["test"][0]])
    (4, 3, 4)
    ```
    """
    sets = candidate_sets(log, split.test, data_args.num_candidates, seed, data_args.candidate_strategy)
    data = asdict(replace(data_args, split_seed=seed))
    for key in ("interactions", "items", "data_dir"):
        if data[key]:
            data[key] = str(Path(data[key]).resolve())
    return {
        "dataset": log.name,
        "seed": seed,
        "train": list(dict.fromkeys(e.user for e in split.train)),
        "valid": [e.user for e in split.valid],
        "test": [e.user for e in split.test],
        "candidates": {e.user: candidates for e, (candidates, _) in zip(split.test, sets)},
        "targets": {e.user: e.target for e in split.test},
        "data": data,
        "conversational": conversational,
    }


def write_split(record: dict[str, Any], folder: str | Path) -> Path:
    """Write `record` to `folder/split.json` atomically (a temporary file renamed over it); returns the path."""
    return atomic_write_text(Path(folder) / SPLIT_FILE, json.dumps(record, indent=2) + "\n")


def load_split(path: str | Path) -> dict[str, Any]:
    """Read a `split.json` (or the one inside a folder), checked by `check_split`; `ValueError` when it is not one.

    Example:
    ```python
    >>> load_split("outputs/ml100k")["test"][:3]  # doctest: +SKIP
    ['12', '873', '301']
    ```
    """
    given = Path(path)
    path = given / SPLIT_FILE if given.is_dir() else given
    if not path.is_file():
        raise FileNotFoundError(
            f"{given}: a folder without a {SPLIT_FILE}" if given.is_dir() else f"No split file: {path}"
        )
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    check_split(record, path)
    return record


def check_split(record: Any, path: str | Path = SPLIT_FILE, log: InteractionLog | None = None) -> None:
    """`ValueError` naming `path` and the field when `record` is not a split as `split_record` writes one.

    Checked: the keys and their JSON types, the test users (distinct string ids, never training users), each
    test user's candidate list (distinct item ids, `data.num_candidates` of them, holding the saved target) and the
    `data` settings; with `log`, also that the test users are its users and the candidates its items.

    Example:
    ```python
    >>> record = {"dataset": "d", "seed": 0, "train": [], "valid": [], "test": ["u"], "data": {"num_candidates": 2},
    ...           "candidates": {"u": ["a", "a"]}, "targets": {"u": "a"}}
    >>> try:
    ...     check_split(record, "out/split.json")
    ... except ValueError as exc:
    ...     print(exc)
    out/split.json: candidates["u"][1]: 'a' is repeated
    ```
    """

    def refuse(where: str, problem: str) -> ValueError:
        return ValueError(f"{path}: {where}: {problem}")

    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a dmpo-trl split file (a JSON {type(record).__name__}, not an object)")
    missing = [k for k in ("dataset", "seed", "train", "valid", "test", "candidates", "data") if k not in record]
    if missing:
        raise ValueError(f"{path}: not a dmpo-trl split file (missing {missing})")
    kinds = {"dataset": str, "train": list, "valid": list, "test": list, "candidates": dict, "data": dict}
    kinds.update(targets=dict, conversational=(bool, type(None)))
    for key, kind in kinds.items():
        if key in record and not isinstance(record[key], kind):
            raise refuse(key, f"{record[key]!r} is not {_json_kind(kind)}")
    if record["seed"] is not None and (isinstance(record["seed"], bool) or not isinstance(record["seed"], int)):
        raise refuse("seed", f"{record['seed']!r} is not an integer")
    for i, user in enumerate(record["test"]):
        if not isinstance(user, str) or not user:
            raise refuse(f"test[{i}]", f"{user!r} is not a user id (a non-empty string)")
    try:
        data_args = split_data_arguments(record)
    except (TypeError, ValueError) as exc:
        raise refuse("data", str(exc)) from exc
    trained, seen, targets = {str(user) for user in record["train"]}, set(), record.get("targets", {})
    for i, user in enumerate(record["test"]):
        if user in seen or user in trained:
            raise refuse(f"test[{i}]", f"{user!r} is {'repeated' if user in seen else 'also a training user'}")
        seen.add(user)
        if log is not None and user not in log.sequences:
            raise refuse(f"test[{i}]", f"{user!r} is not a user of {log.name}")
        where, items = f'candidates["{user}"]', record["candidates"].get(user)
        if not isinstance(items, list):
            raise refuse(where, f"{items!r} is not a list of item ids" if items else f"test user {user!r} has none")
        for j, item in enumerate(items):
            if not isinstance(item, str) or not item or item in items[:j]:
                problem = "repeated" if item in items[:j] else "not an item id (a non-empty string)"
                raise refuse(f"{where}[{j}]", f"{item!r} is {problem}")
            if log is not None and item not in log.titles:
                raise refuse(f"{where}[{j}]", f"{item!r} is not an item of {log.name}")
        if len(items) != data_args.num_candidates:
            raise refuse(where, f"{len(items)} items, but data.num_candidates is {data_args.num_candidates}")
        target = targets.get(user) or (log.sequences[user][-1] if log is not None else None)
        if target is not None and target not in items:
            raise refuse(where, f"the target {target!r} is not among them")


def _json_kind(kind) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "true or false", type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names[k] for k in kinds)


def split_data_arguments(record: dict[str, Any]) -> RecDataArguments:
    """The `RecDataArguments` a split was made with (unknown keys from other versions are left out)."""
    known = {f.name for f in dataclasses.fields(RecDataArguments)}
    return RecDataArguments(**{k: v for k, v in record["data"].items() if k in known})


def saved_test_users(
    record: dict[str, Any], log: InteractionLog, path: str | Path = SPLIT_FILE
) -> tuple[list[UserExample], list[list[str]]]:
    """The split's test examples (rebuilt from `log`) and their saved candidate lists, in the saved order.

    `ValueError` naming `path` and the field when the split does not fit `log` (`check_split`) or has no test users.
    """
    check_split(record, path, log)
    if not record["test"]:
        raise ValueError(f"{path}: test: no test users to rank")
    max_history = record["data"].get("max_history", 10)
    examples, candidates = [], []
    for user in record["test"]:
        example = example_at(log, user, -1, max_history)
        saved = record.get("targets", {}).get(user, example.target)
        if saved != example.target:
            raise ValueError(
                f'{path}: targets["{user}"]: {saved!r}, but the last item of {user!r} in {log.name} is '
                f"{example.target!r}"
            )
        examples.append(example)
        candidates.append(record["candidates"][user])
    return examples, candidates
