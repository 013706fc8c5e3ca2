"""The recipe's data: an interaction log split into few-shot users and built into preference rows, or a preference
dataset trained as it is (ranked on the test users of the `split.json` beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from ..data import (
    DATASETS,
    FewShotSplit,
    InteractionLog,
    UserExample,
    build_preference_dataset,
    few_shot_split,
    load_dataset_by_name,
    load_interactions,
    sample_examples,
)
from ..retrieval import make_retriever, retriever_negatives
from .arguments import RecDataArguments
from .split_file import SPLIT_FILE, load_split, saved_test_users, split_data_arguments


__all__ = [
    "PREFERENCE_COLUMNS",
    "RecipeData",
    "build_datasets",
    "load_interaction_log",
    "load_preference_data",
    "load_recipe_data",
    "data_seed",
    "split_users",
]


def load_interaction_log(data_args: RecDataArguments) -> InteractionLog:
    """The `InteractionLog` that `data_args` names (your own files, or a registered dataset).

    Example:
    ```python
    >>> load_interaction_log(RecDataArguments()).num_users  # doctest: +SKIP
    943
    ```
    """
    if data_args.interactions:
        return load_interactions(
            data_args.interactions,
            data_args.items,
            user_col=data_args.user_col,
            item_col=data_args.item_col,
            time_col=data_args.time_col or None,
            title_col=data_args.title_col,
            name=Path(data_args.interactions).stem,
        )
    kwargs = {"data_dir": data_args.data_dir} if data_args.data_dir else {}
    return load_dataset_by_name(data_args.dataset_name, **kwargs)


PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def load_preference_data(name: str):
    """A preference dataset as a `DatasetDict` with a "train" split, as TRL's scripts load one.

    `name` is a `save_to_disk` folder (what `dmpo-trl prepare` writes), a JSON/JSONL/parquet file, a folder of such
    files (`train.jsonl`, `validation.jsonl`, ...), or a Hub id. Its rows need `prompt`, `chosen` and `rejected` (a
    response or a list of K), plain text or conversational.

    Example:
    ```python
    >>> data = load_preference_data("data/ml100k")  # doctest: +SKIP
    >>> data["train"].column_names  # doctest: +SKIP
    ['prompt', 'chosen', 'rejected', 'user', 'target']
    ```
    """
    path = Path(name)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        data = load_from_disk(str(path))
    elif path.is_dir():
        builder, files = _data_files(path)
        data = load_dataset(builder, data_files=files)
    elif path.is_file():
        builder = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "json"
        data = load_dataset(builder, data_files=str(path))
    elif path.suffix or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such file or folder: {name}")
    else:
        try:
            data = load_dataset(name)
        except Exception as exc:  # offline, no such repository, gated, ...: all the user's to fix
            raise ValueError(
                f"{name!r} is not a registered dataset ({', '.join(sorted(DATASETS))}), a file or a folder, "
                f"and loading it from the Hub failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    if "train" not in data:
        raise ValueError(f"{name}: no 'train' split (found {sorted(data)})")
    for split, dataset in data.items():
        missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name} [{split}]: missing column(s) {missing} (found {dataset.column_names})")
    return data


_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "eval": "validation",
    "test": "test",
}
_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".pq": "parquet"}


def _data_files(folder: Path) -> tuple[str, dict[str, list[str]]]:
    """(builder, data_files) for a folder of JSON/JSONL or parquet files; a file's stem names its split (train,
    validation, test), any other file is training data. `split.json` is not data."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in _DATA_SUFFIXES and f.name != SPLIT_FILE)
    if not files:
        raise FileNotFoundError(f"{folder}: neither a save_to_disk dataset nor a folder of JSON/JSONL/parquet files")
    builders = {_DATA_SUFFIXES[f.suffix.lower()] for f in files}
    if len(builders) > 1:
        raise ValueError(f"{folder}: mixes JSON and parquet files; keep one format")
    groups: dict[str, list[str]] = {}
    for file in files:
        groups.setdefault(_SPLIT_NAMES.get(file.stem.lower(), "train"), []).append(str(file))
    return builders.pop(), groups


def data_seed(data_args: RecDataArguments, seed: int) -> int:
    """The seed of the user split, candidates and negatives: `data_args.split_seed`, else the training `seed`."""
    return data_args.split_seed if data_args.split_seed is not None else seed


