"""The end-to-end recipe, in reusable steps: interaction log -> few-shot users -> preference data -> model (full,
LoRA or 4-bit QLoRA) -> zero-shot ranking -> DMPO training -> ranking again.

`dmpo-trl train`, `dmpo-trl demo`, the example notebooks and the benchmarks all call these functions, configured by
three dataclasses that `trl.TrlParser` turns into command-line flags or reads from a YAML file:

- `RecDataArguments`: which log, how many users, K negatives, candidates per prompt, prompt style;
- `RecipeArguments`: what to evaluate (before/after, baselines), wandb table size, what to save;
- plus TRL's own `DMPOConfig` (training) and `dmpo_trl.models.RecModelConfig` (a `trl.ModelConfig`: model id or
  path, `use_peft`, `lora_*`, `load_in_4bit`).

Example:
```python
>>> from dmpo_trl.recipe import demo_arguments, run_recipe
>>> data_args, training_args, model_args, recipe_args = demo_arguments()
>>> data_args.num_candidates, data_args.num_negatives, model_args.use_peft
(10, 4, True)
>>> result = run_recipe(data_args, training_args, model_args, recipe_args)  # doctest: +SKIP
>>> print(result.table())  # doctest: +SKIP
```
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .cli import UsageError, user_inputs
from .config import MULTI_NEGATIVE_LOSSES, DMPOConfig
from .data import (
    STRATEGIES,
    FewShotSplit,
    InteractionLog,
    UserExample,
    build_preference_dataset,
    example_at,
    few_shot_split,
    load_dataset_by_name,
    load_interactions,
    registered_name,
    sample_examples,
)
from .data.prompts import DEFAULT_ITEM_NOUN, builtin_template, item_nouns, resolve_template, uses_candidates
from .journal import atomic_write_text
from .mining import DEFAULT_POOL_SIZE
from .models import RecModelConfig, name_base_model_by_hub_id
from .recipe_cli import EVALUATION_BASELINES


logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_METRICS",
    "RecDataArguments",
    "RecipeArguments",
    "RecipeResult",
    "SPLIT_FILE",
    "build_datasets",
    "check_output_path",
    "check_split",
    "demo_arguments",
    "evaluate_models",
    "load_interaction_log",
    "load_preference_data",
    "load_split",
    "parse_recipe_arguments",
    "recipe_parser",
    "run_recipe",
    "split_users",
    "summary_table",
    "write_split",
]

TRAINING_NEGATIVES = (*STRATEGIES, "model")
"""`negative_strategy` values: the drawn ones (also used for the evaluation candidates), and "model" (mined)."""

DEMO_METRICS = ("hit_ratio@1", "ndcg@5")
"""The metrics of the before/after table."""


@dataclass
class RecDataArguments:
    """Which interactions, which users, and how prompts and negatives are built (`dmpo_trl.data`).

    Example:
    ```python
    >>> RecDataArguments(num_train_users=64, num_candidates=10).num_negatives
    4
    ```
    """

    dataset_name: str = field(
        default="movielens-100k",
        metadata={
            "help": "A registered interaction log (movielens-100k, movielens-1m, or one added with register_dataset), "
            "or a preference dataset with prompt/chosen/rejected: a `dmpo-trl prepare` or save_to_disk folder, "
            "JSON/JSONL/parquet files or a folder of them, or a Hub id.",
            "aliases": ["--dataset"],
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with the dataset's files (GroupLens or RecBole layout)."}
    )
    interactions: str | None = field(
        default=None,
        metadata={"help": "Your own interaction file (CSV/TSV/parquet: user_id,item_id,timestamp); needs --items."},
    )
    items: str | None = field(default=None, metadata={"help": "Your own item file (item_id,title)."})
    user_col: str = field(default="user_id", metadata={"help": "User column of --interactions."})
    item_col: str = field(default="item_id", metadata={"help": "Item column of --interactions and --items."})
    time_col: str = field(
        default="timestamp",
        metadata={"help": "Time column of --interactions (numbers or dates); empty: keep the file's order."},
    )
    title_col: str = field(default="title", metadata={"help": "Title column of --items."})
    item_noun: str = field(
        default=DEFAULT_ITEM_NOUN,
        metadata={"help": "What the built-in prompts call the items, plural ('books'; 'person/people' if irregular)."},
    )
    num_train_users: int = field(default=100, metadata={"help": "Users whose latest items are training rows."})
    targets_per_user: int = field(
        default=1,
        metadata={
            "help": "Training rows per training user: their latest items with at least min_history items before "
            "them, each a target (1: the last item; 0: every such item). Valid and test users give one row each."
        },
    )
    num_train_rows: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many training rows (a seeded sample, nested across sizes)."},
    )
    num_valid_users: int = field(
        default=50,
        metadata={
            "help": "Validation users: the trainer's preference eval set (eval_strategy), and the users the "
            "popularity prior's weight is chosen on (0: no prior)."
        },
    )
    num_test_users: int = field(default=500, metadata={"help": "Users for the ranking evaluation."})
    num_negatives: int = field(default=4, metadata={"help": "K rejected titles per training row."})
    num_candidates: int = field(
        default=20, metadata={"help": "Titles listed per prompt (target + negatives), also for evaluation."}
    )
    prompt_style: str | None = field(
        default=None,
        metadata={
            "help": "'history' (the user's items, then the question), 'candidates' (the S-DPO prompt that also lists "
            "the candidates), or a template with {history} and optionally {candidates}. Default: 'history' for "
            "likelihood ranking, the best measured; 'candidates' for generation mode."
        },
    )
    negative_strategy: str = field(
        default="uniform",
        metadata={
            "help": "How candidates/negatives are drawn; 'model': training negatives mined each epoch from the model "
            "being trained (the highest-scored wrong items of a uniform pool, see dmpo_trl.mining), evaluation "
            "candidates uniform.",
            "choices": list(TRAINING_NEGATIVES),
        },
    )
    model_negative_fraction: float = field(
        default=1.0,
        metadata={
            "help": "With --negative_strategy model: the share of the K negatives mined from the model (rounded "
            "half up); the rest are drawn uniformly each epoch."
        },
    )
    mining_pool_size: int = field(
        default=DEFAULT_POOL_SIZE,
        metadata={"help": "With --negative_strategy model: uniform items scored per training row and epoch."},
    )
    conversational: bool | None = field(
        default=None,
        metadata={"help": "Chat-format prompts (message lists); default: when the tokenizer has a chat template."},
    )
    max_history: int = field(default=10, metadata={"help": "History items shown per prompt."})
    min_history: int = field(default=5, metadata={"help": "Skip users with fewer items before their last one."})
    split_seed: int | None = field(
        default=0,
        metadata={
            "help": "Seed of the user split, candidate lists and negatives (None: the training --seed). The same "
            "default in prepare, train and evaluate, so they hold out the same test users."
        },
    )

    def __post_init__(self):
        item_nouns(self.item_noun)
        counts = {name: getattr(self, name) for name in ("num_train_users", "num_valid_users", "num_test_users")}
        if min(counts.values()) < 0:
            raise ValueError(f"User counts must be >= 0, got {counts}")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (the target and a negative), got {self.num_candidates}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.negative_strategy not in TRAINING_NEGATIVES:
            raise ValueError(f"Unknown negative_strategy {self.negative_strategy!r}; choose from {TRAINING_NEGATIVES}")
        if not 0.0 <= self.model_negative_fraction <= 1.0:
            raise ValueError(f"model_negative_fraction must be between 0 and 1, got {self.model_negative_fraction}")
        if self.mining_pool_size < 1:
            raise ValueError(f"mining_pool_size must be >= 1, got {self.mining_pool_size}")
        if self.targets_per_user < 0:
            raise ValueError(f"targets_per_user must be >= 0 (0: every position), got {self.targets_per_user}")
        if self.num_train_rows is not None and self.num_train_rows < 1:
            raise ValueError(f"num_train_rows must be >= 1 (or unset: all rows), got {self.num_train_rows}")
        if self.interactions and not self.items:
            raise ValueError("--interactions needs --items (the file with item_id and title)")
        self._check_negatives(self.prompt_style or "history")

    def _check_negatives(self, prompt_style: str) -> None:
        with_candidates = uses_candidates(resolve_template(prompt_style))
        if with_candidates and self.negative_strategy == "model":
            raise ValueError(
                "--negative_strategy model needs a prompt without a candidate list (prompt_style 'history'): "
                "the negatives are mined after the prompt is fixed"
            )
        if with_candidates and self.num_negatives > self.num_candidates - 1:
            raise ValueError(
                f"num_negatives={self.num_negatives} must be at most num_candidates - 1 = {self.num_candidates - 1}: "
                "the negatives are drawn from the candidates the prompt lists"
            )

    def for_mode(self, ranking_mode: str = "likelihood") -> RecDataArguments:
        """These arguments with `prompt_style` set: as given, else "candidates" for generation, "history" otherwise.

        Example:
        ```python
        >>> args = RecDataArguments()
        >>> args.for_mode("likelihood").prompt_style, args.for_mode("generation").prompt_style
        ('history', 'candidates')
        ```
        """
        style = self.prompt_style or ("candidates" if ranking_mode == "generation" else "history")
        self._check_negatives(style)
        return replace(self, prompt_style=style)

    @property
    def candidate_strategy(self) -> str:
        """How evaluation candidates (and candidate-prompt lists) are drawn: `negative_strategy`, or "uniform" when
        the training negatives are mined from the model.

        Example:
        ```python
        >>> RecDataArguments(negative_strategy="model").candidate_strategy
        'uniform'
        ```
        """
        return "uniform" if self.negative_strategy == "model" else self.negative_strategy

    @property
    def template(self) -> str:
        """The prompt template to render: `prompt_style`, with a built-in one speaking of `item_noun`."""
        style = self.prompt_style or "history"
        return style if self.item_noun == DEFAULT_ITEM_NOUN else builtin_template(style, self.item_noun)

    @property
    def is_interaction_log(self) -> bool:
        """Whether the data is an interaction log (own files or a registered name), not a preference dataset."""
        return bool(self.interactions) or registered_name(self.dataset_name) is not None


@dataclass
class RecipeArguments:
    """What the recipe evaluates, logs and saves around training.

    Example:
    ```python
    >>> RecipeArguments(baselines=["random"]).evaluate_before
    True
    ```
    """

    evaluate_before: bool = field(default=True, metadata={"help": "Rank the test users before training."})
    evaluate_after: bool = field(default=True, metadata={"help": "Rank the test users after training."})
    baselines: list[str] = field(
        default_factory=list,
        metadata={"help": "Baselines ranked on the same candidates: random, popular (none by default)."},
    )
    ranking_mode: str = field(
        default="likelihood",
        metadata={"help": "How the model ranks (see dmpo_trl.evaluation).", "choices": ["likelihood", "generation"]},
    )
    ranking_batch_size: int = field(default=20, metadata={"help": "Sequences per forward when ranking."})
    ranking_normalize: bool = field(
        default=False, metadata={"help": "Rank by mean log-prob per token instead of the sum."}
    )
    popularity_prior: float | None = field(
        default=None,
        metadata={
            "help": "Also rank the trained model by log-likelihood + this x log(1 + the item's interaction count), "
            "and save the weight in ranker.json. Default: chosen on the validation users (--num_valid_users) from "
            "dmpo_trl.prior.PRIOR_WEIGHTS by their NDCG@5 under uniform and popularity-matched candidates, or 0 "
            "(the model alone) without validation users."
        },
    )
    num_logged_examples: int = field(
        default=16, metadata={"help": "Users per model in the wandb table of example recommendations."}
    )
    save_final_model: bool = field(
        default=True, metadata={"help": "Save the trained model (or adapter) and tokenizer to output_dir."}
    )
    results_file: str | None = field(
        default="ranking_results.json",
        metadata={"help": "Ranking results JSON, relative to output_dir (empty: do not write)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Progress bars while ranking."})

    def __post_init__(self):
        unknown = set(self.baselines) - set(EVALUATION_BASELINES)
        if unknown:
            raise ValueError(f"Unknown baselines {sorted(unknown)}; choose from {list(EVALUATION_BASELINES)}")
        if self.ranking_batch_size < 1:
            raise ValueError(f"ranking_batch_size must be >= 1, got {self.ranking_batch_size}")
        if self.popularity_prior is not None and self.popularity_prior < 0:
            raise ValueError(f"popularity_prior must be >= 0, got {self.popularity_prior}")
        if self.popularity_prior and self.ranking_mode != "likelihood":
            raise ValueError(f"The popularity prior ranks by likelihood, not ranking_mode={self.ranking_mode!r}")


@dataclass
class RecipeResult:
    """What `run_recipe` returns: ranking results by name, training history, timings, and the trainer."""

    results: dict[str, dict[str, Any]]
    log_history: list[dict[str, Any]]
    timings: dict[str, float]
    output_dir: str | None = None
    trainer: Any = field(default=None, repr=False)
    data_args: RecDataArguments | None = None  # the settings the test users were ranked with

    def table(self, metrics: Sequence[str] = DEMO_METRICS) -> str:
        """The results as a plain-text table (`summary_table`)."""
        return summary_table(self.results, metrics)

    def metric(self, name: str, key: str) -> float:
        """One metric of one named result, e.g. `result.metric("dmpo", "hit_ratio@1")`."""
        return self.results[name]["metrics"][key]


# --- steps ------------------------------------------------------------------------------------------------------


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
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

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
                f"{name!r} is not a registered dataset ({', '.join(sorted(_registered()))}), a file or a folder, "
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


def _registered() -> list[str]:
    from .data import DATASETS

    return list(DATASETS)


def _seed(data_args: RecDataArguments, seed: int) -> int:
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
        seed=_seed(data_args, seed),
        targets_per_user=data_args.targets_per_user or None,
    )
    if data_args.num_train_rows is not None:
        split = replace(split, train=sample_examples(split.train, data_args.num_train_rows, _seed(data_args, seed)))
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
        seed=_seed(data_args, seed),
    )
    datasets = {"train": build_preference_dataset(log, split.train, **build)}
    if split.valid:
        datasets["validation"] = build_preference_dataset(log, split.valid, **build)
    return datasets


def evaluate_models(
    models: dict[str, Any],
    tokenizer,
    log: InteractionLog,
    examples: Sequence[UserExample],
    data_args: RecDataArguments,
    recipe_args: RecipeArguments | None = None,
    conversational: bool = False,
    seed: int = 0,
    candidates: Sequence[Sequence[str]] | None = None,
    negative_strategy: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Rank `examples` with each named model (and `recipe_args.baselines`) on the same candidate lists.

    `candidates` (one list per example) replaces the lists drawn with the split seed, e.g. a saved `split.json`'s;
    `negative_strategy` draws them another way than `data_args.candidate_strategy`.

    Example:
    ```python
    >>> results = evaluate_models({"zero-shot": model}, tokenizer, log, split.test, data_args)  # doctest: +SKIP
    >>> results["zero-shot"]["metrics"]["ndcg@5"]  # doctest: +SKIP
    0.31
    ```
    """
    from .evaluation import evaluate_baseline, evaluate_ranking

    recipe_args = recipe_args or RecipeArguments()
    seed = _seed(data_args, seed)
    common = dict(
        num_candidates=data_args.num_candidates,
        seed=seed,
        negative_strategy=negative_strategy or data_args.candidate_strategy,
        candidates=candidates,
    )
    results = {}
    for baseline in recipe_args.baselines:
        results[baseline] = evaluate_baseline(baseline, examples, log, **common)
    for name, model in models.items():
        results[name] = evaluate_ranking(
            model,
            tokenizer,
            examples,
            log,
            prompt_style=data_args.template,
            conversational=conversational,
            mode=recipe_args.ranking_mode,
            normalize=recipe_args.ranking_normalize,
            batch_size=recipe_args.ranking_batch_size,
            progress=recipe_args.show_progress,
            model_name=name,
            **common,
        )
    return results


