"""The `dmpo-trl` command: thin wiring of the data, model and evaluation modules into subcommands.

```bash
dmpo-trl prepare --dataset movielens-100k --num-train-users 100 --num-negatives 4 --output data/ml100k
dmpo-trl evaluate --baseline popular --dataset movielens-100k --num-candidates 20 --num-users 500 --output pop.json
dmpo-trl evaluate --model HuggingFaceTB/SmolLM2-135M-Instruct --num-users 500 --output zs.json
dmpo-trl evaluate --output zs.json   # no --model and no --baseline: the embedded SmolLM2-135M-Instruct
dmpo-trl train --use_peft --num_train_users 256 --output_dir out   # every DMPOConfig / ModelConfig field is a flag
dmpo-trl train --config recipe.yaml                                 # or a YAML file, as TRL's scripts read them
dmpo-trl demo                                                       # zero-shot vs DMPO + LoRA, SmolLM2 on CPU
```

A subcommand is a `Command` (name, help, a function adding its arguments, a function running them) in `COMMANDS`;
`register_command` adds one, and `main` dispatches to it. A command with `own_parser=True` (`train`, `demo`) parses
its arguments itself (`trl.TrlParser` over dataclasses): its `run` gets them as `args.argv`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Command:
    """A subcommand: `add_arguments(parser)` declares its options, `run(args)` executes it and returns an exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    own_parser: bool = False  # the command parses `args.argv` itself (its own --help, flags and --config)


COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Add (or replace) a subcommand of `dmpo-trl`.

    Example:
    ```python
    >>> _ = register_command(Command("hello", "say hello", lambda p: None, lambda args: print("hello") or 0))
    >>> main(["hello"])
    hello
    0
    >>> del COMMANDS["hello"]
    ```
    """
    COMMANDS[command.name] = command
    return command


# --- shared arguments -------------------------------------------------------------------------------------------


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Which log to load and how to split it into users (shared by `prepare` and `evaluate`)."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="movielens-100k", help="registered dataset name (default: %(default)s)")
    group.add_argument("--data-dir", help="a folder holding the dataset's files (GroupLens or RecBole layout)")
    group.add_argument("--interactions", help="your own interaction file (CSV/TSV/parquet: user_id,item_id,timestamp)")
    group.add_argument("--items", help="your own item file (item_id,title); used with --interactions")
    group.add_argument("--max-history", type=int, default=10, help="history items per prompt (default: %(default)s)")
    group.add_argument(
        "--min-history", type=int, default=5, help="skip users with fewer earlier items (default: %(default)s)"
    )
    group.add_argument("--seed", type=int, default=0, help="user split, candidates, negatives (default: %(default)s)")


def add_prompt_arguments(parser: argparse.ArgumentParser, conversational_default: bool | None) -> None:
    group = parser.add_argument_group("prompt")
    group.add_argument("--num-candidates", type=int, default=20, help="items listed per prompt (default: %(default)s)")
    group.add_argument(
        "--prompt-style",
        default="candidates",
        help='"candidates", "history" or a template with {history} and {candidates} (default: %(default)s)',
    )
    group.add_argument(
        "--conversational",
        action=argparse.BooleanOptionalAction,
        default=conversational_default,
        help="chat-format prompts (message lists)"
        + (" (default: when the tokenizer has a chat template)" if conversational_default is None else ""),
    )
    group.add_argument(
        "--negative-strategy",
        default="uniform",
        choices=["uniform", "popularity", "popularity_matched"],
        help="how negatives are drawn (default: %(default)s)",
    )


def load_log(args: argparse.Namespace):
    """The `InteractionLog` named by --dataset / --data-dir / --interactions + --items."""
    from .data import load_dataset_by_name, load_interactions

    if args.interactions:
        if not args.items:
            raise SystemExit("--interactions needs --items (the file with item_id and title)")
        return load_interactions(args.interactions, args.items, name=Path(args.interactions).stem)
    kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
    return load_dataset_by_name(args.dataset, **kwargs)


def split_log(args: argparse.Namespace, log, num_train: int, num_valid: int, num_test: int):
    from .data import few_shot_split

    return few_shot_split(
        log,
        num_train_users=num_train,
        num_valid_users=num_valid,
        num_test_users=num_test,
        max_history=args.max_history,
        min_history=args.min_history,
        seed=args.seed,
    )


# --- prepare ----------------------------------------------------------------------------------------------------


def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_prompt_arguments(parser, conversational_default=False)
    parser.add_argument("--num-train-users", type=int, default=100, help="(default: %(default)s)")
    parser.add_argument("--num-valid-users", type=int, default=100, help="(default: %(default)s)")
    parser.add_argument(
        "--num-test-users",
        type=int,
        default=500,
        help="users held out for `evaluate --num-users` (none of them is written); keep it equal so that the train "
        "users stay disjoint from the evaluated ones (default: %(default)s)",
    )
    parser.add_argument(
        "--num-negatives", type=int, default=4, help="K rejected titles per row (default: %(default)s)"
    )
    parser.add_argument("--format", choices=["arrow", "jsonl"], default="arrow", help="(default: %(default)s)")
    parser.add_argument("--output", required=True, help="output folder")


def _prepare(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from .data import build_preference_dataset

    log = load_log(args)
    split = split_log(args, log, args.num_train_users, args.num_valid_users, args.num_test_users)
    build = dict(
        num_negatives=args.num_negatives,
        prompt_style=args.prompt_style,
        num_candidates=args.num_candidates,
        negative_strategy=args.negative_strategy,
        conversational=args.conversational,
        seed=args.seed,
    )
    splits = {"train": split.train, "validation": split.valid}
    data = DatasetDict({name: build_preference_dataset(log, examples, **build) for name, examples in splits.items()})
    output = Path(args.output)
    if args.format == "arrow":
        data.save_to_disk(str(output))
    else:
        output.mkdir(parents=True, exist_ok=True)
        for name, dataset in data.items():
            dataset.to_json(str(output / f"{name}.jsonl"), lines=True, force_ascii=False)
    sizes = ", ".join(f"{name}: {len(dataset)} rows" for name, dataset in data.items())
    print(f"Wrote {log.name} preference data ({sizes}; K={args.num_negatives}) to {output}")
    return 0


# --- evaluate ---------------------------------------------------------------------------------------------------


EVALUATION_MODES = ("likelihood", "generation", "auc")  # `dmpo_trl.evaluation.MODES`, without importing torch
EVALUATION_BASELINES = ("random", "popular")  # `dmpo_trl.evaluation.BASELINES`


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="hub id, local folder or .gguf file (default: the embedded SmolLM2-135M)")
    which.add_argument("--baseline", choices=EVALUATION_BASELINES, help="score with a baseline instead of a model")
    parser.add_argument("--gguf-file", help="a GGUF file inside --model (converted once into the cache)")
    add_data_arguments(parser)
    add_prompt_arguments(parser, conversational_default=None)
    parser.add_argument("--num-users", type=int, default=500, help="test users (default: %(default)s)")
    parser.add_argument("--mode", choices=EVALUATION_MODES, default="likelihood", help="(default: %(default)s)")
    parser.add_argument("--normalize", action="store_true", help="rank by mean log-prob per token, not the sum")
    parser.add_argument(
        "--no-end-of-turn",
        dest="end_of_turn",
        action="store_false",
        help="do not score the EOS / end-of-turn tokens after each title (training does)",
    )
    parser.add_argument("--batch-size", type=int, default=20, help="sequences per forward (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generation mode (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", help="model weights dtype (default: %(default)s)")
    parser.add_argument("--device", help="e.g. cpu, cuda (default: cuda when available)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.add_argument("--output", help="write the result JSON there")


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_baseline, evaluate_ranking, format_table, save_result

    log = load_log(args)
    test = split_log(args, log, 0, 0, args.num_users).test
    if args.baseline:
        if args.mode != "likelihood":
            raise SystemExit(f"--baseline ranks candidates; --mode {args.mode} needs a model")
        name = f"baseline:{args.baseline}"
        result = evaluate_baseline(
            args.baseline, test, log, args.num_candidates, args.seed, negative_strategy=args.negative_strategy
        )
    else:
        import torch

        from .models import DEFAULT_MODEL, load_model_and_tokenizer

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(args.model, args.gguf_file, dtype=args.dtype, device=device)
        name = args.model or DEFAULT_MODEL
        result = evaluate_ranking(
            model,
            tokenizer,
            test,
            log,
            num_candidates=args.num_candidates,
            seed=args.seed,
            prompt_style=args.prompt_style,
            conversational=args.conversational,
            mode=args.mode,
            normalize=args.normalize,
            batch_size=args.batch_size,
            progress=args.progress,
            negative_strategy=args.negative_strategy,
            end_of_turn=args.end_of_turn,
            max_new_tokens=args.max_new_tokens,
            model_name=name,
        )
        result["settings"].update(dtype=args.dtype, device=device)
    result["settings"].update(max_history=args.max_history, min_history=args.min_history)
    written = save_result(result, args.output) if args.output else None
    print(format_table({name: result}))
    metrics = result["metrics"]
    for key, value in metrics.items():
        if key.endswith("_ci95"):
            print(f"{key[: -len('_ci95')]} 95% CI: [{value[0]:.4f}, {value[1]:.4f}]")
    print(
        f"{metrics['num_users']} users, {args.num_candidates} candidates, seed {args.seed}, {result['wall_time_s']}s"
    )
    if written:
        print(f"Wrote {written}")
    return 0


register_command(Command("prepare", "build a preference dataset and write it to disk", _prepare_arguments, _prepare))
register_command(
    Command("evaluate", "rank candidates with a model or a baseline, report metrics", _evaluate_arguments, _evaluate)
)


# --- train / demo (dmpo_trl.recipe_cli: trl.TrlParser over the recipe's dataclasses) -----------------------------


def _train(args: argparse.Namespace) -> int:
    from .recipe_cli import train_main

    return train_main(args.argv)


def _demo(args: argparse.Namespace) -> int:
    from .recipe_cli import demo_main

    return demo_main(args.argv)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


register_command(
    Command(
        "train",
        "build data, rank zero-shot, train with DMPOTrainer (full, LoRA, QLoRA), rank again; --help: all flags",
        _no_arguments,
        _train,
        own_parser=True,
    )
)
register_command(
    Command(
        "demo",
        "zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU within 15 minutes",
        _no_arguments,
        _demo,
        own_parser=True,
    )
)


# --- rank (dmpo_trl.ranking, whose module level imports only the standard library) -------------------------------
from .ranking import add_rank_arguments, run_rank  # noqa: E402


register_command(Command("rank", "rank each request's candidates with a trained model", add_rank_arguments, run_rank))


# --- entry point ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `dmpo-trl` parser, with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="dmpo-trl", description="DMPO for LLM recommenders, on TRL.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.help, add_help=not command.own_parser
        )
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run, _own_parser=command.own_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dmpo-trl COMMAND [options]`; returns the exit code.

    Example:
    ```python
    >>> main(["evaluate", "--baseline", "random", "--num-users", "50", "--no-progress"])  # doctest: +SKIP
    ```
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if args._own_parser:
        args.argv = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