def split_users(data_args: RecDataArguments, log: InteractionLog, seed: int = 0) -> FewShotSplit:
    """User-disjoint train/valid/test examples (`few_shot_split`), seeded by `split_seed` or else `seed`: each
    training user gives `targets_per_user` rows (0: all), then at most `num_train_rows` rows are kept.

    Example:
    ```python
    >>> log = InteractionLog({f"u{i}": list("abcdefg") for i in range(9)}, {i: i for i in "abcdefg"})
    >>> split = split_users(RecDataArguments(num_train_users=4, num_valid_users=0, num_test_users=3), log)
    >>> len(split.train), len(split.test)
    (4, 3)
    ```
    """
    split = few_shot_split(
        log,
        num_train_users=data_args.num_train_users,
        num_valid_users=data_args.num_valid_users,
        num_test_users=data_args.num_test_users,
        max_history=data_args.max_history,
        min_history=data_args.min_history,
        seed=data_seed(data_args, seed),
        targets_per_user=data_args.targets_per_user or None,
    )
    if data_args.num_train_rows is not None:
        split = replace(
            split, train=sample_examples(split.train, data_args.num_train_rows, data_seed(data_args, seed))
        )
    return split


def build_datasets(
    data_args: RecDataArguments,
    log: InteractionLog,
    split: FewShotSplit,
    conversational: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Preference datasets with K rejected titles: "train" (and "validation" when there are valid users).

    Example:
    ```python
    >>> log = InteractionLog({f"u{i}": list("abcdefg") for i in range(9)}, {i: i.upper() for i in "abcdefghijkl"})
    >>> args = RecDataArguments(num_train_users=4, num_valid_users=0, num_test_users=3, num_negatives=2)
    >>> data = build_datasets(args, log, split_users(args, log))
    >>> len(data["train"]), len(data["train"][0]["rejected"])
    (4, 2)
    ```
    """
    build = dict(
        num_negatives=data_args.num_negatives,
        prompt_style=data_args.template,
        num_candidates=data_args.num_candidates,
        negative_strategy=data_args.candidate_strategy,
        conversational=conversational,
        seed=data_seed(data_args, seed),
    )
    parts = {"train": split.train, **({"validation": split.valid} if split.valid else {})}
    negatives = dict.fromkeys(parts)
    if data_args.negative_strategy == "retriever":
        negatives = retrieved_negatives(data_args, log, split, parts, data_seed(data_args, seed))
    return {
        name: build_preference_dataset(log, examples, negatives=negatives[name], **build)
        for name, examples in parts.items()
    }


def retrieved_negatives(
    data_args: RecDataArguments,
    log: InteractionLog,
    split: FewShotSplit,
    parts: dict[str, list[UserExample]],
    seed: int,
) -> dict[str, list[list[str]]]:
    """`--negative_strategy retriever`: each part's negatives from `data_args.negative_retriever`'s top
    `retriever_pool`, the retriever fitted once without any training, validation or test target."""
    retriever = make_retriever(data_args.negative_retriever, seed=seed)
    retriever.fit(log, [*split.train, *split.valid, *split.test])
    return {
        name: retriever_negatives(
            retriever, log, examples, data_args.num_negatives, data_args.retriever_pool, seed=seed, fit=False
        )
        for name, examples in parts.items()
    }


@dataclass
class RecipeData:
    """What the recipe trains on and ranks: datasets (built later for a log), the test users and their candidates."""

    data_args: RecDataArguments  # the settings that render the ranking prompts
    log: InteractionLog | None
    split: FewShotSplit | None
    preference: Any = None  # a DatasetDict when training on a preference dataset
    record: dict[str, Any] | None = None  # the split.json of a prepared preference dataset
    test: list[UserExample] = field(default_factory=list)
    candidates: list[list[str]] | None = None


def load_recipe_data(data_args: RecDataArguments, seed: int) -> RecipeData:
    """Load the interaction log and split its users, or load a preference dataset (and the split saved beside it)."""
    if data_args.is_interaction_log:
        log = load_interaction_log(data_args)
        split = split_users(data_args, log, seed)
        return RecipeData(data_args, log, split, test=list(split.test))
    preference = load_preference_data(data_args.dataset_name)
    saved = Path(data_args.dataset_name) / SPLIT_FILE
    if not saved.is_file():
        return RecipeData(data_args, None, None, preference)
    record = load_split(saved)
    if not record["test"]:  # prepared with no test users: nothing to rank
        return RecipeData(data_args, None, None, preference, record)
    saved_args = split_data_arguments(record)
    log = load_interaction_log(saved_args)
    test, candidates = saved_test_users(record, log, saved)
    return RecipeData(saved_args, log, None, preference, record, test, candidates)
