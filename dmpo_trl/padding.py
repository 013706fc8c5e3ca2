"""Padding token ids into a batch: the one helper the trainer's collator, the scorer and generation share.

Example:
```python
>>> input_ids, attention_mask = pad_sequences([[5, 6, 7], [8]], pad_value=0, side="left")
>>> input_ids.tolist(), attention_mask.tolist()
([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from trl.trainer.utils import pad


def padding_id(tokenizer: Any) -> int:
    """The id that pads a batch for `tokenizer`: its pad token, else its EOS token, else 0.

    Example:
    ```python
    >>> class Tokenizer:
    ...     pad_token_id, eos_token_id = None, 2
    >>> padding_id(Tokenizer())
    2
    ```
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def pad_ids(
    sequences: Sequence[Sequence[int]],
    pad_value: int,
    side: Literal["left", "right"] = "right",
    pad_to_multiple_of: int | None = None,
) -> torch.Tensor:
    """A `(len(sequences), longest)` long tensor of `sequences`, filled with `pad_value` on `side` (TRL's `pad`)."""
    tensors = [torch.tensor(list(ids), dtype=torch.long) for ids in sequences]
    return pad(tensors, padding_value=pad_value, padding_side=side, pad_to_multiple_of=pad_to_multiple_of)


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_value: int,
    side: Literal["left", "right"] = "right",
    pad_to_multiple_of: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` for `sequences` padded on `side` (left for generation and scoring)."""
    input_ids = pad_ids(sequences, pad_value, side, pad_to_multiple_of)
    attention_mask = pad_ids([[1] * len(ids) for ids in sequences], 0, side, pad_to_multiple_of)
    return input_ids, attention_mask
