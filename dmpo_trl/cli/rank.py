"""`dmpo-trl rank --model_name_or_path DIR --input_file requests.jsonl --output_file ranked.jsonl`: rank every
request with a trained run (`dmpo_trl.Ranker`), write the rankings atomically.

With `--retriever popular --retrieve_top M [--fusion_weight W]`, a request without `candidates` is ranked two-stage
from the whole catalogue (`Ranker.recommend`): the M most-interacted items its history does not hold, reranked by
the model. Without `--retriever`, every request needs its candidates.

Every check of the model folder, `ranker.json`, the requests and the output path comes before the model loads; a
mistake ends as one line, `dmpo-trl rank: error: ...`, with exit status 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..distributed import process_rank
from ..journal import atomic_write_text
from ..ranking import Ranker, check_ranker_folder, read_requests
from .arguments import command_parsers, parse_args, spelling
from .errors import user_inputs
from .process import prepare_process


__all__ = ["main"]


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


def _check_retriever(args, argv: Sequence[str] | None, model_dir: Path, config: dict[str, Any]) -> None:
    """Refuse `--retrieve_top` below 1, `--fusion_weight` without `--retriever`, and `--retriever popular` for a run
    whose `ranker.json` saved no interaction counts."""
    if args.retrieve_top < 1:
        raise ValueError(f"--retrieve_top {args.retrieve_top}: the retriever proposes at least one item")
    if args.fusion_weight and not args.retriever:
        raise ValueError(f"--fusion_weight {args.fusion_weight} fuses the retriever's scores: give --retriever too")
    if args.retriever == "popular" and not config["catalogue"].get("popularity"):
        raise ValueError(
            f"--retriever popular ranks by the interaction counts ranker.json saves with a popularity prior; "
            f"{model_dir / 'ranker.json'} has none (the run ranks without the prior)"
        )


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
    with user_inputs():
        model_dir, config = check_ranker_folder(args.model_name_or_path)
        _check_retriever(args, argv, model_dir, config)
        requests = read_requests(args.input_file, config["catalogue"]["titles"], need_candidates=not args.retriever)
        reads = [Path(args.input_file), *_files_read(model_dir, config)]
        output = _check_output(args.output_file, reads, spelling(parser, argv, "output_file"))
        ranker = Ranker.from_pretrained(
            model_dir, device=args.device, merge=args.merge, trust_remote_code=args.trust_remote_code
        )
    rankings = ranker.rank_batch(
        requests,
        args.show_progress,
        retriever=args.retriever,
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
