"""`dmpo-trl prepare`: preference rows ("train", "validation") plus `split.json`, written to `--output_dir`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets import DatasetDict

from ..models import ModelPackageMissing
from ..recipe import (
    build_datasets,
    check_output_path,
    data_inputs,
    data_seed,
    load_interaction_log,
    split_record,
    split_users,
    write_split,
)
from .arguments import command_parsers, parse_args
from .checks import chat_template_decides, log_names, model_files
from .errors import UsageError, user_inputs
from .process import prepare_process


__all__ = ["main"]


def _check_prepare_output(output: Path, overwrite: bool) -> None:
    """`UsageError` when prepare's output folder already holds files, unless `--overwrite_output_dir`."""
    held = sorted(f.name for f in output.iterdir()) if output.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise UsageError(
            f"--output_dir {output} already holds files ({shown}): prepare would replace its split.json, and a "
            "model trained there would be ranked on the new split; pass --overwrite_output_dir to write there anyway"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl prepare`: preference rows ("train", "validation") plus `split.json`, written to `--output_dir`.

    Example:
    ```python
    >>> main(["--num_train_users", "64", "--output_dir", "data/ml100k"])  # doctest: +SKIP
    0
    ```
    """
    prepare_process()
    parser = command_parsers()["prepare"]()
    with user_inputs():
        data_args, prepare_args = parse_args(parser, argv)
        data_args = data_args.for_mode("likelihood")
        if not data_args.is_interaction_log:
            raise UsageError(f"Unknown dataset {data_args.dataset_name!r}; prepare reads {log_names()}")
        if data_args.negative_strategy == "model":
            raise UsageError(
                "--negative_strategy model mines negatives with the model during training; prepare writes fixed "
                "rows: train with `dmpo-trl train --negative_strategy model`, or prepare with another strategy"
            )
        output = Path(prepare_args.output_dir)
        check_output_path(output, data_inputs(data_args), "--output_dir", folder=True)
        _check_prepare_output(output, prepare_args.overwrite_output_dir)
        model_files(prepare_args.model_name_or_path, prepare_args.gguf_file)
        log = load_interaction_log(data_args)
        split = split_users(data_args, log)
    conversational = data_args.conversational
    if conversational is None:
        with user_inputs(OSError, ModelPackageMissing):
            conversational = chat_template_decides(
                prepare_args.model_name_or_path, prepare_args.gguf_file, prepare_args.trust_remote_code
            )
    seed = data_seed(data_args, 0)  # split_users' default seed
    with user_inputs():
        built = build_datasets(data_args, log, split, conversational, seed)
        data = DatasetDict({name: dataset for name, dataset in built.items() if len(dataset)})  # no empty train
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
