"""The recipe's settings from flags and YAML, as TRL's scripts read them: a `trl.TrlParser` over `RecDataArguments`,
`RecipeArguments`, `DMPOConfig` and `RecModelConfig` (`recipe_parser`, `parse_recipe_arguments`), and the strict
parser every `dmpo-trl` subcommand builds on (`command_parser`, `parse_command_line`).

A mistake (an unknown or abbreviated flag, a bad value, a YAML file that is missing or not YAML, a setting a
dataclass refuses) raises `dmpo_trl.inputs.InputError`, a `ValueError`, with a one-line message.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from trl import TrlParser

from ..config import DMPOConfig
from ..inputs import InputError, reading_inputs
from ..models import RecModelConfig
from .arguments import RecDataArguments, RecipeArguments


__all__ = ["RECIPE_DATACLASSES", "command_parser", "parse_command_line", "parse_recipe_arguments", "recipe_parser"]

RECIPE_DATACLASSES = (RecDataArguments, RecipeArguments, DMPOConfig, RecModelConfig)


class _StrictParser(TrlParser):
    """A `TrlParser` whose parse errors raise `InputError` instead of printing the usage and exiting."""

    def error(self, message: str):
        raise InputError(message)


def command_parser(
    dataclass_types,
    prog: str,
    defaults: dict[str, Any] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> TrlParser:
    """A `trl.TrlParser` over `dataclass_types`, as every `dmpo-trl` subcommand parses its flags.

    No abbreviations (`--num_negative` is refused, not taken for `--num_negatives`); a parse error raises
    `InputError` (one line, exit status 2 from the command line) instead of printing the usage; `defaults` replaces
    field defaults; `aliases` maps other spellings to existing flags (`{"--seed": "--split_seed"}`).

    Example:
    ```python
    >>> parser = command_parser([RecDataArguments], "dmpo-trl x", aliases={"--seed": "--split_seed"})
    >>> parser.parse_args_and_config(["--dataset", "ml-1m", "--seed", "3"])[0].split_seed
    3
    ```
    """
    parser = _StrictParser(dataclass_types, prog=prog, allow_abbrev=False)
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


def parse_command_line(parser: TrlParser, argv: Sequence[str] | None) -> tuple:
    """`parser.parse_args_and_config(argv)`, with every mistake (unknown flag, bad value, bad YAML file, a setting
    a dataclass refuses) raised as `InputError`."""
    argv = list(argv) if argv is not None else None
    if argv and argv[-1] == "--config":
        raise InputError("--config needs a YAML file")
    with reading_inputs(yaml.YAMLError), warnings.catch_warnings():
        if not any(a.startswith(("--gradient_checkpointing", "--gradient-checkpointing")) for a in argv or []):
            # every field reaches the dataclass, so the deprecated alias warns though nobody set it
            warnings.filterwarnings("ignore", "`gradient_checkpointing` is deprecated", FutureWarning)
        try:
            return parser.parse_args_and_config(argv)
        except InputError:
            raise
        except ValueError as exc:
            message = str(exc)
            if message.startswith("Some specified arguments are not used"):
                message = "unrecognized arguments: " + " ".join(ast.literal_eval(message.split(": ", 1)[1]))
            raise InputError(message) from exc


def recipe_parser(
    prog: str = "dmpo-trl train", defaults: dict[str, Any] | None = None, aliases: Mapping[str, str] | None = None
) -> TrlParser:
    """A `trl.TrlParser` over `RecDataArguments`, `RecipeArguments`, `DMPOConfig` and `RecModelConfig`.

    Every field is a flag (`--num_train_users 64`, `--loss_type sdpo`, `--load_in_4bit`); `--config file.yaml` sets
    any of them from a YAML mapping (command-line flags win), as TRL's own scripts do. `defaults` replaces field
    defaults (the demo uses this), `aliases` adds other spellings of flags. See `command_parser` for what it refuses.

    Example:
    ```python
    >>> parser = recipe_parser()
    >>> data_args, recipe_args, training_args, model_args = parser.parse_args_and_config(
    ...     ["--num_train_users", "8", "--loss_type", "sdpo", "--output_dir", "out", "--report_to", "none"])
    >>> data_args.num_train_users, training_args.loss_type, model_args.use_peft
    (8, ['sdpo'], False)
    ```
    """
    return command_parser(RECIPE_DATACLASSES, prog, defaults, aliases)


def parse_recipe_arguments(
    argv: Sequence[str] | None = None,
    defaults: dict[str, Any] | None = None,
    prog: str = "dmpo-trl train",
    aliases: Mapping[str, str] | None = None,
) -> tuple[RecDataArguments, DMPOConfig, RecModelConfig, RecipeArguments]:
    """Parse flags (and `--config file.yaml`) into `(data_args, training_args, model_args, recipe_args)`.

    A mistake raises `InputError` (a `ValueError`) with a one-line message; an unknown `loss_type` is one
    (`DMPOConfig` checks it against `dmpo_trl.config.LOSS_TYPES`).

    Example:
    ```python
    >>> data_args, training_args, model_args, recipe_args = parse_recipe_arguments(
    ...     ["--load_in_4bit", "--lora_r", "8", "--output_dir", "out", "--report_to", "none"])
    >>> model_args.load_in_4bit, model_args.use_peft, model_args.lora_r
    (True, True, 8)
    ```
    """
    data_args, recipe_args, training_args, model_args = parse_command_line(
        recipe_parser(prog, defaults, aliases), argv
    )
    return data_args, training_args, model_args, recipe_args
