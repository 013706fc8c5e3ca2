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

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import DMPOConfig
from .data import (
    STRATEGIES,
    FewShotSplit,
    InteractionLog,
    UserExample,
    build_preference_dataset,
    few_shot_split,
    load_dataset_by_name,
    load_interactions,
)
from .data.prompts import resolve_template, uses_candidates
from .models import RecModelConfig


logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_METRICS",
    "RecDataArguments",
    "RecipeArguments",
    "RecipeResult",
    "build_datasets",
    "demo_arguments",
    "evaluate_models",
    "load_interaction_log",
    "parse_recipe_arguments",
    "recipe_parser",
    "run_recipe",
    "split_users",
    "summary_table",
]

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
        metadata={"help": "Registered dataset: movielens-100k, movielens-1m (or one added with register_dataset)."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with the dataset's files (GroupLens or RecBole layout)."}
    )
    interactions: str | None = field(
        default=None,
        metadata={"help": "Your own interaction file (CSV/TSV/parquet: user_id,item_id,timestamp); needs --items."},
    )
    items: str | None = field(default=None, metadata={"help": "Your own item file (item_id,title)."})
    num_train_users: int = field(default=100, metadata={"help": "Users whose last item is a training row."})
    num_valid_users: int = field(
        default=0, metadata={"help": "Users for the trainer's preference eval set (eval_strategy)."}
    )
    num_test_users: int = field(default=200, metadata={"help": "Users for the ranking evaluation."})
    num_negatives: int = field(default=4, metadata={"help": "K rejected titles per training row."})
    num_candidates: int = field(
        default=20, metadata={"help": "Titles listed per prompt (target + negatives), also for evaluation."}
    )
    prompt_style: str = field(
        default="candidates",
        metadata={"help": "'candidates', 'history', or a template with {history} and optionally {candidates}."},
    )
    negative_strategy: str = field(
        default="uniform",
        metadata={"help": "How candidates/negatives are drawn.", "choices": list(STRATEGIES)},
    )
    conversational: bool | None = field(
        default=None,
        metadata={"help": "Chat-format prompts (message lists); default: when the tokenizer has a chat template."},
    )
    max_history: int = field(default=10, metadata={"help": "History items shown per prompt."})
    min_history: int = field(default=5, metadata={"help": "Skip users with fewer items before their last one."})
    split_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the user split, candidate lists and negatives (default: the training --seed)."},
    )

    def __post_init__(self):
        counts = {name: getattr(self, name) for name in ("num_train_users", "num_valid_users", "num_test_users")}
        if min(counts.values()) < 0:
            raise ValueError(f"User counts must be >= 0, got {counts}")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (the target and a negative), got {self.num_candidates}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.interactions and not self.items:
            raise ValueError("--interactions needs --items (the file with item_id and title)")
        if uses_candidates(resolve_template(self.prompt_style)) and self.num_negatives > self.num_candidates - 1:
            raise ValueError(
                f"num_negatives={self.num_negatives} must be at most num_candidates - 1 = {self.num_candidates - 1}: "
                "the negatives are drawn from the candidates the prompt lists"
            )


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
        unknown = set(self.baselines) - {"random", "popular"}
        if unknown:
            raise ValueError(f"Unknown baselines {sorted(unknown)}; choose from ['popular', 'random']")
        if self.ranking_batch_size < 1:
            raise ValueError(f"ranking_batch_size must be >= 1, got {self.ranking_batch_size}")


@dataclass
class RecipeResult:
    """What `run_recipe` returns: ranking results by name, training history, timings, and the trainer."""

    results: dict[str, dict[str, Any]]
    log_history: list[dict[str, Any]]
    timings: dict[str, float]
    output_dir: str | None = None
    trainer: Any = field(default=None, repr=False)

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
        return load_interactions(data_args.interactions, data_args.items, name=Path(data_args.interactions).stem)
    kwargs = {"data_dir": data_args.data_dir} if data_args.data_dir else {}
    return load_dataset_by_name(data_args.dataset_name, **kwargs)


def _seed(data_args: RecDataArguments, seed: int) -> int:
    return data_args.split_seed if data_args.split_seed is not None else seed


