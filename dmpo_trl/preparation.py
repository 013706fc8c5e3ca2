"""Dataset preparation for `DMPOTrainer`: rows checked and tokenized into `prompt_ids`, `chosen_ids`, `rejected_ids`
(K id lists) and `num_rejected`, with rows over `max_length` dropped or reported.

`prepare_rows` is what `DMPOTrainer.prepare_dataset` (and TRL's constructor, through the trainer's
`_prepare_dataset`) runs on each split. Text rows are tokenized by `dmpo_trl.tokenization.tokenize_responses`, the
tokenization the scorer uses too; pre-tokenized rows are checked and subsampled the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset
from datasets.fingerprint import Hasher
from transformers import ProcessorMixin
from trl.trainer.utils import global_then_local_main_first

from ._trl_compat import dataset_fingerprint
from .rows import check_row, check_tokenized_row, extract_implicit_prompt, subsample
from .tokenization import tokenize_responses


# The trainer's warnings (rows dropped or truncated), under the logger name they have always had.
logger = logging.getLogger("dmpo_trl.trainer")


def length_status(
    prompt_ids: list, chosen_ids: list, rejected_ids: list, max_length: int, truncation_mode: str
) -> str | None:
    """`"dropped"` when the prompt alone fills `max_length` (`keep_start`), `"truncated"` when a response runs past.

    Example:
    ```python
    >>> length_status([1, 2, 3], [4], [[5, 6]], max_length=4, truncation_mode="keep_start")
    'truncated'
    ```
    """
    prompt = len(prompt_ids)
    if truncation_mode == "keep_start" and prompt >= max_length:
        return "dropped"
    longest = max([len(chosen_ids)] + [len(r) for r in rejected_ids])
    return "truncated" if prompt < max_length < prompt + longest else None


def pairwise_refusal(index: int, dataset_name: str, count: int, reason: str) -> str:
    """The error for a row with K > 1 rejected responses where TRL's pairwise loss runs (`reason` says why)."""
    return (
        f"Row {index} of the {dataset_name} dataset has {count} rejected responses, but {reason} runs TRL's pairwise "
        "DPO loss, which takes one rejected response per row. Use loss_type 'dmpo', 'sdpo', 'sigmoid' or "
        "'plackett_luce' without ld_alpha, use_weighting and f_divergence_type, or set max_negatives=1."
    )


class StreamedLengthCheck:
    """Filter for a streamed (`IterableDataset`) split, whose rows cannot be counted before training reads them.

    As rows stream in, it drops those whose prompt alone fills `max_length` (with `keep_start`) and warns about them
    and about responses that run past `max_length`, naming the row and the count so far; warnings come at counts
    1, 2, 4, 8, ... so that a long stream does not flood the log.
    """

    def __init__(self, max_length: int, truncation_mode: str, dataset_name: str):
        self.max_length, self.truncation_mode, self.dataset_name = max_length, truncation_mode, dataset_name
        self.dropped = self.truncated = 0

    def __call__(self, row: dict[str, Any], index: int) -> bool:
        status = length_status(
            row["prompt_ids"], row["chosen_ids"], row["rejected_ids"], self.max_length, self.truncation_mode
        )
        if status == "dropped":
            self.dropped += 1
            self._warn(self.dropped, f"Dropped row {index}", "its prompt alone fills", "dropped")
            return False
        if status == "truncated":
            self.truncated += 1
            self._warn(self.truncated, f"Row {index}", "a response runs past", "truncated")
        return True

    def _warn(self, count: int, subject: str, what: str, done: str) -> None:
        if count & (count - 1) == 0:  # a power of two
            logger.warning(
                f"{subject} of the streamed {self.dataset_name} dataset: {what} max_length={self.max_length}; "
                f"{count} row(s) {done} so far (reported at counts 1, 2, 4, 8, ...)."
            )