def summary_table(results: dict[str, dict[str, Any]], metrics: Sequence[str] = DEMO_METRICS) -> str:
    """A plain-text table of the chosen metrics, one row per named result.

    Example:
    ```python
    >>> print(summary_table({"zero-shot": {"metrics": {"hit_ratio@1": 0.1, "ndcg@5": 0.2, "mrr": 0.3}}}))
    model      hit_ratio@1  ndcg@5
    zero-shot  0.1000       0.2000
    ```
    """
    from .evaluation import format_table

    chosen = {
        name: {"metrics": {key: float(result["metrics"][key]) for key in metrics if key in result["metrics"]}}
        for name, result in results.items()
    }
    return format_table(chosen)


def trained_name(training_args: DMPOConfig, model_args: RecModelConfig) -> str:
    """The name of the trained model in tables: the loss types, plus the setup ("dmpo+lora", "sdpo+qlora", ...)."""
    loss = training_args.loss_type
    name = "+".join([loss] if isinstance(loss, str) else loss)
    if model_args.load_in_4bit:
        return f"{name} (qlora)"
    return f"{name} (lora)" if model_args.use_peft else name


# --- the saved split ----------------------------------------------------------------------------------------------


SPLIT_FILE = "split.json"
"""Written to `output_dir` by `run_recipe` (and to its folder by `dmpo-trl prepare`): who trained, who is tested."""


