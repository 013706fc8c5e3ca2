"""`run_recipe`: the recipe end to end, in named steps: check and load the data, load the model, build the rows,
save the split, build the trainer, rank before, train, rank after, choose the popularity prior, save the run.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint

from ..config import DMPOConfig
from ..data import UserExample, candidate_sets
from ..evaluation import baseline_popularity, save_result
from ..inputs import InputError, reading_inputs
from ..mining import MinedNegativesTraining, NegativeMiner
from ..model_card import use_model_card
from ..models import (
    ModelPackageMissing,
    RecModelConfig,
    adapters_to_dtype,
    load_model_for_training,
    model_origin,
    name_base_model_by_hub_id,
)
from ..prior import PRIOR_REGIMES, choose_popularity_prior, result_with_prior
from ..provenance import provenance
from ..ranker_file import save_ranker_config
from ..rows import check_row
from ..settings import PromptSettings
from ..tracking import log_ranking_to_wandb, wandb_requested
from ..trainer import DMPOTrainer
from .arguments import RecDataArguments, RecipeArguments
from .loading import RecipeData, build_datasets, data_seed, load_recipe_data
from .outputs import check_output_path, check_push_to_hub, data_inputs
from .results import RecipeResult, evaluate_models, summary_table
from .split_file import split_record, write_split


logger = logging.getLogger("dmpo_trl.recipe")

__all__ = ["resolve_resume", "run_recipe", "run_settings", "trained_name"]


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

    A mistake in the settings or the inputs (the data files, the model path, a split file, the training rows) raises
    `dmpo_trl.inputs.InputError`, a `ValueError`, whose message says what to change.

    Example:
    ```python
    >>> result = run_recipe(*demo_arguments(num_train_users=8, num_test_users=10, max_steps=2))  # doctest: +SKIP
    >>> result.metric("dmpo (lora)", "hit_ratio@1")  # doctest: +SKIP
    0.2
    ```
    """
    model_args = model_args or RecModelConfig()
    recipe_args = recipe_args or RecipeArguments()
    if wandb_requested(training_args.report_to):
        os.environ.setdefault("WANDB_PROJECT", "dmpo-trl")  # the trainer's WandbCallback reads it too
    run = _Run(data_args, training_args, model_args, recipe_args, print if verbose else logger.info)
    run.load_data()
    run.load_model()
    run.build_rows()
    run.save_split()
    run.build_trainer()
    run.rank_before(verbose)
    run.train()
    run.rank_after()
    run.choose_prior()
    run.save()
    run.log_to_wandb()
    run.timings["total_s"] = round(time.perf_counter() - run.started, 2)
    return run.result()


