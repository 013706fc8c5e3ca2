"""`dmpo-trl rank --model_name_or_path DIR --input_file requests.jsonl --output_file ranked.jsonl`: rank every
request with a trained run (`dmpo_trl.Ranker`), write the rankings atomically.

With `--retriever popular --retrieve_top M [--fusion_weight W]`, a request without `candidates` is ranked two-stage
from the whole catalogue (`Ranker.recommend`): the M most-interacted items its history does not hold, reranked by
the model. `--retriever sasrec` or `gru4rec` proposes them by Cornac's sequential model instead
(`ClassicRecommender.score_history`), fitted once at startup on the interaction log the run was made from
(`load_run_log`: the log its `split.json` records, each test user's target and what follows it left out, as the
`popular` counts leave them out). Without `--retriever`, every request needs its candidates.

Every check of the model folder, `ranker.json`, `split.json` and its log, the requests and the output path comes
before the model loads; a mistake ends as one line, `dmpo-trl rank: error: ...`, with exit status 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..classic import ClassicRecommender, require_cornac, training_sequences
from ..data import InteractionLog, UserExample
from ..distributed import process_rank
from ..journal import atomic_write_text
from ..ranking import Ranker, check_ranker_folder, read_requests
from ..recipe import SPLIT_FILE, data_inputs, load_interaction_log, load_split, saved_test_users, split_data_arguments
from .arguments import command_parsers, parse_args, spelling
from .errors import user_inputs
from .process import prepare_process


__all__ = ["HISTORY_RETRIEVERS", "RunLog", "fit_history_retriever", "load_run_log", "main"]

HISTORY_RETRIEVERS = ("sasrec", "gru4rec")
"""The classic models `--retriever` offers: they score a request's history (BPR scores only its training users)."""


@dataclass
class RunLog:
    """The interaction log a trained run was made from, the split's test examples (held out of any fit), the
    split's seed, the data files read (path -> flag), the split file and where the log comes from (its
    interactions file or dataset name)."""

    log: InteractionLog
    held_out: list[UserExample]
    seed: int
    inputs: dict[str, str]
    split_file: Path
    source: str


def load_run_log(model_dir: str | Path) -> RunLog:
    """The log that `model_dir/split.json` records (`split_data_arguments`) and the split's test examples, checked
    against it (`saved_test_users`); `ValueError` naming the file when there is none, or the log cannot be loaded.

    Example:
    ```python
    >>> load_run_log("outputs/demo").log.num_users  # doctest: +SKIP
    943
    ```
    """
    split_file = Path(model_dir) / SPLIT_FILE
    if not split_file.is_file():
        raise ValueError(
            f"{model_dir} has no {SPLIT_FILE}: it records the interaction log the run was made from, which a "
            "classic retriever is fitted on"
        )
    record = load_split(split_file)
    data_args = split_data_arguments(record)
    if not data_args.is_interaction_log:
        raise ValueError(f"{split_file} records no interaction log (data.dataset_name {data_args.dataset_name!r})")
    try:
        log = load_interaction_log(data_args)
    except (OSError, ValueError) as exc:
        raise ValueError(f"the interaction log {split_file} records cannot be loaded: {exc}") from exc
    held_out = saved_test_users(record, log, split_file)[0] if record["test"] else []
    source = data_args.interactions or data_args.dataset_name
    return RunLog(log, held_out, record["seed"] or 0, data_inputs(data_args), split_file, source)


def fit_history_retriever(run: RunLog, name: str, sequences: dict[str, list[str]] | None = None) -> ClassicRecommender:
    """`name` (`HISTORY_RETRIEVERS`) with its default settings, seeded by the split's seed, fitted on every
    interaction of `run.log` but each test user's target and what follows it (`training_sequences`, or `sequences`
    where the caller already cut them); its `score_history` is `Ranker.recommend`'s retriever."""
    if name not in HISTORY_RETRIEVERS:
        raise ValueError(f"--retriever {name}: choose from {HISTORY_RETRIEVERS}")
    if sequences is None:
        sequences = training_sequences(run.log, run.held_out)
    return ClassicRecommender(name, seed=run.seed).fit(sequences)


def _files_read(model_dir: Path, config: dict[str, Any]) -> list[Path]:
    """The files that ranking with `model_dir` may read: the model folder's, and a local base model folder's
    (JSON-lines files aside, which no loader reads)."""
    base = config["base_model"].get("model_name_or_path")
    folders = [model_dir, *([Path(base)] if base and Path(base).is_dir() else [])]
    return [path for folder in folders for path in folder.iterdir() if path.is_file() and path.suffix != ".jsonl"]