def split_record(
    data_args: RecDataArguments, log: InteractionLog, split: FewShotSplit, seed: int, conversational: bool
) -> dict[str, Any]:
    """The JSON form of a split: dataset, seed, user ids under "train", "valid", "test", each test user's candidate
    list and target, and the data settings (`data`, `conversational`) that render and rank them again.

    Example:
    ```python
    >>> log = InteractionLog({f"u{i}": list("abcdefg") for i in range(9)}, {i: i for i in "abcdefghijkl"})
    >>> args = RecDataArguments(num_train_users=4, num_valid_users=0, num_test_users=3, num_candidates=4).for_mode()
    >>> record = split_record(args, log, split_users(args, log), 0, False)
    >>> len(record["train"]), len(record["test"]), len(record["candidates"][record["test"][0]])
    (4, 3, 4)
    ```
    """
    from .data import candidate_sets

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


def data_inputs(data_args: RecDataArguments) -> dict[str, str]:
    """The local files and folders `data_args` reads, each with the flag that names it (for `check_output_path`)."""
    inputs = {data_args.interactions: "--interactions", data_args.items: "--items", data_args.data_dir: "--data_dir"}
    if not data_args.is_interaction_log and Path(data_args.dataset_name).exists():
        inputs[data_args.dataset_name] = "--dataset_name"
    return {str(path): flag for path, flag in inputs.items() if path}


