"""Generate the CLI reference page (`reference/cli.md`) at build time, from the parsers themselves.

Every subcommand (`prepare`, `train`, `evaluate`, `rank`, `demo`) parses dataclasses with `trl.TrlParser`; their
rendered `--help` is stored with the package in `dmpo_trl/help/COMMAND.txt` (`dmpo_trl.cli.stored_help`, checked
against the live parser by a test). The top-level `dmpo-trl` parser is plain argparse (`dmpo_trl.cli.build_parser`),
rendered here, as is any registered command without stored help.
Run by the mkdocs-gen-files plugin (`mkdocs.yml`); nothing is written to `docs/`.
"""

from __future__ import annotations

import argparse
import os

import mkdocs_gen_files

from dmpo_trl.cli import COMMANDS, build_parser
from dmpo_trl.cli.stored_help import COMMANDS_WITH_STORED_HELP, HELP_DIR, WIDTH


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("dmpo-trl's parser has no subcommands")


def _stored(command: str) -> str:
    """The stored help text, without its first line (the library versions it was rendered with)."""
    text = (HELP_DIR / f"{command}.txt").read_text(encoding="utf-8")
    return text.partition("\n")[2]


def _fence(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def render() -> str:
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to COLUMNS, as the stored help was
    parser = build_parser()
    subparsers = _subparsers(parser)
    lines = [
        "# Command line reference",
        "",
        "Generated when the site is built: every subcommand from the help text stored with the package",
        "(`dmpo_trl/help/COMMAND.txt`, rendered by the real `trl.TrlParser` and checked against it by a test),",
        "`dmpo-trl` itself from `dmpo_trl.cli.build_parser`. The same text is what",
        "`dmpo-trl COMMAND --help` prints. How the commands fit together: [the command line](../how-to/cli.md).",
        "",
        "## dmpo-trl",
        "",
        _fence(parser.format_help()),
    ]
    for name in COMMANDS:
        lines += [f"## dmpo-trl {name}", ""]
        if COMMANDS[name].help:
            lines += [COMMANDS[name].help[:1].upper() + COMMANDS[name].help[1:] + ".", ""]
        if name in COMMANDS_WITH_STORED_HELP:
            lines += [f"Stored help: `dmpo_trl/help/{name}.txt`.", "", _fence(_stored(name))]
        else:
            lines += [_fence(subparsers[name].format_help())]
    return "\n".join(lines)


with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(render())
mkdocs_gen_files.set_edit_path("reference/cli.md", "gen_cli.py")
