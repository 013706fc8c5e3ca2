"""The `dmpo-trl` command: thin dispatch to subcommands that parse dataclasses with `trl.TrlParser`.

```bash
dmpo-trl prepare --num_train_users 100 --num_negatives 4 --output_dir data/ml100k      # preference data + split.json
dmpo-trl train --dataset_name data/ml100k --use_peft --output_dir out   # or an interaction log: --dataset_name ml-100k
dmpo-trl train --use_peft --num_train_users 256 --output_dir out  # every DMPOConfig / ModelConfig field is a flag
dmpo-trl train --config recipe.yaml                                 # or a YAML file, as TRL's scripts read them
dmpo-trl evaluate --model_name_or_path out                          # the test users and candidates of out/split.json
dmpo-trl evaluate --baseline popular --num_candidates 20 --num_test_users 500 --output_file pop.json
dmpo-trl rank --model_name_or_path out --input_file requests.jsonl --output_file ranked.jsonl
dmpo-trl demo                                                       # zero-shot vs DMPO + LoRA, SmolLM2 on CPU
dmpo-trl --version
```

One convention for every subcommand: the same flag names for the same things (`--dataset_name`, `--split_seed`,
`--num_test_users`, `--model_name_or_path`, a folder `--output_dir`, a file `--output_file` or `--input_file`, ...;
the older spellings `--dataset`, `--seed`, `--num-users`, `--model`, `--output`, `--input`, `--results_file` still
work), no abbreviated flags, choices checked while parsing. The flags: `dmpo_trl.cli.arguments`.

Errors: a user's mistake ends with one line on stderr (`dmpo-trl COMMAND: error: ...`) and exit status 2, without a
traceback (`dmpo-trl --debug COMMAND ...` shows it). A user's mistake is a `UsageError`, or an `InputError` the
library raises (`dmpo_trl.inputs`): a bad flag or value, a setting a dataclass refuses, and any `ValueError` or
`FileNotFoundError` (or another error named in `user_inputs(...)`) raised while the command reads the user's inputs:
the data files, the dataset name, the model path, the YAML file, a split file, the training rows. Anything else is a
program error and shows its traceback.

A subcommand is a `Command` (name, help, a function adding its arguments, a function running them) in `COMMANDS`;
`register_command` adds one, and `main` dispatches to it. A command with `own_parser=True` parses its arguments
itself: its `run` gets them as `args.argv`. The built-in commands are each a module of this package
(`dmpo_trl.cli.prepare`, `train`, `evaluate`, `rank`, `demo`) with a `main(argv)`, imported only when it runs, so
`dmpo-trl --help` and `dmpo-trl COMMAND --help` (stored, `dmpo_trl.stored_help`) answer without importing torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..inputs import InputError
from ..version import __version__
from .errors import UsageError, user_inputs
from .process import prepare_process, quiet_import


__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main", "register_command", "user_inputs"]


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


def _own(name: str) -> Callable[[argparse.Namespace], int]:
    """Run the built-in command `name`: its stored `--help`, or `dmpo_trl.cli.<name>.main(argv)`."""

    def run(args: argparse.Namespace) -> int:
        if {"-h", "--help"} & set(args.argv) and "--config" not in args.argv:
            from . import stored_help  # here, so that `python -m dmpo_trl.cli.stored_help` runs a fresh module

            # stored: no torch import, under a second
            print(stored_help.stored_help(name) or stored_help.render_help(name), end="")
            raise SystemExit(0)
        prepare_process()  # before the command's module imports torch
        return quiet_import(f"{__name__}.{name}").main(args.argv)

    return run


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


for _name, _help in {
    "prepare": "build a preference dataset (and its split.json) and write it to disk; --help: all flags",
    "train": "build data, rank zero-shot, train with DMPOTrainer (full, LoRA, QLoRA), rank again; --help: all flags",
    "evaluate": "rank candidates with a model (a trained output_dir: its saved test users) or a baseline",
    "demo": "zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU within 15 minutes",
    "rank": "rank each request's candidates with a trained model",
}.items():
    register_command(Command(_name, _help, _no_arguments, _own(_name), own_parser=True))


# --- entry point ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The `dmpo-trl` parser, with one subparser per registered command."""
    parser = _Parser(prog="dmpo-trl", description="DMPO for LLM recommenders, on TRL.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"dmpo-trl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a usage error too")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            add_help=not command.own_parser,
            allow_abbrev=False,
        )
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run, _own_parser=command.own_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dmpo-trl COMMAND [options]`; returns the exit code (2 for a user's mistake, see the module docstring).

    Example:
    ```python
    >>> main(["evaluate", "--baseline", "random", "--num_test_users", "50", "--no_show_progress"])  # doctest: +SKIP
    ```
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[: next((i for i, a in enumerate(argv) if a in COMMANDS), len(argv))]
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if args._own_parser:
            args.argv = rest
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return int(args._run(args) or 0)
    except InputError as exc:  # a UsageError, or the library's word for a mistake in what it was asked
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"dmpo-trl{' ' + command if command else ''}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if "torch" in sys.modules:  # a command under torchrun leaves its process group before the process exits
            from ..distributed import end_process_group

            end_process_group()
