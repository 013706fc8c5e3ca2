"""Checks made before a run writes anything: that no output lands on a file the run reads (`check_output_path`) and
that a requested push to the Hub can happen (`check_push_to_hub`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import HfApi, constants

from ..config import DMPOConfig
from .arguments import RecDataArguments


__all__ = ["check_output_path", "check_push_to_hub", "data_inputs"]


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


def check_push_to_hub(training_args: DMPOConfig) -> None:
    """`ValueError` before anything runs when `push_to_hub` is set but cannot push: the Hub is off (`HF_HUB_OFFLINE`),
    does not answer, or refuses the token (`hub_token`, else the saved login)."""
    if not training_args.push_to_hub:
        return
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