def check_output_path(output: str | Path, inputs: Mapping[str | Path, str], flag: str, folder: bool = False) -> None:
    """`ValueError` when a command would write `output` (a file, or a folder with `folder=True`; `flag` names it)
    over one of its `inputs` (path -> what it is), comparing resolved real paths: the same path, an existing file
    inside an input folder, or an output folder that holds an input file. Also when `output` is a folder where a
    file is expected, or a file where a folder is.

    Example:
    ```python
    >>> try:
    ...     check_output_path("a.csv", {"a.csv": "--interactions"}, "--results_file")
    ... except ValueError as exc:
    ...     print(exc)
    --results_file a.csv would write over --interactions, which this command reads: write elsewhere
    ```
    """
    target = Path(output).resolve()
    if folder and target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {output}: a file, not a folder")
    if not folder and target.is_dir():
        raise ValueError(f"{flag} {output}: a folder; name the file to write")
    for given, what in inputs.items():
        source = Path(given).resolve()
        named = what if str(given) == str(output) else f"{what} {given}"
        if target == source or (source.is_dir() and target.is_relative_to(source) and target.exists()):
            raise ValueError(f"{flag} {output} would write over {named}, which this command reads: write elsewhere")
        if folder and target == source.parent:
            raise ValueError(f"{flag} {output} holds {named}, which this command reads: write elsewhere")


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


