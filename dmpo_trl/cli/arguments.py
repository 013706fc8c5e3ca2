"""The flags of every `dmpo-trl` subcommand: the dataclasses `trl.TrlParser` turns into flags, the other spellings
each command accepts, and each command's parser (`command_parsers`, which `dmpo_trl.stored_help` renders).

One name for one thing everywhere: a folder is `--output_dir`, a file `--output_file` (`--input_file` for one that
is read), a model `--model_name_or_path`; the data flags are `RecDataArguments`' in every command. The spellings of
earlier versions still work (`--model`, `--output`, `--input`, `--results_file`, `--seed`, `--num-users`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..evaluation import BASELINES, MODES
from ..recipe import DEMO_SETTINGS, RecDataArguments, command_parser, parse_command_line, recipe_parser
from ..retrieval import RETRIEVERS
from .errors import user_inputs


__all__ = [
    "DATA_ALIASES",
    "EVALUATE_ALIASES",
    "RANK_ALIASES",
    "TRAIN_ALIASES",
    "EvaluateArguments",
    "PrepareArguments",
    "RankArguments",
    "command_parsers",
    "parse_args",
    "spelling",
]


# --- flags unset unless given, and the fields that several commands share, defined once --------------------------


def _unset_field(help: str, required: bool = False, **metadata: Any) -> Any:
    """A flag that is None unless given; `metadata` adds its aliases or choices."""
    return field(default=None, metadata={"help": help, **metadata, **({"required": True} if required else {})})


def _model_field(help: str, required: bool = False) -> Any:
    return _unset_field(help, required, aliases=["--model"])


def _gguf_file_field() -> Any:
    return _unset_field("A GGUF file inside --model_name_or_path.")


def _trust_remote_code_field() -> Any:
    return field(default=False, metadata={"help": "Allow the model's own code (from its folder or the Hub)."})


def _device_field() -> Any:
    return _unset_field("e.g. cpu, cuda (default: cuda when available).")


def _show_progress_field() -> Any:
    return field(default=True, metadata={"help": "Progress bar while ranking."})


def _output_file_field(help: str, aliases: Sequence[str], required: bool = False) -> Any:
    return _unset_field(help, required, aliases=list(aliases))


# --- prepare ----------------------------------------------------------------------------------------------------


@dataclass
class PrepareArguments:
    """Where `dmpo-trl prepare` writes, in which format, and which model's chat template decides the row format."""

    output_dir: str = _unset_field("Output folder (required).", required=True, aliases=["--output"])
    format: str = field(
        default="arrow", metadata={"help": "save_to_disk folder or JSONL files.", "choices": ["arrow", "jsonl"]}
    )
    model_name_or_path: str | None = _model_field(
        "The model the data is for: with --conversational unset, rows are chat messages when its tokenizer has a "
        "chat template, as `train` and `evaluate` decide (default: the embedded SmolLM2-135M)."
    )
    gguf_file: str | None = _gguf_file_field()
    trust_remote_code: bool = _trust_remote_code_field()
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an --output_dir that already holds files (a trained run, prepared data): its "
            "split.json and data files are replaced, and a model trained there would be ranked on the new split."
        },
    )


# --- evaluate ---------------------------------------------------------------------------------------------------