@dataclass
class _Run:
    """One run of the recipe: its settings, and what each step leaves for the next."""

    data_args: RecDataArguments
    training_args: DMPOConfig
    model_args: RecModelConfig
    recipe_args: RecipeArguments
    say: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    clock: float = field(default_factory=time.perf_counter)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: RecipeData | None = None
    resume: str | None = None
    model: Any = None
    tokenizer: Any = None
    peft_config: Any = None
    conversational: bool = False
    datasets: dict[str, Any] = field(default_factory=dict)
    trainer: Any = None
    mined: MinedNegativesTraining | None = None
    prior: float = 0.0

    def lap(self, name: str) -> None:
        """Record the seconds since the last lap under `name`."""
        self.timings[name] = round(time.perf_counter() - self.clock, 2)
        self.clock = time.perf_counter()

    @property
    def seed(self) -> int:
        """The seed of the split, candidates and negatives (`split_seed`, else the training seed)."""
        return data_seed(self.data.data_args, self.training_args.seed)

    @property
    def name(self) -> str:
        return trained_name(self.training_args, self.model_args)

    def load_data(self) -> None:
        """Check the outputs and the Hub before anything runs, then load the log (and split it) or the rows."""
        with reading_inputs():
            self.data_args = self.data_args.for_mode(self.recipe_args.ranking_mode)
            output_dir = self.training_args.output_dir
            if output_dir:
                check_output_path(output_dir, data_inputs(self.data_args), "--output_dir", folder=True)
            check_push_to_hub(self.training_args)
            self.resume = resolve_resume(self.training_args)
            self.data = load_recipe_data(self.data_args, self.training_args.seed)
        self.lap("data_s")
        self.say(describe_data(self.data, self.data_args))

    def load_model(self) -> None:
        """The model and tokenizer to train, and the LoRA config (None for full finetuning)."""
        with reading_inputs(OSError, ModelPackageMissing):
            remote_code = {"trust_remote_code": True} if self.training_args.trust_remote_code else {}
            self.model, self.tokenizer, self.peft_config = load_model_for_training(
                self.model_args, self.training_args.gradient_checkpointing, **remote_code
            )

    def build_rows(self) -> None:
        """The training (and validation) rows, and the chat format they and the ranking prompts use."""
        data, data_args = self.data, self.data_args
        if data.preference is not None:
            self.conversational = preference_rows_format(data, data_args)
            self.datasets = {"train": data.preference["train"]}
            if "validation" in data.preference:
                self.datasets["validation"] = data.preference["validation"]
        else:
            conversational = data_args.conversational
            if conversational is None:
                conversational = getattr(self.tokenizer, "chat_template", None) is not None
            self.conversational = conversational
            with reading_inputs():
                self.datasets = build_datasets(
                    data_args, data.log, data.split, conversational, self.training_args.seed
                )
                sets = candidate_sets(
                    data.log, data.split.test, data_args.num_candidates, self.seed, data_args.candidate_strategy
                )
                data.candidates = [c for c, _ in sets]
        self.lap("model_s")
        model_args = self.model_args
        setup = (
            "QLoRA (4-bit NF4)" if model_args.load_in_4bit else "LoRA" if model_args.use_peft else "full finetuning"
        )
        self.say(f"Model: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'}, {setup}")

    def save_split(self) -> None:
        """`split.json` in output_dir, before any checkpoint or model is saved (and pushed) there."""
        output_dir = self.training_args.output_dir
        if output_dir and self.training_args.should_save:
            write_split(self.split_file(), output_dir)

    def split_file(self) -> dict[str, Any]:
        """What `split.json` records: the prepared data's split, the split made here, or the training users."""
        data, data_args = self.data, self.data_args
        if data.record is not None:
            return {**data.record, "preference_data": str(Path(data_args.dataset_name).resolve())}
        if data.split is not None:
            return split_record(data_args, data.log, data.split, self.seed, self.conversational)
        train = self.datasets["train"]
        users = train["user"] if "user" in train.column_names else []
        return {
            "dataset": data_args.dataset_name,
            "seed": None,
            "train": sorted(set(users)),
            "valid": [],
            "test": [],
            "candidates": {},
            "data": asdict(data_args),
            "conversational": self.conversational,
        }

    def build_trainer(self) -> None:
        """A `DMPOTrainer`, or the mined-negatives training around one (`--negative_strategy model`)."""
        data, data_args, training_args = self.data, self.data_args, self.training_args
        common = dict(
            eval_dataset=self.datasets.get("validation"), processing_class=self.tokenizer, peft_config=self.peft_config
        )
        with reading_inputs():
            if data_args.negative_strategy == "model" and data.split is not None:
                if self.resume:
                    raise ValueError(
                        "--resume_from_checkpoint does not resume training with --negative_strategy model"
                    )
                miner = NegativeMiner(
                    data.log,
                    data_args.num_negatives,
                    data_args.model_negative_fraction,
                    data_args.mining_pool_size,
                    prompt_style=data_args.template,
                    conversational=self.conversational,
                    seed=self.seed,
                    normalize=self.recipe_args.ranking_normalize,
                )
                self.mined = MinedNegativesTraining(self.model, miner, data.split.train, training_args, **common)
                self.trainer = self.mined.trainer
            else:
                self.trainer = DMPOTrainer(
                    self.model, args=training_args, train_dataset=self.datasets["train"], **common
                )
        keep_adapters_in_float32(self.trainer, self.model)

    def rank_before(self, verbose: bool) -> None:
        """Rank the test users with the model before training, and the baselines on the same candidates."""
        recipe_args, data = self.recipe_args, self.data
        if data.log is None and (recipe_args.evaluate_before or recipe_args.evaluate_after or recipe_args.baselines):
            self.say(
                "Ranking skipped: the preference dataset has no split.json (from `dmpo-trl prepare`) naming test users"
            )
        elif recipe_args.evaluate_before or recipe_args.baselines:
            self.say(f"Ranking {len(data.test)} test users before training")
            models = {"zero-shot": self.trainer.model} if recipe_args.evaluate_before else {}
            self.results.update(
                evaluate_models(
                    models, self.tokenizer, data.log, data.test, data.data_args, recipe_args, **self.ranking_options()
                )
            )
            self.lap("evaluate_before_s")
            if verbose and self.results:
                print(summary_table(self.results))

    def ranking_options(self) -> dict[str, Any]:
        """How the test users are ranked: the chat format, the seed and their candidate lists."""
        return dict(conversational=self.conversational, seed=self.training_args.seed, candidates=self.data.candidates)

    def train(self) -> None:
        resume = self.resume
        self.say(
            f"Training ({self.name}) on {len(self.datasets['train'])} rows"
            + (f", resuming from {resume}" if resume else "")
        )
        if self.mined is not None:
            self.mined.train()
        else:
            self.trainer.train(resume_from_checkpoint=resume)
        self.lap("train_s")

    def rank_trained(self, examples: Sequence[UserExample], **options) -> dict[str, Any]:
        """The trained model's ranking of `examples` (no baselines)."""
        only = replace(self.recipe_args, baselines=[])
        models = {self.name: self.trainer.model}
        return evaluate_models(models, self.tokenizer, self.data.log, examples, self.data.data_args, only, **options)[
            self.name
        ]

    def rank_after(self) -> None:
        if self.recipe_args.evaluate_after and self.data.log is not None:
            self.say(f"Ranking {len(self.data.test)} test users after training")
            self.results[self.name] = self.rank_trained(self.data.test, **self.ranking_options())
            self.lap("evaluate_after_s")

    def choose_prior(self) -> None:
        """The popularity prior's weight: as set, else chosen on the validation users; the ranking with it."""
        recipe_args, split, name = self.recipe_args, self.data.split, self.name
        self.prior, curve = recipe_args.popularity_prior or 0.0, None
        choose = recipe_args.popularity_prior is None and recipe_args.ranking_mode == "likelihood"
        if choose and split is not None and split.valid:
            self.say(f"Choosing the popularity prior's weight on {len(split.valid)} validation users")
            validation = [  # candidates drawn for the validation users, under each regime
                self.rank_trained(
                    split.valid,
                    conversational=self.conversational,
                    seed=self.training_args.seed,
                    negative_strategy=regime,
                )
                for regime in PRIOR_REGIMES
            ]
            self.prior, curve = choose_popularity_prior(validation, self.data.log, split.valid)
            without = curve.get(0.0, float("nan"))
            self.say(
                f"Popularity prior: weight {self.prior:g}, validation NDCG@5 {curve[self.prior]:.4f} "
                f"({without:.4f} without)"
            )
            self.lap("choose_prior_s")
        if curve is not None and name in self.results:
            self.results[name]["settings"]["popularity_prior_validation"] = {
                "chosen": self.prior,
                "users": len(split.valid),
                "regimes": list(PRIOR_REGIMES),
                "ndcg@5_by_weight": {f"{w:g}": v for w, v in curve.items()},
            }
        if self.prior and name in self.results:
            prior_result = result_with_prior(self.results[name], self.data.log, self.data.test, self.prior)
            self.results[f"{name} + popularity prior"] = prior_result

    def save(self) -> None:
        """The results, ranker.json and the card, then the model: push_to_hub runs inside save_model."""
        data_args, model_args, recipe_args = self.data_args, self.model_args, self.recipe_args
        output_dir, log, trainer = self.training_args.output_dir, self.data.log, self.trainer
        origin = model_origin(model_args.model_name_or_path, getattr(model_args, "gguf_file", None))
        settings = json.loads(
            json.dumps(run_settings(data_args, self.training_args, model_args, recipe_args), default=str)
        )
        if recipe_args.results_file and output_dir and self.results:
            record = {"results": self.results, "timings": self.timings, "settings": settings}
            save_result({**record, "provenance": provenance(origin)}, Path(output_dir) / recipe_args.results_file)
        if not (recipe_args.save_final_model and output_dir):
            return
        if log is not None:  # a run on a preference dataset has no catalogue to rank from
            prompt = PromptSettings.from_arguments(
                data_args, recipe_args, conversational=self.conversational, popularity_prior=self.prior
            )
            counts = baseline_popularity(log, self.data.test) if self.prior else None  # the test ranking's counts
            save_ranker_config(output_dir, log.titles, prompt, model_args, origin, log.name, counts)
        card = dict(base_model=origin, results=self.results, settings=settings, adapter=bool(self.peft_config))
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

    def log_to_wandb(self) -> None:
        """The ranking metrics and a table of example recommendations, when `report_to` includes wandb."""
        if wandb_requested(self.training_args.report_to) and self.results:
            config = {
                "data": asdict(self.data_args),
                "recipe": asdict(self.recipe_args),
                "model": _jsonable(asdict(self.model_args)),
            }
            log_ranking_to_wandb(
                self.results,
                self.data.log,
                self.data.test,
                self.recipe_args.num_logged_examples,
                self.training_args.run_name,
                config,
                finish=True,
            )

    def result(self) -> RecipeResult:
        mined = self.mined
        log_history = mined.log_history if mined is not None else list(self.trainer.state.log_history)
        output_dir = self.training_args.output_dir
        return RecipeResult(self.results, log_history, self.timings, output_dir, self.trainer, self.data.data_args)


