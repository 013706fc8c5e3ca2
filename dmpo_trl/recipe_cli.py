"""The `dmpo-trl` subcommands `prepare`, `train`, `evaluate` and `demo`, each parsing dataclasses with `trl.TrlParser`.

`train` and `demo` parse every field of `RecDataArguments`, `RecipeArguments`, `DMPOConfig` and `RecModelConfig`;
`prepare` parses `RecDataArguments` and `PrepareArguments`; `evaluate` parses `RecDataArguments` and
`EvaluateArguments`. The same thing has the same flag everywhere, and each reads `--config file.yaml` as TRL's own
scripts do (flags override the file):

```bash
dmpo-trl prepare --num_train_users 100 --num_negatives 4 --output_dir data/ml100k
dmpo-trl train --dataset_name data/ml100k --use_peft --output_dir out      # what prepare wrote
dmpo-trl train --num_train_users 256 --num_negatives 4 --loss_type dmpo --use_peft --output_dir out
dmpo-trl train --config recipe.yaml --learning_rate 1e-4
dmpo-trl train --model_name_or_path Qwen/Qwen2.5-7B-Instruct --load_in_4bit --report_to wandb --output_dir out
dmpo-trl evaluate --model_name_or_path out       # ranks out/split.json's test users on their saved candidates
dmpo-trl demo                        # SmolLM2-135M + LoRA on few-shot MovieLens-100K, within 15 minutes on CPU
dmpo-trl demo --num_test_users 200   # any flag changes the demo's settings
```
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli import UsageError, user_inputs
from .quiet import quiet_third_party_output


def _prepare_process() -> None:
    """Process settings for a command, applied before torch loads.

    - `OMP_WAIT_POLICY=PASSIVE` (unless set): OpenMP threads sleep instead of spinning at each barrier. On a
      machine where other processes also use the cores, spinning threads wait for a descheduled sibling and a
      2-thread forward pass runs several times slower than with one thread; sleeping threads cost next to nothing
      when the machine is idle.
    - Third-party notices a user cannot act on are hidden (`dmpo_trl.quiet`); ours stay.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet_third_party_output()


def _report(result, wall_s: float, data_args) -> None:
    data_args = result.data_args or data_args
    if result.results:
        users = next(iter(result.results.values()))["metrics"]["num_users"]
        chance = 1 / data_args.num_candidates
        print()
        print(
            f"Ranking {users} test users, {data_args.num_candidates} candidates each "
            f"(a random pick has HitRatio@1 = {chance:.2f}):"
        )
        print(result.table())
    phases = {
        "data_s": "data",
        "model_s": "model",
        "evaluate_before_s": "ranking before",
        "train_s": "training",
        "evaluate_after_s": "ranking after",
    }
    spent = ", ".join(f"{label} {result.timings[key]:.0f} s" for key, label in phases.items() if key in result.timings)
    print(f"Wall time: {wall_s:.0f} s ({spent})")


def train_arguments(argv: Sequence[str] | None = None) -> tuple:
    """`dmpo-trl train`'s `(data_args, training_args, model_args, recipe_args)` and one line on where the training
    settings come from: what `argv` (or its `--config` file) sets, else the best measured values for the model and
    adapter being trained (`dmpo_trl.presets.measured_defaults`), else TRL's defaults.

    Example:
    ```python
    >>> args = train_arguments(["--use_peft", "--output_dir", "out", "--report_to", "none"])[:-1]
    >>> training_args = args[1]
    >>> training_args.learning_rate, training_args.num_train_epochs, training_args.per_device_train_batch_size
    (0.001, 2.0, 4)
    ```
    """
    from .presets import measured_defaults
    from .recipe import parse_recipe_arguments

    parsed = parse_recipe_arguments(argv)
    data_args, training_args, model_args, recipe_args = parsed
    measured, why = measured_defaults(model_args.model_name_or_path, model_args.use_peft, training_args.loss_type)
    if measured:  # the parser's defaults: the command line and --config still win
        parsed = parse_recipe_arguments(argv, measured)
    return (*parsed, why)