def resolve_resume(training_args: DMPOConfig) -> str | None:
    """`resume_from_checkpoint` as a checkpoint folder: a path as given, or "true" for the last one in output_dir."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false", "no", "0"):
        return None
    if str(value).lower() in ("true", "yes", "1"):
        from transformers.trainer_utils import get_last_checkpoint

        folder = training_args.output_dir
        last = get_last_checkpoint(folder) if folder and Path(folder).is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint true: no checkpoint-* folder in output_dir {folder!r}")
        return last
    if not Path(value).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder {value}")
    return str(value)


def run_recipe(
    data_args: RecDataArguments,
    training_args: DMPOConfig,
    model_args: RecModelConfig | None = None,
    recipe_args: RecipeArguments | None = None,
    verbose: bool = True,
) -> RecipeResult:
    """Build the data, load the model, rank before training, train with `DMPOTrainer`, rank after.

    `data_args.dataset_name` names an interaction log (split into users here) or a preference dataset (trained as
    it is; ranked when a `split.json` from `dmpo-trl prepare` lies beside it). `output_dir` receives `split.json`
    (before anything else is saved there), the model or adapter (`recipe_args.save_final_model`) and
    `<results_file>`. `resume_from_checkpoint` (a folder, or "true" for the last one in `output_dir`) continues a
    stopped run. With `report_to` including "wandb", the trainer logs its metrics and this adds the ranking metrics
    and a table of example recommendations (`dmpo_trl.tracking`), then closes the run.

    Example:
    ```python
    >>> result = run_recipe(*demo_arguments(num_train_users=8, num_test_users=10, max_steps=2))  # doctest: +SKIP
    >>> result.metric("dmpo (lora)", "hit_ratio@1")  # doctest: +SKIP
    0.2
    ```
    """
    import torch

    from .data import candidate_sets
    from .evaluation import baseline_popularity, save_result
    from .mining import MinedNegativesTraining, NegativeMiner
    from .model_card import use_model_card
    from .models import ModelPackageMissing, adapters_to_dtype, load_model_for_training, model_origin
    from .prior import PRIOR_REGIMES, choose_popularity_prior, result_with_prior
    from .provenance import provenance
    from .ranking import PromptSettings, save_ranker_config
    from .rows import check_row
    from .tracking import log_ranking_to_wandb, wandb_requested
    from .trainer import DMPOTrainer

    model_args = model_args or RecModelConfig()
    recipe_args = recipe_args or RecipeArguments()
    if wandb_requested(training_args.report_to):
        os.environ.setdefault("WANDB_PROJECT", "dmpo-trl")  # the trainer's WandbCallback reads it too
    say = print if verbose else logger.info
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    clock = time.perf_counter()
    with user_inputs():
        data_args = data_args.for_mode(recipe_args.ranking_mode)
        if training_args.output_dir:
            check_output_path(training_args.output_dir, data_inputs(data_args), "--output_dir", folder=True)
        check_push_to_hub(training_args)
        resume = resolve_resume(training_args)
        data = load_recipe_data(data_args, training_args.seed)
    log, split, seed = data.log, data.split, _seed(data.data_args, training_args.seed)
    clock = lap("data_s", clock)
    if split is not None:
        train_users = len({e.user for e in split.train})
        rows = f" ({len(split.train)} rows)" if len(split.train) != train_users else ""
        negatives = "mined from the model each epoch" if data_args.negative_strategy == "model" else "negatives"
        say(
            f"Data: {log.name}, {train_users} train{rows} / {len(split.valid)} valid / {len(split.test)} test users, "
            f"{data_args.num_candidates} candidates per prompt, K={data_args.num_negatives} {negatives}"
        )
    else:
        sizes = ", ".join(f"{name}: {len(rows)} rows" for name, rows in data.preference.items())
        ranked = f"{len(data.test)} test users from its split.json" if data.record else "no test users to rank"
        say(
            f"Data: preference dataset {data_args.dataset_name} ({sizes}), trained as it is (the flags that build "
            f"rows from an interaction log do not apply); {ranked}"
        )

    with user_inputs(OSError, ModelPackageMissing):
        remote_code = {"trust_remote_code": True} if training_args.trust_remote_code else {}
        model, tokenizer, peft_config = load_model_for_training(
            model_args, training_args.gradient_checkpointing, **remote_code
        )
    if data.preference is not None:
        with user_inputs():  # the first row decides (TRL's is_conversational may look at a list of K responses)
            conversational, _ = check_row(data.preference["train"][0], 0)
        if data_args.conversational is not None and data_args.conversational != conversational:
            raise UsageError(
                f"--conversational {data_args.conversational}, but {data_args.dataset_name} holds "
                f"{'conversational' if conversational else 'plain-text'} rows"
            )
        if data.record is not None and data.record.get("conversational", conversational) != conversational:
            raise UsageError(f"{data_args.dataset_name}: its rows and its split.json disagree on the chat format")
        datasets = {"train": data.preference["train"]}
        if "validation" in data.preference:
            datasets["validation"] = data.preference["validation"]
    else:
        conversational = data_args.conversational
        if conversational is None:
            conversational = getattr(tokenizer, "chat_template", None) is not None
        with user_inputs():
            datasets = build_datasets(data_args, log, split, conversational, training_args.seed)
            data.candidates = [
                c
                for c, _ in candidate_sets(
                    log, split.test, data_args.num_candidates, seed, data_args.candidate_strategy
                )
            ]
    clock = lap("model_s", clock)
    setup = "QLoRA (4-bit NF4)" if model_args.load_in_4bit else "LoRA" if model_args.use_peft else "full finetuning"
    say(f"Model: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'}, {setup}")

    output_dir = training_args.output_dir
    if output_dir and training_args.should_save:  # before any checkpoint or model is saved (and pushed) there
        if data.record is not None:
            record = {**data.record, "preference_data": str(Path(data_args.dataset_name).resolve())}
        elif split is not None:
            record = split_record(data_args, log, split, seed, conversational)
        else:
            users = datasets["train"]["user"] if "user" in datasets["train"].column_names else []
            record = {
                "dataset": data_args.dataset_name,
                "seed": None,
                "train": sorted(set(users)),
                "valid": [],
                "test": [],
                "candidates": {},
                "data": asdict(data_args),
                "conversational": conversational,
            }
        write_split(record, output_dir)

    mined = None
    with user_inputs():
        if data_args.negative_strategy == "model" and split is not None:
            if resume:
                raise ValueError("--resume_from_checkpoint does not resume training with --negative_strategy model")
            miner = NegativeMiner(
                log,
                data_args.num_negatives,
                data_args.model_negative_fraction,
                data_args.mining_pool_size,
                prompt_style=data_args.template,
                conversational=conversational,
                seed=seed,
                normalize=recipe_args.ranking_normalize,
            )
            mined = MinedNegativesTraining(
                model,
                miner,
                split.train,
                training_args,
                eval_dataset=datasets.get("validation"),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
            trainer = mined.trainer
        else:
            trainer = DMPOTrainer(
                model,
                args=training_args,
                train_dataset=datasets["train"],
                eval_dataset=datasets.get("validation"),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
    quantized = getattr(trainer.model, "is_loaded_in_4bit", False) or getattr(
        trainer.model, "is_loaded_in_8bit", False
    )
    if quantized:
        config = getattr(model.config, "quantization_config", None)
        compute_dtype = getattr(config, "bnb_4bit_compute_dtype", None)
        if compute_dtype != torch.bfloat16 and str(compute_dtype) != "bfloat16":
            adapters_to_dtype(trainer.model, torch.float32)

    name = trained_name(training_args, model_args)
    results: dict[str, dict[str, Any]] = {}
    ranking = dict(conversational=conversational, seed=training_args.seed, candidates=data.candidates)
    if log is None and (recipe_args.evaluate_before or recipe_args.evaluate_after or recipe_args.baselines):
        say("Ranking skipped: the preference dataset has no split.json (from `dmpo-trl prepare`) naming test users")
    elif recipe_args.evaluate_before or recipe_args.baselines:
        say(f"Ranking {len(data.test)} test users before training")
        models = {"zero-shot": trainer.model} if recipe_args.evaluate_before else {}
        results.update(evaluate_models(models, tokenizer, log, data.test, data.data_args, recipe_args, **ranking))
        clock = lap("evaluate_before_s", clock)
        if verbose and results:
            print(summary_table(results))

    say(f"Training ({name}) on {len(datasets['train'])} rows" + (f", resuming from {resume}" if resume else ""))
    if mined is not None:
        mined.train()
    else:
        trainer.train(resume_from_checkpoint=resume)
    clock = lap("train_s", clock)

    def rank_trained(examples: Sequence[UserExample], **options) -> dict[str, Any]:
        only = replace(recipe_args, baselines=[])
        return evaluate_models({name: trainer.model}, tokenizer, log, examples, data.data_args, only, **options)[name]

    if recipe_args.evaluate_after and log is not None:
        say(f"Ranking {len(data.test)} test users after training")
        results[name] = rank_trained(data.test, **ranking)
        clock = lap("evaluate_after_s", clock)

    prior, prior_curve = recipe_args.popularity_prior or 0.0, None
    choose = recipe_args.popularity_prior is None and recipe_args.ranking_mode == "likelihood"
    if choose and split is not None and split.valid:
        say(f"Choosing the popularity prior's weight on {len(split.valid)} validation users")
        validation = [  # candidates drawn for the validation users, under each regime
            rank_trained(split.valid, conversational=conversational, seed=training_args.seed, negative_strategy=regime)
            for regime in PRIOR_REGIMES
        ]
        prior, prior_curve = choose_popularity_prior(validation, log, split.valid)
        without = prior_curve.get(0.0, float("nan"))
        say(f"Popularity prior: weight {prior:g}, validation NDCG@5 {prior_curve[prior]:.4f} ({without:.4f} without)")
        clock = lap("choose_prior_s", clock)
    if prior_curve is not None and name in results:
        results[name]["settings"]["popularity_prior_validation"] = {
            "chosen": prior,
            "users": len(split.valid),
            "regimes": list(PRIOR_REGIMES),
            "ndcg@5_by_weight": {f"{w:g}": v for w, v in prior_curve.items()},
        }
    if prior and name in results:
        results[f"{name} + popularity prior"] = result_with_prior(results[name], log, data.test, prior)

    # The results, ranker.json and the card are written before the model: push_to_hub runs inside save_model.
    origin = model_origin(model_args.model_name_or_path, getattr(model_args, "gguf_file", None))
    settings = json.loads(json.dumps(run_settings(data_args, training_args, model_args, recipe_args), default=str))
    if recipe_args.results_file and output_dir and results:
        record = {"results": results, "timings": timings, "settings": settings, "provenance": provenance(origin)}
        save_result(record, Path(output_dir) / recipe_args.results_file)
    if recipe_args.save_final_model and output_dir:
        if log is not None:  # a run on a preference dataset has no catalogue to rank from
            prompt = PromptSettings(
                prompt_style=data_args.template,
                conversational=conversational,
                normalize=recipe_args.ranking_normalize,
                max_history=data_args.max_history,
                batch_size=recipe_args.ranking_batch_size,
                popularity_prior=prior,
            )
            counts = baseline_popularity(log, data.test) if prior else None  # the counts the test ranking used
            save_ranker_config(output_dir, log.titles, prompt, model_args, origin, log.name, counts)
        card = dict(base_model=origin, results=results, settings=settings, adapter=bool(peft_config))
        use_model_card(
            trainer, output_dir, model_name=Path(output_dir).name, results_file=recipe_args.results_file, **card
        )
        if log is not None:  # ranker.json records the exact base (the GGUF) for Ranker and evaluate to load
            name_base_model_by_hub_id(
                trainer.accelerator.unwrap_model(trainer.model), model_args.model_name_or_path, model_args.gguf_file
            )
        with warnings.catch_warnings():  # peft looks the Hub id up to see if embeddings were resized (never, here)
            warnings.filterwarnings("ignore", "(Could not find a config file in|Unable to fetch remote file)")
            trainer.save_model(output_dir)
        trainer.create_model_card()  # replaces the blank card peft writes with the model
    if wandb_requested(training_args.report_to) and results:
        config = {"data": asdict(data_args), "recipe": asdict(recipe_args), "model": _jsonable(asdict(model_args))}
        log_ranking_to_wandb(
            results, log, data.test, recipe_args.num_logged_examples, training_args.run_name, config, finish=True
        )
    timings["total_s"] = round(time.perf_counter() - started, 2)
    log_history = mined.log_history if mined is not None else list(trainer.state.log_history)
    return RecipeResult(results, log_history, timings, output_dir, trainer, data.data_args)


def check_push_to_hub(training_args: DMPOConfig) -> None:
    """`ValueError` before anything runs when `push_to_hub` is set but cannot push: the Hub is off (`HF_HUB_OFFLINE`),
    does not answer, or refuses the token (`hub_token`, else the saved login)."""
    if not training_args.push_to_hub:
        return
    from huggingface_hub import HfApi, constants

    later = "train without --push_to_hub and upload output_dir later (`hf upload`)"
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set: unset it, or {later}")
    try:
        HfApi().whoami(token=training_args.hub_token)
    except Exception as exc:  # no connection, no login, a revoked token: all found before training, not after
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--push_to_hub: the Hub did not accept a login check ({type(exc).__name__}: {reason}); {later}"
        ) from exc


def run_settings(data_args, training_args, model_args, recipe_args) -> dict[str, dict[str, Any]]:
    """Every setting of a run, by group: "data", "recipe", "model" and "training" (`DMPOConfig.to_dict()`)."""
    return {
        "data": asdict(data_args),
        "recipe": asdict(recipe_args),
        "model": _jsonable(asdict(model_args)),
        "training": training_args.to_dict(),
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (str, int, float, bool, list, type(None))) else str(value)
        for key, value in values.items()
    }


# --- configuration ----------------------------------------------------------------------------------------------


RECIPE_DATACLASSES = (RecDataArguments, RecipeArguments, DMPOConfig, RecModelConfig)

LOSS_TYPES = (
    *MULTI_NEGATIVE_LOSSES,
    *("hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired"),
    *("apo_zero", "apo_down", "discopop", "sigmoid_norm"),
)
"""`loss_type` values: DMPO's K-negative losses, then TRL's pairwise ones (pairwise data only)."""

TRAIN_ALIASES = {"--model": "--model_name_or_path", "--output": "--output_dir"}
"""Other spellings `dmpo-trl train` and `demo` accept (the ones `prepare` and `evaluate` use)."""


def command_parser(dataclass_types, prog: str, defaults: dict[str, Any] | None = None, aliases=None):
    """A `trl.TrlParser` over `dataclass_types`, as every `dmpo-trl` subcommand parses its flags.

    No abbreviations (`--num_negative` is refused, not taken for `--num_negatives`); a parse error raises
    `dmpo_trl.cli.UsageError` (one line, exit status 2 from the command line) instead of printing the usage;
    `defaults` replaces field defaults; `aliases` maps other spellings to existing flags
    (`{"--seed": "--split_seed"}`).

    Example:
    ```python
    >>> parser = command_parser([RecDataArguments], "dmpo-trl x", aliases={"--seed": "--split_seed"})
    >>> parser.parse_args_and_config(["--dataset", "ml-1m", "--seed", "3"])[0].split_seed
    3
    ```
    """
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message: str):
            raise UsageError(message)

    parser = Parser(dataclass_types, prog=prog, allow_abbrev=False)
    if defaults:
        unused = set(defaults) - {action.dest for action in parser._actions}
        if unused:
            raise ValueError(f"Unknown recipe settings: {sorted(unused)}")
        parser.set_defaults_with_config(**defaults)
    for alias, flag in (aliases or {}).items():
        action = parser._option_string_actions[flag]
        action.option_strings.append(alias)
        parser._option_string_actions[alias] = action
    return parser


def parse_command_line(parser, argv: Sequence[str] | None) -> tuple:
    """`parser.parse_args_and_config(argv)`, with every mistake (unknown flag, bad value, bad YAML file, a setting
    a dataclass refuses) raised as `UsageError`."""
    import warnings

    import yaml

    argv = list(argv) if argv is not None else None
    if argv and argv[-1] == "--config":
        raise UsageError("--config needs a YAML file")
    with user_inputs(yaml.YAMLError), warnings.catch_warnings():
        if not any(a.startswith(("--gradient_checkpointing", "--gradient-checkpointing")) for a in argv or []):
            # every field reaches the dataclass, so the deprecated alias warns though nobody set it
            warnings.filterwarnings("ignore", "`gradient_checkpointing` is deprecated", FutureWarning)
        try:
            return parser.parse_args_and_config(argv)
        except ValueError as exc:
            message = str(exc)
            if message.startswith("Some specified arguments are not used"):
                message = "unrecognized arguments: " + " ".join(ast.literal_eval(message.split(": ", 1)[1]))
            raise UsageError(message) from exc


def recipe_parser(prog: str = "dmpo-trl train", defaults: dict[str, Any] | None = None):
    """A `trl.TrlParser` over `RecDataArguments`, `RecipeArguments`, `DMPOConfig` and `RecModelConfig`.

    Every field is a flag (`--num_train_users 64`, `--loss_type sdpo`, `--load_in_4bit`); `--config file.yaml` sets
    any of them from a YAML mapping (command-line flags win), as TRL's own scripts do. `defaults` replaces field
    defaults (the demo uses this). See `command_parser` for what it refuses.

    Example:
    ```python
    >>> parser = recipe_parser()
    >>> data_args, recipe_args, training_args, model_args = parser.parse_args_and_config(
    ...     ["--num_train_users", "8", "--loss_type", "sdpo", "--output_dir", "out", "--report_to", "none"])
    >>> data_args.num_train_users, training_args.loss_type, model_args.use_peft
    (8, ['sdpo'], False)
    ```
    """
    return command_parser(RECIPE_DATACLASSES, prog, defaults, TRAIN_ALIASES)


def check_loss_types(training_args: DMPOConfig) -> None:
    """`ValueError` for a `loss_type` that neither DMPO nor TRL knows."""
    losses = [training_args.loss_type] if isinstance(training_args.loss_type, str) else training_args.loss_type
    unknown = [loss for loss in losses if loss not in LOSS_TYPES]
    if unknown:
        raise ValueError(f"Unknown loss_type {unknown}; choose from {list(LOSS_TYPES)}")


def parse_recipe_arguments(
    argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None, prog: str = "dmpo-trl train"
) -> tuple[RecDataArguments, DMPOConfig, RecModelConfig, RecipeArguments]:
    """Parse flags (and `--config file.yaml`) into `(data_args, training_args, model_args, recipe_args)`.

    A mistake raises `dmpo_trl.cli.UsageError` (a `ValueError`) with a one-line message.

    Example:
    ```python
    >>> data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
    ...     ["--load_in_4bit", "--lora_r", "8", "--output_dir", "out", "--report_to", "none"])
    >>> model_args.load_in_4bit, model_args.use_peft, model_args.lora_r
    (True, True, 8)
    ```
    """
    data_args, recipe_args, training_args, model_args = parse_command_line(recipe_parser(prog, defaults), argv)
    with user_inputs():
        check_loss_types(training_args)
    return data_args, training_args, model_args, recipe_args


DEMO_SETTINGS: dict[str, Any] = {
    # data: few-shot MovieLens-100K, 10 candidates per prompt, 5 history items, K=4 negatives
    "dataset_name": "movielens-100k",
    "num_train_users": 80,
    "num_valid_users": 0,
    "num_test_users": 80,
    "num_candidates": 10,
    "num_negatives": 4,
    "max_history": 5,
    # recipe: zero-shot and trained model, plus the random and popularity baselines on the same candidates
    "baselines": ["random", "popular"],
    # model: the embedded SmolLM2-135M-Instruct with LoRA on every linear layer
    "use_peft": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    # training: DMPO, one pass over the rows, 4 rows per step, on CPU in float32
    "output_dir": "outputs/demo",
    "loss_type": ["dmpo"],
    "beta": 0.1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 2,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "activation_checkpointing": False,
    "logging_steps": 4,
    "save_strategy": "no",
    "dataloader_pin_memory": False,
    "report_to": "none",
    "seed": 0,
}
"""What `dmpo-trl demo` runs: sized to finish within 15 minutes on 2 CPU cores (see README)."""


def demo_arguments(
    argv: Sequence[str] = (), **overrides: Any
) -> tuple[RecDataArguments, DMPOConfig, RecModelConfig, RecipeArguments]:
    """The demo's `(data_args, training_args, model_args, recipe_args)`: `DEMO_SETTINGS`, then `overrides`, then
    command-line style `argv` (e.g. `["--max_steps", "2"]`).

    Example:
    ```python
    >>> data_args, training_args, model_args, recipe_args = demo_arguments(num_test_users=20)
    >>> data_args.num_test_users, training_args.loss_type, recipe_args.baselines
    (20, ['dmpo'], ['random', 'popular'])
    ```
    """
    return parse_recipe_arguments(list(argv), {**DEMO_SETTINGS, **overrides}, prog="dmpo-trl demo")


SMOKE_SETTINGS: dict[str, Any] = {
    "num_train_users": 8,
    "num_test_users": 6,
    "num_candidates": 5,
    "num_negatives": 2,
    "max_history": 3,
    "max_steps": 2,
    "show_progress": False,
}
"""Seconds-scale overrides of `DEMO_SETTINGS` for smoke runs of the examples (`DMPO_EXAMPLES_SMOKE=1`)."""


def smoke_mode() -> bool:
    """Whether `DMPO_EXAMPLES_SMOKE` asks for seconds-scale settings (the example notebooks under test)."""
    return os.environ.get("DMPO_EXAMPLES_SMOKE", "").lower() not in ("", "0", "false", "no")
