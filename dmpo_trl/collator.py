"""Batching rows with one chosen and K rejected responses (K may differ between rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad

from .sharing import pack_row, pad_rows


def rejected_layout(num_rejected: list[int]) -> dict[str, torch.Tensor]:
    """Where each row's rejected sequences sit in the layout [B chosen, sum(K) rejected], worked out on the host.

    `num_rejected` (B,); `rejected_index` (B, Kmax): the sequence index of each row's k-th rejected response (0 where
    a row has fewer); `rejected_mask` (B, Kmax); `sequence_rows` (number of sequences,): the row of each sequence.
    The loss reads sizes from these shapes, so a training step needs no device-to-host copy to lay out its K.

    Example:
    ```python
    >>> layout = rejected_layout([2, 1])
    >>> layout["rejected_index"].tolist(), layout["sequence_rows"].tolist()
    ([[2, 3], [4, 0]], [0, 1, 0, 0, 1])
    ```
    """
    batch_size, width = len(num_rejected), max(num_rejected, default=1)
    index = torch.zeros(batch_size, width, dtype=torch.long)
    rows = list(range(batch_size))
    for row, count in enumerate(num_rejected):
        index[row, :count] = torch.arange(len(rows), len(rows) + count)
        rows += [row] * count
    return {
        "num_rejected": torch.tensor(num_rejected, dtype=torch.long),
        "rejected_index": index,
        "rejected_mask": torch.arange(width) < torch.tensor(num_rejected).unsqueeze(1),
        "sequence_rows": torch.tensor(rows, dtype=torch.long),
    }


@dataclass
class DataCollatorForMultiPreference(DataCollatorMixin):
    """
    Pads tokenized rows `{"prompt_ids", "chosen_ids", "rejected_ids": [K lists]}` into one batch of sequences.

    The sequences are laid out as TRL's [`~trl.trainer.dpo_trainer.DataCollatorForPreference`] does for K = 1: the B
    chosen sequences first, then every row's rejected sequences in row order (sum of K rows in all, no padding rows),
    so a pairwise batch is identical to TRL's. `num_rejected` (B,), `rejected_index`, `rejected_mask` and
    `sequence_rows` tell which rejected sequence belongs to which row (see `rejected_layout`).
    Each sequence is truncated to `max_length` before padding (`keep_start` keeps the prompt's start).

    With `share_prompt=True` each row becomes one packed sequence instead (see `dmpo_trl.sharing`): the prompt once,
    then a block per response, with `position_ids`, `block_ids` (for the block attention mask), `labels` (the token
    each position predicts) and `owner` (which sequence, in the layout above, a scored position belongs to).

    Optional `ref_chosen_logps` (float per row) and `ref_rejected_logps` (a list per row, at least K long) are passed
    through, the latter flattened in the same order as the rejected sequences.

    Example:
    ```python
    >>> collator = DataCollatorForMultiPreference(pad_token_id=0)
    >>> batch = collator([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [[4], [5, 6]]}])
    >>> batch["input_ids"]
    tensor([[1, 2, 3, 0],
            [1, 2, 4, 0],
            [1, 2, 5, 6]])
    >>> batch["num_rejected"]
    tensor([2])
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    share_prompt: bool = False
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._shared(examples) if self.share_prompt else self._unshared(examples)
        batch.update(rejected_layout([len(example["rejected_ids"]) for example in examples]))
        if "ref_chosen_logps" in examples[0]:
            batch["ref_chosen_logps"] = torch.tensor([example["ref_chosen_logps"] for example in examples])
        if "ref_rejected_logps" in examples[0]:
            batch["ref_rejected_logps"] = torch.tensor(
                [
                    logp
                    for example in examples
                    for logp in example["ref_rejected_logps"][: len(example["rejected_ids"])]
                ]
            )
        return batch

    def _shared(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.truncation_mode != "keep_start":
            raise ValueError("Prefix sharing truncates with truncation_mode='keep_start' only.")
        rows, first_sequence = [], len(examples)  # sequence index of each row's first rejected response
        for index, example in enumerate(examples):
            row = pack_row(example["prompt_ids"], [example["chosen_ids"], *example["rejected_ids"]], self.max_length)
            # owner k=0 is the chosen (sequence `index`), k>0 the rejected ones after all chosen sequences
            row["owner"] = [-1 if k < 0 else index if k == 0 else first_sequence + k - 1 for k in row["owner"]]
            first_sequence += len(example["rejected_ids"])
            rows.append(row)
        batch = pad_rows(rows, self.pad_token_id, self.pad_to_multiple_of)
        batch["attention_mask"] = (batch["block_ids"] >= 0).long()
        return batch

    def _unshared(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        completions = [example["chosen_ids"] for example in examples]
        prompts = [example["prompt_ids"] for example in examples]
        for example in examples:
            completions.extend(example["rejected_ids"])
            prompts.extend([example["prompt_ids"]] * len(example["rejected_ids"]))

        sequences = [prompt + completion for prompt, completion in zip(prompts, completions)]
        completion_masks = [
            [0] * len(prompt) + [1] * len(completion) for prompt, completion in zip(prompts, completions)
        ]
        if self.max_length is not None:
            if self.truncation_mode == "keep_start":
                window = slice(None, self.max_length)
            elif self.truncation_mode == "keep_end":
                window = slice(-self.max_length, None)
            else:
                raise ValueError(f"Unsupported truncation mode {self.truncation_mode!r}: use 'keep_start'.")
            sequences = [ids[window] for ids in sequences]
            completion_masks = [mask[window] for mask in completion_masks]

        def padded(rows: list[list[int]], value: int) -> torch.Tensor:
            tensors = [torch.tensor(row, dtype=torch.long) for row in rows]
            return pad(tensors, padding_value=value, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)

        return {
            "input_ids": padded(sequences, self.pad_token_id),
            "attention_mask": padded([[1] * len(ids) for ids in sequences], 0),
            "completion_mask": padded(completion_masks, 0),
        }