def describe_data(data: RecipeData, data_args: RecDataArguments) -> str:
    """The line `run_recipe` prints about its data: the users of the split, or the preference dataset's rows."""
    split = data.split
    if split is not None:
        train_users = len({e.user for e in split.train})
        rows = f" ({len(split.train)} rows)" if len(split.train) != train_users else ""
        negatives = {
            "model": "negatives mined from the model each epoch",
            "retriever": f"negatives from {data_args.negative_retriever}'s top {data_args.retriever_pool}",
        }.get(data_args.negative_strategy, "negatives")
        return (
            f"Data: {data.log.name}, {train_users} train{rows} / {len(split.valid)} valid / {len(split.test)} test "
            f"users, {data_args.num_candidates} candidates per prompt, K={data_args.num_negatives} {negatives}"
        )
    sizes = ", ".join(f"{name}: {len(rows)} rows" for name, rows in data.preference.items())
    ranked = f"{len(data.test)} test users from its split.json" if data.record else "no test users to rank"
    return (
        f"Data: preference dataset {data_args.dataset_name} ({sizes}), trained as it is (the flags that build "
        f"rows from an interaction log do not apply); {ranked}"
    )


def preference_rows_format(data: RecipeData, data_args: RecDataArguments) -> bool:
    """Whether a preference dataset's rows are conversational (its first row decides); `InputError` when
    `--conversational` or its split.json says otherwise."""
    with reading_inputs():  # TRL's is_conversational may look at a list of K responses: check_row reads the row
        conversational, _ = check_row(data.preference["train"][0], 0)
    if data_args.conversational is not None and data_args.conversational != conversational:
        raise InputError(
            f"--conversational {data_args.conversational}, but {data_args.dataset_name} holds "
            f"{'conversational' if conversational else 'plain-text'} rows"
        )
    if data.record is not None and data.record.get("conversational", conversational) != conversational:
        raise InputError(f"{data_args.dataset_name}: its rows and its split.json disagree on the chat format")
    return conversational