def train_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl train [flags] [--config file.yaml]`: run the recipe, print the before/after table, save results.

    Example:
    ```python
    >>> train_main(["--num_train_users", "64", "--use_peft", "--output_dir", "out"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from .recipe import run_recipe

    started = time.perf_counter()
    data_args, training_args, model_args, recipe_args, why = train_arguments(argv)
    print(
        f"Training settings: learning rate {training_args.learning_rate:g} x {training_args.num_train_epochs:g} "
        f"epochs, {training_args.per_device_train_batch_size} rows per device and step (unset ones: {why})"
    )
    result = run_recipe(data_args, training_args, model_args, recipe_args)
    _report(result, time.perf_counter() - started, data_args)
    if recipe_args.results_file:
        print(f"Results: {training_args.output_dir}/{recipe_args.results_file}")
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl demo [flags]`: zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU.

    Uses `dmpo_trl.recipe.DEMO_SETTINGS`; every flag of `dmpo-trl train` overrides them.

    Example:
    ```python
    >>> demo_main(["--num_test_users", "20", "--max_steps", "2"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from .recipe import demo_arguments, run_recipe

    started = time.perf_counter()
    data_args, training_args, model_args, recipe_args = demo_arguments(list(argv or []))
    print(
        f"dmpo-trl demo: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'} "
        f"{'+ LoRA ' if model_args.use_peft else ''}trained with {'+'.join(training_args.loss_type)} on "
        f"{data_args.num_train_users} few-shot {data_args.dataset_name} users, ranked on "
        f"{data_args.num_test_users} test users before and after"
    )
    result = run_recipe(data_args, training_args, model_args, recipe_args)
    _report(result, time.perf_counter() - started, data_args)
    return 0


# --- prepare ----------------------------------------------------------------------------------------------------


@dataclass
class PrepareArguments:
    """Where `dmpo-trl prepare` writes, in which format, and which model's chat template decides the row format."""

    output_dir: str = field(
        default=None, metadata={"help": "Output folder (required).", "aliases": ["--output"], "required": True}
    )
    format: str = field(
        default="arrow", metadata={"help": "save_to_disk folder or JSONL files.", "choices": ["arrow", "jsonl"]}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The model the data is for: with --conversational unset, rows are chat messages when its "
            "tokenizer has a chat template, as `train` and `evaluate` decide (default: the embedded SmolLM2-135M).",
            "aliases": ["--model"],
        },
    )
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file inside --model_name_or_path."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the tokenizer's own code."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an --output_dir that already holds files (a trained run, prepared data): its "
            "split.json and data files are replaced, and a model trained there would be ranked on the new split."
        },
    )


DATA_ALIASES = {"--seed": "--split_seed", "--no-conversational": "--no_conversational"}


def _data_parser(dataclass_types, prog: str, aliases: dict):
    from .recipe import command_parser

    parser = command_parser(dataclass_types, prog)
    conversational = parser._option_string_actions["--conversational"]
    conversational.nargs, conversational.const = "?", True  # `--conversational` alone, as before, means true
    parser.add_argument("--no_conversational", dest="conversational", action="store_false", help="plain-text prompts")
    for alias, flag in aliases.items():
        action = parser._option_string_actions[flag]
        action.option_strings.append(alias)
        parser._option_string_actions[alias] = action
    return parser


def _log_names() -> str:
    from .data import DATASETS

    return f"a registered log ({', '.join(sorted(DATASETS))}) or --interactions and --items files"


def chat_template_decides(model_name_or_path, gguf_file=None, trust_remote_code: bool = False) -> bool:
    """Whether the model's tokenizer has a chat template (what `conversational=None` means everywhere)."""
    from transformers import AutoTokenizer

    from .models import resolve_model_path

    path = resolve_model_path(model_name_or_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return getattr(tokenizer, "chat_template", None) is not None


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_JSON_FILES = (
    "config.json", "generation_config.json", "adapter_config.json", "preprocessor_config.json", "chat_template.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "ranker.json", "split.json",
)  # fmt: skip
"""The JSON files of a model folder that loading and ranking read; any other JSON file there is a result."""


def _model_files(model: str | None, gguf_file: str | None = None) -> dict[str, str]:
    """The local files a model path loads, each named (for `check_output_path`): none for a Hub id or an embedded
    model. `UsageError` for a file that is not a .gguf."""
    if gguf_file and not model:
        return {gguf_file: "--gguf_file"}
    path = Path(model or "")
    if not model or not path.exists():
        return {}
    if not path.is_dir():
        if path.suffix.lower() != ".gguf":
            raise UsageError(f"--model_name_or_path {model}: a file; give a model folder, a .gguf file or a Hub id")
        return {model: "--model_name_or_path"}
    loaded = [f for f in path.iterdir() if f.is_file()]
    loaded = [f for f in loaded if f.suffix not in (".json", ".jsonl") or f.name in MODEL_JSON_FILES]
    return {str(f): f"the model's {f.name}" for f in sorted(loaded + list(path.glob("*.index.json")))}


def _check_adapter_weights(model: str | None) -> None:
    """`UsageError` for an adapter folder without its weights, before the base model it names loads."""
    path = Path(model or "")
    if model and (path / "adapter_config.json").is_file() and not any((path / n).is_file() for n in ADAPTER_WEIGHTS):
        raise UsageError(f"{model}: adapter_config.json without the adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")


def _check_prepare_output(output: Path, overwrite: bool) -> None:
    """`UsageError` when prepare's output folder already holds files, unless `--overwrite_output_dir`."""
    held = sorted(f.name for f in output.iterdir()) if output.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise UsageError(
            f"--output_dir {output} already holds files ({shown}): prepare would replace its split.json, and a "
            "model trained there would be ranked on the new split; pass --overwrite_output_dir to write there anyway"
        )


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl prepare`: preference rows ("train", "validation") plus `split.json`, written to `--output_dir`.

    Example:
    ```python
    >>> prepare_main(["--num_train_users", "64", "--output_dir", "data/ml100k"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from datasets import DatasetDict

    from .data import build_preference_dataset
    from .recipe import (
        check_output_path,
        data_inputs,
        load_interaction_log,
        split_record,
        split_users,
        write_split,
    )

    parser = command_parsers()["prepare"]()
    with user_inputs():
        data_args, prepare_args = parse_args(parser, argv)
        data_args = data_args.for_mode("likelihood")
        if not data_args.is_interaction_log:
            raise UsageError(f"Unknown dataset {data_args.dataset_name!r}; prepare reads {_log_names()}")
        if data_args.negative_strategy == "model":
            raise UsageError(
                "--negative_strategy model mines negatives with the model during training; prepare writes fixed "
                "rows: train with `dmpo-trl train --negative_strategy model`, or prepare with another strategy"
            )
        output = Path(prepare_args.output_dir)
        check_output_path(output, data_inputs(data_args), "--output_dir", folder=True)
        _check_prepare_output(output, prepare_args.overwrite_output_dir)
        _model_files(prepare_args.model_name_or_path, prepare_args.gguf_file)
        log = load_interaction_log(data_args)
        split = split_users(data_args, log)
    conversational = data_args.conversational
    if conversational is None:
        from .models import ModelPackageMissing

        with user_inputs(OSError, ModelPackageMissing):
            conversational = chat_template_decides(
                prepare_args.model_name_or_path, prepare_args.gguf_file, prepare_args.trust_remote_code
            )
    seed = data_args.split_seed or 0
    build = dict(
        num_negatives=data_args.num_negatives,
        prompt_style=data_args.template,
        num_candidates=data_args.num_candidates,
        negative_strategy=data_args.candidate_strategy,
        conversational=conversational,
        seed=seed,
    )
    with user_inputs():
        splits = {"train": split.train, "validation": split.valid}
        data = DatasetDict(
            {name: build_preference_dataset(log, rows, **build) for name, rows in splits.items() if rows}
        )
    write_split(split_record(data_args, log, split, seed, conversational), output)
    if prepare_args.format == "arrow":
        data.save_to_disk(str(output))
    else:
        for name, dataset in data.items():
            dataset.to_json(str(output / f"{name}.jsonl"), lines=True, force_ascii=False)
    sizes = ", ".join(f"{name}: {len(dataset)} rows" for name, dataset in data.items())
    kind = "chat-message" if conversational else "plain-text"
    print(f"Wrote {log.name} {kind} preference data ({sizes}; K={data_args.num_negatives}) to {output}")
    print(f"Held out: {len(split.test)} test users with their candidates, in {output / 'split.json'}")
    return 0


def parse_args(parser, argv: Sequence[str] | None) -> tuple:
    from .recipe import parse_command_line

    return parse_command_line(parser, argv)


# --- evaluate ---------------------------------------------------------------------------------------------------


EVALUATION_MODES = ("likelihood", "generation", "auc")  # `dmpo_trl.evaluation.MODES`
# `dmpo_trl.evaluation.BASELINES` (sasrec, gru4rec, bpr: Cornac's, `pip install "dmpo-trl[classic]"`)
EVALUATION_BASELINES = ("random", "popular", "sasrec", "gru4rec", "bpr")


@dataclass
class EvaluateArguments:
    """What `dmpo-trl evaluate` ranks with (a model or a baseline), how, and where the results go."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, local folder or .gguf file (default: the embedded SmolLM2-135M). A `dmpo-trl train` "
            "output_dir ranks the test users and candidates of its split.json.",
            "aliases": ["--model"],
        },
    )
    baseline: str | None = field(
        default=None, metadata={"help": "Rank with a baseline instead of a model.", "choices": EVALUATION_BASELINES}
    )
    split_file: str | None = field(
        default=None,
        metadata={
            "help": "A split.json (from train or prepare) whose test users and candidates to rank; default: the "
            "model folder's, if it has one; 'none': draw the users with the data flags."
        },
    )
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file inside --model_name_or_path."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model's own code from the Hub."})
    ranking_mode: str = field(
        default="likelihood",
        metadata={"help": "How the model ranks.", "choices": EVALUATION_MODES, "aliases": ["--mode"]},
    )
    ranking_normalize: bool = field(
        default=False,
        metadata={"help": "Rank by mean log-prob per token, not the sum.", "aliases": ["--normalize"]},
    )
    end_of_turn: bool = field(
        default=True, metadata={"help": "Score the EOS / end-of-turn tokens after each title, as training does."}
    )
    popularity_prior: float | None = field(
        default=None,
        metadata={
            "help": "Rank by log-likelihood + this x log(1 + the item's interaction count, test targets left out); "
            "0: the model alone. Default: the weight in a trained folder's ranker.json, else 0."
        },
    )
    ranking_batch_size: int = field(
        default=20, metadata={"help": "Sequences per forward.", "aliases": ["--batch_size", "--batch-size"]}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Answer length in generation mode."})
    dtype: str = field(
        default="float32",
        metadata={"help": "Model weights dtype.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    device: str | None = field(default=None, metadata={"help": "e.g. cpu, cuda (default: cuda when available)."})
    show_progress: bool = field(default=True, metadata={"help": "Progress bar while ranking."})
    results_file: str | None = field(
        default=None, metadata={"help": "Write the result JSON there.", "aliases": ["--output"]}
    )


EVALUATE_ALIASES = {**DATA_ALIASES, "--num-users": "--num_test_users", "--no-progress": "--no_show_progress"}


def _split_for_evaluation(eval_args: EvaluateArguments) -> Path | None:
    if eval_args.split_file is not None:
        if eval_args.split_file.lower() == "none":
            return None
        path = Path(eval_args.split_file)  # a folder means its split.json
        return path / "split.json" if (path / "split.json").is_file() else path
    model = eval_args.model_name_or_path
    if eval_args.baseline is None and model and (Path(model) / "split.json").is_file():
        return Path(model) / "split.json"
    return None


def _saved_prior(eval_args: EvaluateArguments) -> float:
    """The popularity prior's weight a trained folder's ranker.json ranks with (0 without one)."""
    from .ranking import RANKER_FILE, read_ranker_config

    model = eval_args.model_name_or_path
    likelihood = eval_args.baseline is None and eval_args.ranking_mode == "likelihood"
    if likelihood and model and (Path(model) / RANKER_FILE).is_file():
        return float(read_ranker_config(model)["prompt"].get("popularity_prior") or 0.0)
    return 0.0


def _load_for_evaluation(eval_args: EvaluateArguments, device: str):
    from .models import RecModelConfig, load_adapter_model, load_model_and_tokenizer

    model = eval_args.model_name_or_path
    if model and (Path(model) / "adapter_config.json").is_file():
        args = RecModelConfig(use_peft=True, dtype=eval_args.dtype)  # the base ranker.json records
        remote_code = {"trust_remote_code": True} if eval_args.trust_remote_code else {}
        loaded, tokenizer = load_adapter_model(model, args, **remote_code)
        return loaded.to(device), tokenizer
    return load_model_and_tokenizer(
        model, eval_args.gguf_file, dtype=eval_args.dtype, device=device, trust_remote_code=eval_args.trust_remote_code
    )


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl evaluate`: rank test users' candidates with a model or a baseline; print and save the metrics.

    With a split file (`--split_file`, or the `split.json` in a trained `--model_name_or_path` folder) the users,
    candidates, prompt and data are the split's; data flags that differ from it are refused.

    Example:
    ```python
    >>> evaluate_main(["--model_name_or_path", "outputs/ml100k"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from .distributed import process_rank
    from .evaluation import evaluate_baseline, evaluate_ranking, format_table, save_result
    from .recipe import (
        RecDataArguments,
        check_output_path,
        data_inputs,
        load_interaction_log,
        load_split,
        saved_test_users,
        split_data_arguments,
        split_users,
    )

    parser = command_parsers()["evaluate"]()
    with user_inputs():
        data_args, eval_args = parse_args(parser, argv)
        if eval_args.baseline and (eval_args.model_name_or_path or eval_args.gguf_file):
            raise UsageError("--baseline and --model_name_or_path exclude each other: rank with one or the other")
        if eval_args.baseline and eval_args.ranking_mode != "likelihood":
            raise UsageError(f"--baseline ranks candidates; --ranking_mode {eval_args.ranking_mode} needs a model")
        model_files = {} if eval_args.baseline else _model_files(eval_args.model_name_or_path, eval_args.gguf_file)
        _check_adapter_weights(eval_args.model_name_or_path)
        if eval_args.popularity_prior is None:
            eval_args.popularity_prior = _saved_prior(eval_args)
        prior = eval_args.popularity_prior
        if prior < 0 or (prior and (eval_args.baseline or eval_args.ranking_mode != "likelihood")):
            raise UsageError(f"--popularity_prior {prior}: a weight >= 0, for a model in likelihood mode")
        split_path = _split_for_evaluation(eval_args)
        candidates, record = None, None
        if split_path is not None:
            record = load_split(split_path)
            defaults = parse_args(parser, [])[0]
            changed = [
                f.name
                for f in dataclasses.fields(RecDataArguments)
                if getattr(data_args, f.name) != getattr(defaults, f.name)
            ]
            if changed:
                raise UsageError(
                    f"{split_path} fixes the users, candidates and prompt; drop --{' --'.join(changed)}, "
                    "or pass --split_file none to draw users with them"
                )
            data_args = split_data_arguments(record)
            if data_args.conversational is None:
                data_args.conversational = record.get("conversational")
        else:
            data_args = data_args.for_mode(eval_args.ranking_mode)
            if not data_args.is_interaction_log:
                raise UsageError(
                    f"Unknown dataset {data_args.dataset_name!r}; evaluate ranks the users of {_log_names()}"
                )
        if eval_args.results_file:  # never over a file this run reads
            inputs = {**({str(split_path): "the split file"} if split_path else {}), **data_inputs(data_args)}
            check_output_path(eval_args.results_file, {**inputs, **model_files}, "--results_file")
        log = load_interaction_log(data_args)
        if record is not None:
            test, candidates = saved_test_users(record, log, split_path)
        else:
            # Only the test users: they are dealt first, so they are the ones prepare and train hold out for the seed
            test = split_users(dataclasses.replace(data_args, num_train_users=0, num_valid_users=0), log).test
    seed = data_args.split_seed or 0
    if eval_args.baseline:
        name = f"baseline:{eval_args.baseline}"
        result = evaluate_baseline(
            eval_args.baseline,
            test,
            log,
            data_args.num_candidates,
            seed,
            negative_strategy=data_args.candidate_strategy,
            candidates=candidates,
        )
    else:
        import torch

        from .models import DEFAULT_MODEL, ModelPackageMissing

        device = eval_args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        with user_inputs(OSError, ModelPackageMissing):
            model, tokenizer = _load_for_evaluation(eval_args, device)
        name = eval_args.model_name_or_path or DEFAULT_MODEL
        result = evaluate_ranking(
            model,
            tokenizer,
            test,
            log,
            num_candidates=data_args.num_candidates,
            seed=seed,
            prompt_style=data_args.template,
            conversational=data_args.conversational,
            mode=eval_args.ranking_mode,
            normalize=eval_args.ranking_normalize,
            batch_size=eval_args.ranking_batch_size,
            progress=eval_args.show_progress,
            negative_strategy=data_args.candidate_strategy,
            end_of_turn=eval_args.end_of_turn,
            max_new_tokens=eval_args.max_new_tokens,
            popularity_prior=eval_args.popularity_prior,
            model_name=name,
            candidates=candidates,
            output=eval_args.results_file or None,  # a journal beside it lets a killed run continue
        )
        result["settings"].update(dtype=eval_args.dtype, device=device)
    if process_rank()[0] != 0:  # under torchrun every process ranked its share; the first one reports
        return 0
    result["settings"].update(
        max_history=data_args.max_history,
        min_history=data_args.min_history,
        split_file=str(split_path) if split_path else None,
    )
    written = save_result(result, eval_args.results_file) if eval_args.results_file else None
    print(format_table({name: result}))
    metrics = result["metrics"]
    for key, value in metrics.items():
        if key.endswith("_ci95"):
            print(f"{key[: -len('_ci95')]} 95% CI: [{value[0]:.4f}, {value[1]:.4f}]")
    where = f"the test users of {split_path}" if split_path else f"split seed {seed}"
    print(f"{metrics['num_users']} users ({where}), {data_args.num_candidates} candidates, {result['wall_time_s']}s")
    if written:
        print(f"Wrote {written}")
    return 0


# --- parsers ----------------------------------------------------------------------------------------------------

TRAIN_DESCRIPTION = (
    "Build preference data, rank the test users zero-shot, train with DMPOTrainer (full, LoRA, QLoRA), rank again. "
    "Training settings left unset take the best measured values for the model and adapter (dmpo_trl.presets): "
    "with LoRA on the embedded SmolLM2-135M, learning rate 1e-3 x 2 epochs and 4 rows per step."
)


def command_parsers() -> dict[str, Callable[[], Any]]:
    """Each subcommand's parser, built on demand (`dmpo_trl.stored_help` renders their `--help` from these)."""
    from .recipe import DEMO_SETTINGS, RecDataArguments, recipe_parser

    def train():
        parser = recipe_parser("dmpo-trl train")
        parser.description = TRAIN_DESCRIPTION
        return parser

    return {
        "prepare": lambda: _data_parser([RecDataArguments, PrepareArguments], "dmpo-trl prepare", DATA_ALIASES),
        "train": train,
        "evaluate": lambda: _data_parser([RecDataArguments, EvaluateArguments], "dmpo-trl evaluate", EVALUATE_ALIASES),
        "demo": lambda: recipe_parser("dmpo-trl demo", DEMO_SETTINGS),
    }