def _check_output(output: str | Path, reads: Sequence[Path], flag: str = "--output_file") -> Path:
    """`output` as a file to write: refuses a folder, a path under a file or an unwritable folder, and a file that
    the command reads (compared as files, so other spellings and links of it count). `flag` names it."""
    target = Path(output)
    if target.is_dir():
        raise ValueError(f"{flag} {output} is a folder; give the path of the file to write")
    read = next((path for path in reads if target.exists() and target.samefile(path)), None)
    if read is not None:
        raise ValueError(f"{flag} {output} is {read}, which this command reads; write the ranking to another file")
    parent = next(folder for folder in target.absolute().parents if folder.exists())
    if not parent.is_dir():
        raise ValueError(f"{flag} {output}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {output}: no permission to write in {parent}")
    return target


def _check_retriever(args, model_dir: Path, config: dict[str, Any]) -> RunLog | None:
    """Refuse `--retrieve_top` below 1, `--fusion_weight` without `--retriever`, `--retriever popular` for a run
    whose `ranker.json` saved no interaction counts, and a classic retriever without Cornac or without the log the
    run was made from (which it returns)."""
    if args.retrieve_top < 1:
        raise ValueError(f"--retrieve_top {args.retrieve_top}: the retriever proposes at least one item")
    if args.fusion_weight and not args.retriever:
        raise ValueError(f"--fusion_weight {args.fusion_weight} fuses the retriever's scores: give --retriever too")
    if args.retriever == "popular" and not config["catalogue"].get("popularity"):
        raise ValueError(
            f"--retriever popular ranks by the interaction counts ranker.json saves with a popularity prior; "
            f"{model_dir / 'ranker.json'} has none (the run ranks without the prior)"
        )
    if args.retriever in HISTORY_RETRIEVERS:
        require_cornac()
        return load_run_log(model_dir)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl rank`: rank every request of `--input_file` with `--model_name_or_path`, write `--output_file`.

    Example:
    ```python
    >>> main(["--model", "outputs/demo", "--input", "in.jsonl", "--output", "out.jsonl"])  # doctest: +SKIP
    0
    ```
    """
    prepare_process()  # the CLI's process settings (OpenMP waits, bitsandbytes' optional-kernel notice)
    parser = command_parsers()["rank"]()
    (args,) = parse_args(parser, argv)
    with user_inputs(ImportError):  # ImportError: a classic retriever without the `classic` extra
        model_dir, config = check_ranker_folder(args.model_name_or_path)
        run = _check_retriever(args, model_dir, config)
        requests = read_requests(args.input_file, config["catalogue"]["titles"], need_candidates=not args.retriever)
        reads = [Path(args.input_file), *_files_read(model_dir, config), *map(Path, run.inputs if run else ())]
        output = _check_output(args.output_file, reads, spelling(parser, argv, "output_file"))
    retriever = args.retriever
    if run is not None:
        sequences = training_sequences(run.log, run.held_out)
        kept = sum(map(len, sequences.values()))
        if process_rank()[0] == 0:
            print(
                f"Fitting {args.retriever} on {kept} interactions of {run.source} (the targets of the test users "
                f"of {run.split_file}, and what follows them, left out)",
                flush=True,
            )
        retriever = fit_history_retriever(run, args.retriever, sequences).score_history
    with user_inputs():
        ranker = Ranker.from_pretrained(
            model_dir, device=args.device, merge=args.merge, trust_remote_code=args.trust_remote_code
        )
    rankings = ranker.rank_batch(
        requests,
        args.show_progress,
        retriever=retriever,
        top_m=args.retrieve_top,
        fusion_weight=args.fusion_weight,
    )
    if process_rank()[0] != 0:  # under torchrun every process ranked its share; the first one writes
        return 0
    lines = [
        json.dumps({**request, "ranking": [{"item": c, "title": ranker.title(c), "score": s} for c, s in ranking]},
                   ensure_ascii=False) + "\n"
        for request, ranking in zip(requests, rankings)
    ]  # fmt: skip
    atomic_write_text(output, "".join(lines))
    print(f"Ranked {len(requests)} requests with {args.model_name_or_path}: {output}")
    return 0