def keep_adapters_in_float32(trainer: Any, model: Any) -> None:
    """On a 4-bit or 8-bit base computing in another dtype than bfloat16, train the adapters in float32."""
    quantized = getattr(trainer.model, "is_loaded_in_4bit", False) or getattr(
        trainer.model, "is_loaded_in_8bit", False
    )
    if quantized:
        config = getattr(model.config, "quantization_config", None)
        compute_dtype = getattr(config, "bnb_4bit_compute_dtype", None)
        if compute_dtype != torch.bfloat16 and str(compute_dtype) != "bfloat16":
            adapters_to_dtype(trainer.model, torch.float32)


def trained_name(training_args: DMPOConfig, model_args: RecModelConfig) -> str:
    """The name of the trained model in tables: the loss types, plus the setup ("dmpo+lora", "sdpo+qlora", ...)."""
    loss = training_args.loss_type
    name = "+".join([loss] if isinstance(loss, str) else loss)
    if model_args.load_in_4bit:
        return f"{name} (qlora)"
    return f"{name} (lora)" if model_args.use_peft else name


def resolve_resume(training_args: DMPOConfig) -> str | None:
    """`resume_from_checkpoint` as a checkpoint folder: a path as given, or "true" for the last one in output_dir."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false", "no", "0"):
        return None
    if str(value).lower() in ("true", "yes", "1"):
        folder = training_args.output_dir
        last = get_last_checkpoint(folder) if folder and Path(folder).is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint true: no checkpoint-* folder in output_dir {folder!r}")
        return last
    if not Path(value).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder {value}")
    return str(value)


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