def _column_names(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names is not None else list(next(iter(dataset)).keys())


def refuse_vision_inputs(processing_class, train_dataset, eval_dataset) -> None:
    """Raise `NotImplementedError` for a processor (`ProcessorMixin`) or a dataset with an `image`/`images` column."""
    if isinstance(processing_class, ProcessorMixin):
        raise NotImplementedError(
            "DMPOTrainer takes a tokenizer as `processing_class`, not a processor "
            f"({type(processing_class).__name__}): vision-language models and image inputs are not supported."
        )
    if isinstance(eval_dataset, dict):
        datasets = [("train", train_dataset), *eval_dataset.items()]
    else:
        datasets = [("train", train_dataset), ("eval", eval_dataset)]
    for name, dataset in datasets:
        if dataset is None:
            continue
        images = [column for column in _column_names(dataset) if column in ("image", "images")]
        if images:
            raise NotImplementedError(
                f"The {name} dataset has an `{images[0]}` column: DMPOTrainer does not support image inputs "
                "(text-only rows: `prompt`, `chosen`, `rejected`)."
            )


def prepare_rows(dataset, processing_class, args, dataset_name: str, pairwise_reason: str | None = None):
    """Validate and tokenize rows into `prompt_ids`, `chosen_ids`, `rejected_ids` (K id lists) and `num_rejected`.

    Pre-tokenized rows (`prompt_ids`, `chosen_ids`, and `rejected_ids` as one id list or a list of K) are checked
    and subsampled the same way. The result's fingerprint (the cache key of `datasets`, and of TRL's precomputed
    reference log-probs) depends only on the input dataset, the tokenizer, and `max_negatives` with `seed`.
    `pairwise_reason` (why TRL's pairwise loss runs, or None) refuses rows with K > 1 rejected responses.

    Returns `(dataset, largest_k)`: `largest_k` is the largest K of a map-style dataset, 1 for a streamed one (its
    rows are checked as they stream in).
    """
    first = next(iter(dataset))
    pretokenized = "prompt_ids" in first
    map_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
    max_negatives = getattr(args, "max_negatives", None)
    seed = args.seed
    vocab_size = len(processing_class)

    # Plain values in the row functions: `map` with `num_proc` pickles them.
    def refuse_several(rejected: list, index: int) -> None:
        if pairwise_reason and len(rejected) > 1:
            raise ValueError(pairwise_refusal(index, dataset_name, len(rejected), pairwise_reason))

    def prepare_tokenized_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        rejected = subsample(check_tokenized_row(row, index, vocab_size), max_negatives, seed, index)
        refuse_several(rejected, index)
        return {"rejected_ids": rejected, "num_rejected": len(rejected)}

    def tokenize_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        _, rejected = check_row(row, index)
        rejected = subsample(rejected, max_negatives, seed, index)
        refuse_several(rejected, index)
        prompt_ids, responses_ids = tokenize_responses(
            processing_class,
            row["prompt"],
            [row["chosen"], *rejected],
            tools=row.get("tools"),
            chat_template_kwargs=row.get("chat_template_kwargs"),
        )
        return {
            "prompt_ids": prompt_ids,
            "chosen_ids": responses_ids[0],
            "rejected_ids": responses_ids[1:],
            "num_rejected": len(rejected),
        }

    largest_k = 1
    with global_then_local_main_first():
        if "prompt" not in first and not pretokenized:
            # The prompt is implicit in `chosen` and `rejected` (TRL's `extract_prompt`); `rejected` may be one
            # response (a string or a message list) or K of them.
            dataset = dataset.map(extract_implicit_prompt, with_indices=True, **map_kwargs)
        if isinstance(dataset, Dataset):
            map_kwargs["desc"] = f"{'Checking' if pretokenized else 'Tokenizing'} {dataset_name} dataset"
            # Only what changes the tokens: not the whole `args`, which the function's closure would bring in
            inputs = vocab_size if pretokenized else processing_class
            map_kwargs["new_fingerprint"] = Hasher.hash(
                (
                    "dmpo_trl.prepare",
                    dataset_fingerprint(dataset),
                    inputs,
                    max_negatives,
                    seed if max_negatives else None,
                )
            )
        prepare = prepare_tokenized_row if pretokenized else tokenize_row
        dataset = dataset.map(prepare, with_indices=True, **map_kwargs)
        if isinstance(dataset, Dataset):
            dataset, largest_k = check_lengths(dataset, args, dataset_name, pairwise_reason)
        elif args.max_length is not None:
            check = StreamedLengthCheck(args.max_length, args.truncation_mode, dataset_name)
            dataset = dataset.filter(check, with_indices=True)
    return dataset, largest_k


def check_lengths(dataset: Dataset, args, dataset_name: str, pairwise_reason: str | None = None):
    """Refuse K > 1 where TRL's pairwise loss runs (`pairwise_reason`), drop/warn about rows over `max_length`.

    Returns `(dataset, largest_k)`, the largest K of the rows.
    """
    num_rejected = dataset["num_rejected"]
    largest_k = max(num_rejected, default=1)
    if pairwise_reason and largest_k > 1:  # rows tokenized earlier, from the `datasets` cache
        row = next(i for i, k in enumerate(num_rejected) if k > 1)
        raise ValueError(pairwise_refusal(row, dataset_name, num_rejected[row], pairwise_reason))
    if args.max_length is None:
        return dataset, largest_k
    statuses = [
        length_status(p, c, rs, args.max_length, args.truncation_mode)
        for p, c, rs in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    ]
    truncated = statuses.count("truncated")
    if truncated:
        logger.warning(
            f"{truncated} of {len(dataset)} rows in the {dataset_name} dataset have a response that runs past "
            f"max_length={args.max_length}; those responses are truncated."
        )
    dropped = statuses.count("dropped")
    if dropped and dropped == len(dataset):
        raise ValueError(
            f"Every row of the {dataset_name} dataset has a prompt that alone fills max_length={args.max_length}, "
            "leaving no room for a response; raise max_length."
        )
    if dropped:
        logger.warning(
            f"Dropped {dropped} of {len(dataset)} rows from the {dataset_name} dataset: "
            f"their prompt alone fills max_length={args.max_length}, leaving no room for a response."
        )
        dataset = dataset.select([i for i, status in enumerate(statuses) if status != "dropped"])
    return dataset, largest_k