@dataclass
class EvaluateArguments:
    """What `dmpo-trl evaluate` ranks with (a model or a baseline), how, and where the results go."""

    model_name_or_path: str | None = _model_field(
        "Hub id, local folder or .gguf file (default: the embedded SmolLM2-135M). A `dmpo-trl train` output_dir "
        "ranks the test users and candidates of its split.json."
    )
    baseline: str | None = _unset_field("Rank with a baseline instead of a model.", choices=BASELINES)
    split_file: str | None = _unset_field(
        "A split.json (from train or prepare) whose test users and candidates to rank; default: the model folder's, "
        "if it has one; 'none': draw the users with the data flags."
    )
    test_targets: str = field(
        default="last",
        metadata={
            "help": "Which item of each test user to rank: 'last', or 'cold': an early one, drawn (seeded by the "
            "split seed) so that the users fill the groups of 1-2, 3-5, 6-10 and 11+ interactions before the target "
            "about equally; the results add HR@1 and NDCG@5 per group. Not with a split file's saved candidates.",
            "choices": ["last", "cold"],
        },
    )
    gguf_file: str | None = _gguf_file_field()
    trust_remote_code: bool = _trust_remote_code_field()
    ranking_mode: str = field(
        default="likelihood",
        metadata={"help": "How the model ranks.", "choices": MODES, "aliases": ["--mode"]},
    )
    ranking_normalize: bool = field(
        default=False,
        metadata={"help": "Rank by mean log-prob per token, not the sum.", "aliases": ["--normalize"]},
    )
    end_of_turn: bool = field(
        default=True, metadata={"help": "Score the EOS / end-of-turn tokens after each title, as training does."}
    )
    popularity_prior: float | None = _unset_field(
        "Rank by log-likelihood + this x log(1 + the item's interaction count, test targets left out); 0: the model "
        "alone. Default: the weight in a trained folder's ranker.json, else 0."
    )
    ranking_batch_size: int = field(
        default=20, metadata={"help": "Sequences per forward.", "aliases": ["--batch_size", "--batch-size"]}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Answer length in generation mode."})
    retriever: str | None = _unset_field(
        "Two-stage ranking: this retriever proposes each test user's top --retrieve_top unseen items of the whole "
        "catalogue and the model reranks them; full-catalogue Recall@10, NDCG@10 and MRR.",
        choices=RETRIEVERS,
    )
    retrieve_top: int = field(default=20, metadata={"help": "Items the retriever proposes per user (--retriever)."})
    fusion_weight: float = field(
        default=0.0,
        metadata={"help": "With --retriever: rank by log-likelihood + this x the retriever's standardised score."},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Model weights dtype.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    device: str | None = _device_field()
    show_progress: bool = _show_progress_field()
    output_file: str | None = _output_file_field(
        "Write the result JSON there.", ["--results_file", "--results-file", "--output"]
    )


# --- rank -------------------------------------------------------------------------------------------------------


@dataclass
class RankArguments:
    """Which trained run `dmpo-trl rank` ranks with, the requests it reads and where it writes their rankings."""

    model_name_or_path: str | None = _model_field(
        "A folder saved by `dmpo-trl train`: its model or LoRA adapter and ranker.json.", required=True
    )
    input_file: str | None = _unset_field(
        'JSON lines, one request a line of at most 1 MiB: {"history": [...], "candidates": [...]}, each item a '
        'catalogue id or title, or {"title": "..."} for free text outside the catalogue; with --retriever, a request '
        "may leave its candidates out.",
        required=True,
        aliases=["--input"],
    )
    output_file: str | None = _output_file_field(
        "JSON lines: each request plus its ranking, best first; written atomically, never over --input_file or a "
        "file of the --model_name_or_path folder.",
        ["--output"],
        required=True,
    )
    retriever: str | None = _unset_field(
        "Two-stage ranking of the requests without candidates: this retriever proposes the top --retrieve_top "
        "catalogue items the history does not hold and the model reranks them (Ranker.recommend). popular: the "
        "interaction counts ranker.json saves with a popularity prior. sasrec, gru4rec: Cornac's sequential model "
        "(the classic extra) scoring the request's history, fitted once at startup on the interaction log the run's "
        "split.json records, each test user's target and what follows it left out (never trained on a held-out test "
        "target). bpr is not offered: it scores only the users it was trained on.",
        choices=["popular", "sasrec", "gru4rec"],
    )
    retrieve_top: int = field(default=20, metadata={"help": "Items the retriever proposes per request (--retriever)."})
    fusion_weight: float = field(
        default=0.0,
        metadata={"help": "With --retriever: rank by the model's score + this x the retriever's standardised score."},
    )
    device: str | None = _device_field()
    merge: bool = field(default=False, metadata={"help": "Fold a LoRA adapter into the weights first."})
    trust_remote_code: bool = _trust_remote_code_field()
    show_progress: bool = _show_progress_field()


# --- other spellings --------------------------------------------------------------------------------------------

DATA_ALIASES = {"--seed": "--split_seed", "--no-conversational": "--no_conversational"}
"""Other spellings of the data flags (`RecDataArguments`) in `prepare` and `evaluate`."""
EVALUATE_ALIASES = {**DATA_ALIASES, "--num-users": "--num_test_users", "--no-progress": "--no_show_progress"}
"""Other spellings `dmpo-trl evaluate` accepts."""
TRAIN_ALIASES = {"--model": "--model_name_or_path", "--output": "--output_dir"}
"""Other spellings `dmpo-trl train` and `demo` accept (the ones `prepare` and `evaluate` use)."""
RANK_ALIASES = {"--no-progress": "--no_show_progress"}
"""Other spellings `dmpo-trl rank` accepts (besides `--model`, `--input`, `--output`, its fields' own)."""


# --- parsers ----------------------------------------------------------------------------------------------------

TRAIN_DESCRIPTION = (
    "Build preference data, rank the test users zero-shot, train with DMPOTrainer (full, LoRA, QLoRA), rank again. "
    "Training settings left unset take the best measured values for the model and adapter (dmpo_trl.presets): "
    "with LoRA on the embedded SmolLM2-135M, learning rate 1e-3 x 2 epochs and 4 rows per step."
)


def _data_parser(dataclass_types, prog: str, aliases: dict):
    parser = command_parser(dataclass_types, prog)
    conversational = parser._option_string_actions["--conversational"]
    conversational.nargs, conversational.const = "?", True  # `--conversational` alone, as before, means true
    parser.add_argument("--no_conversational", dest="conversational", action="store_false", help="plain-text prompts")
    _add_aliases(parser, aliases)
    return parser


def _add_aliases(parser, aliases: dict) -> None:
    for alias, flag in aliases.items():
        action = parser._option_string_actions[flag]
        action.option_strings.append(alias)
        parser._option_string_actions[alias] = action


def _train_parser():
    parser = recipe_parser("dmpo-trl train", aliases=TRAIN_ALIASES)
    parser.description = TRAIN_DESCRIPTION
    return parser


def _rank_parser():
    parser = command_parser([RankArguments], "dmpo-trl rank", aliases=RANK_ALIASES)
    parser.description = "Rank each request's candidates with a trained model."
    return parser


def command_parsers() -> dict[str, Callable[[], Any]]:
    """Each subcommand's parser, built on demand (`dmpo_trl.stored_help` renders their `--help` from these)."""
    return {
        "prepare": lambda: _data_parser([RecDataArguments, PrepareArguments], "dmpo-trl prepare", DATA_ALIASES),
        "train": _train_parser,
        "evaluate": lambda: _data_parser([RecDataArguments, EvaluateArguments], "dmpo-trl evaluate", EVALUATE_ALIASES),
        "demo": lambda: recipe_parser("dmpo-trl demo", DEMO_SETTINGS, TRAIN_ALIASES),
        "rank": _rank_parser,
    }


def parse_args(parser, argv: Sequence[str] | None) -> tuple:
    """`parser`'s dataclasses from `argv` (and its `--config` file); a mistake raises `UsageError`."""
    with user_inputs():
        return parse_command_line(parser, argv)


def spelling(parser, argv: Sequence[str] | None, dest: str) -> str:
    """The flag the user wrote for the field `dest` (the last one given), else its first name: refusals name the
    flag as it was written (`--results_file`, or `--output_file`).

    Example:
    ```python
    >>> parser = command_parsers()["rank"]()
    >>> spelling(parser, ["--output", "x.jsonl"], "output_file"), spelling(parser, [], "output_file")
    ('--output', '--output_file')
    ```
    """
    names = next(action.option_strings for action in parser._actions if action.dest == dest)
    given = [arg.split("=", 1)[0] for arg in argv or [] if arg.split("=", 1)[0] in names]
    return given[-1] if given else names[0]
