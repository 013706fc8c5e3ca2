"""`dmpo-trl COMMAND --help` without importing torch: each command's help text, rendered once and stored.

The flags of `prepare`, `train`, `evaluate`, `demo` and `rank` come from dataclasses, some subclassing TRL's and
transformers' (`DMPOConfig`, `RecModelConfig`), and importing those takes seconds (torch, transformers, peft). Their
help is rendered by the real parser (`render_help`) into `dmpo_trl/help/COMMAND.txt`, whose first line records the
library versions it was rendered with; `--help` prints the stored text when the installed versions are the same, and
renders it live otherwise. A test checks that the stored text equals the live rendering, so it cannot drift:

    python -m dmpo_trl.cli.stored_help      # rewrite the stored help after changing a flag

Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path


__all__ = ["COMMANDS_WITH_STORED_HELP", "render_help", "stored_help", "write_stored_help"]

HELP_DIR = Path(__file__).resolve().parents[1] / "help"
"""Where the stored help lies: `dmpo_trl/help/COMMAND.txt`, package data."""
COMMANDS_WITH_STORED_HELP = ("prepare", "train", "evaluate", "demo", "rank")
WIDTH = 100
"""Columns the stored help is wrapped to (argparse reads `COLUMNS`)."""
# The packages whose dataclasses make the flags (DPOConfig, TrainingArguments, ModelConfig, ours): the stored help is
# used only with the versions it was rendered with (peft defines no flag, so a new peft keeps it valid)
_PACKAGES = ("trl", "transformers", "dmpo-trl")


def _versions() -> dict[str, str]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def stored_help(command: str) -> str | None:
    """The stored help of `command`, or None when there is none or it was rendered with other library versions.

    Example:
    ```python
    >>> stored_help("train").startswith("usage: dmpo-trl train")
    True
    >>> stored_help("no-such-command") is None
    True
    ```
    """
    path = HELP_DIR / f"{command}.txt"
    if not path.is_file():
        return None
    header, _, text = path.read_text(encoding="utf-8").partition("\n")
    try:
        rendered_with = json.loads(header)
    except json.JSONDecodeError:
        return None
    return text if rendered_with == _versions() else None


def render_help(command: str) -> str:
    """The help text of `command` as its parser prints it, `WIDTH` columns wide (imports torch, TRL...)."""
    from .arguments import command_parsers  # imports torch and TRL: only when the stored help does not fit

    parser = command_parsers()[command]()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def write_stored_help(folder: str | Path = HELP_DIR) -> list[Path]:
    """Render every command's help into `folder/COMMAND.txt`, headed by the library versions; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = json.dumps(_versions())
    paths = []
    for command in COMMANDS_WITH_STORED_HELP:
        path = folder / f"{command}.txt"
        path.write_text(f"{header}\n{render_help(command)}", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_stored_help(*sys.argv[1:2]):
        print(f"Wrote {written}")