def split_users(data_args: RecDataArguments, log: InteractionLog, seed: int = 0) -> FewShotSplit:
    """User-disjoint train/valid/test examples (`few_shot_split`), seeded by `split_seed` or else `seed`.

    Example:
    ```python
    >>> log = InteractionLog({f"u{i}": list("abcdefg") for i in range(9)}, {i: i for i in "abcdefg"})
    >>> split = split_users(RecDataArguments(num_train_users=4, num_test_users=3), log)
    >>> len(split.train), len(split.test)
    (4, 3)
    ```
    """
    return few_shot_split(
        log,
        num_train_users=data_args.num_train_users,
        num_valid_users=data_args.num_valid_users,
        num_test_users=data_args.num_test_users,
        max_history=data_args.max_history,
        min_history=data_args.min_history,
        seed=_seed(data_args, seed),
    )


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
    >>> args = RecDataArguments(num_train_users=4, num_test_users=3, num_candidates=5, num_negatives=2)
    >>> data = build_datasets(args, log, split_users(args, log))
    >>> len(data["train"]), len(data["train"][0]["rejected"])
    (4, 2)
    ```
    """
    build = dict(
        num_negatives=data_args.num_negatives,
        prompt_style=data_args.prompt_style,
        num_candidates=data_args.num_candidates,
        negative_strategy=data_args.negative_strategy,
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
) -> dict[str, dict[str, Any]]:
    """Rank `examples` with each named model (and `recipe_args.baselines`) on the same candidate lists.

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
    common = dict(num_candidates=data_args.num_candidates, seed=seed, negative_strategy=data_args.negative_strategy)
    results = {}
    for baseline in recipe_args.baselines:
        results[baseline] = evaluate_baseline(baseline, examples, log, **common)
    for name, model in models.items():
        results[name] = evaluate_ranking(
            model,
            tokenizer,
            examples,
            log,
            prompt_style=data_args.prompt_style,
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


def run_recipe(
    data_args: RecDataArguments,
    training_args: DMPOConfig,
    model_args: RecModelConfig | None = None,
    recipe_args: RecipeArguments | None = None,
    verbose: bool = True,
) -> RecipeResult:
    """Build the data, load the model, rank before training, train with `DMPOTrainer`, rank after.

    With `report_to` including "wandb", the trainer logs its metrics and this adds the ranking metrics and a table
    of example recommendations (`dmpo_trl.tracking`), then closes the run. The ranking results are written to
    `output_dir/<results_file>` and the model or adapter to `output_dir` (`recipe_args.save_final_model`).

    Example:
    ```python
    >>> result = run_recipe(*demo_arguments(num_train_users=8, num_test_users=10, max_steps=2))  # doctest: +SKIP
    >>> result.metric("dmpo (lora)", "hit_ratio@1")  # doctest: +SKIP
    0.2
    ```
    """
    import torch

    from .evaluation import save_result
    from .model_card import use_model_card
    from .models import adapters_to_dtype, load_model_for_training, model_origin
    from .provenance import provenance
    from .ranking import PromptSettings, save_ranker_config
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
    log = load_interaction_log(data_args)
    split = split_users(data_args, log, training_args.seed)
    clock = lap("data_s", clock)
    say(
        f"Data: {log.name}, {len(split.train)} train / {len(split.valid)} valid / {len(split.test)} test users, "
        f"{data_args.num_candidates} candidates per prompt, K={data_args.num_negatives} negatives"
    )

    model, tokenizer, peft_config = load_model_for_training(model_args, training_args.gradient_checkpointing)
    conversational = data_args.conversational
    if conversational is None:
        conversational = getattr(tokenizer, "chat_template", None) is not None
    datasets = build_datasets(data_args, log, split, conversational, training_args.seed)
    clock = lap("model_s", clock)
    setup = "QLoRA (4-bit NF4)" if model_args.load_in_4bit else "LoRA" if model_args.use_peft else "full finetuning"
    say(f"Model: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'}, {setup}")

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
    if recipe_args.evaluate_before or recipe_args.baselines:
        say(f"Ranking {len(split.test)} test users before training")
        models = {"zero-shot": trainer.model} if recipe_args.evaluate_before else {}
        results.update(
            evaluate_models(
                models, tokenizer, log, split.test, data_args, recipe_args, conversational, training_args.seed
            )
        )
        clock = lap("evaluate_before_s", clock)
        if verbose and results:
            print(summary_table(results))

    say(f"Training ({name}) on {len(datasets['train'])} rows")
    trainer.train()
    clock = lap("train_s", clock)

    if recipe_args.evaluate_after:
        say(f"Ranking {len(split.test)} test users after training")
        after = evaluate_models(
            {name: trainer.model},
            tokenizer,
            log,
            split.test,
            data_args,
            replace(recipe_args, baselines=[]),
            conversational,
            training_args.seed,
        )
        results.update(after)
        clock = lap("evaluate_after_s", clock)

    output_dir = training_args.output_dir
    # The results, ranker.json and the card are written before the model: push_to_hub runs inside save_model.
    origin = model_origin(model_args.model_name_or_path, getattr(model_args, "gguf_file", None))
    settings = json.loads(json.dumps(run_settings(data_args, training_args, model_args, recipe_args), default=str))
    if recipe_args.results_file and output_dir and results:
        record = {"results": results, "timings": timings, "settings": settings, "provenance": provenance(origin)}
        save_result(record, Path(output_dir) / recipe_args.results_file)
    if recipe_args.save_final_model and output_dir:
        prompt = PromptSettings(
            prompt_style=data_args.prompt_style,
            conversational=conversational,
            normalize=recipe_args.ranking_normalize,
            max_history=data_args.max_history,
            batch_size=recipe_args.ranking_batch_size,
        )
        save_ranker_config(output_dir, log.titles, prompt, model_args, origin, log.name)
        card = dict(base_model=origin, results=results, settings=settings, adapter=bool(peft_config))
        use_model_card(
            trainer, output_dir, model_name=Path(output_dir).name, results_file=recipe_args.results_file, **card
        )
        trainer.save_model(output_dir)
        trainer.create_model_card()  # replaces the blank card peft writes with the model
    if wandb_requested(training_args.report_to) and results:
        config = {"data": asdict(data_args), "recipe": asdict(recipe_args), "model": _jsonable(asdict(model_args))}
        log_ranking_to_wandb(
            results, log, split.test, recipe_args.num_logged_examples, training_args.run_name, config, finish=True
        )
    timings["total_s"] = round(time.perf_counter() - started, 2)
    return RecipeResult(results, list(trainer.state.log_history), timings, output_dir, trainer)


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


def recipe_parser(prog: str = "dmpo-trl train", defaults: dict[str, Any] | None = None):
    """A `trl.TrlParser` over `RecDataArguments`, `RecipeArguments`, `DMPOConfig` and `RecModelConfig`.

    Every field is a flag (`--num_train_users 64`, `--loss_type sdpo`, `--load_in_4bit`); `--config file.yaml` sets
    any of them from a YAML mapping (command-line flags win), as TRL's own scripts do. `defaults` replaces field
    defaults (the demo uses this).

    Example:
    ```python
    >>> parser = recipe_parser()
    >>> data_args, recipe_args, training_args, model_args = parser.parse_args_and_config(
    ...     ["--num_train_users", "8", "--loss_type", "sdpo", "--output_dir", "out", "--report_to", "none"])
    >>> data_args.num_train_users, training_args.loss_type, model_args.use_peft
    (8, ['sdpo'], False)
    ```
    """
    from trl import TrlParser

    parser = TrlParser(RECIPE_DATACLASSES, prog=prog)
    if defaults:
        unused = set(defaults) - {action.dest for action in parser._actions}
        if unused:
            raise ValueError(f"Unknown recipe settings: {sorted(unused)}")
        parser.set_defaults_with_config(**defaults)
    return parser


def parse_recipe_arguments(
    argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None, prog: str = "dmpo-trl train"
) -> tuple[RecDataArguments, DMPOConfig, RecModelConfig, RecipeArguments]:
    """Parse flags (and `--config file.yaml`) into `(data_args, training_args, model_args, recipe_args)`.

    Example:
    ```python
    >>> data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
    ...     ["--load_in_4bit", "--lora_r", "8", "--output_dir", "out", "--report_to", "none"])
    >>> model_args.load_in_4bit, model_args.use_peft, model_args.lora_r
    (True, True, 8)
    ```
    """
    data_args, recipe_args, training_args, model_args = recipe_parser(prog, defaults).parse_args_and_config(
        list(argv) if argv is not None else None
    )
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
