"""Batching rows with one chosen and K rejected responses (K may differ between rows), shared or unshared.

Prefix sharing (`dmpo_trl.sharing`) packs a row into one sequence of P + sum(C_k + 1) tokens with a dense L x L block
attention mask: it saves the repeated prompt but pays attention over the whole packed row, so with responses much
longer than the prompt it costs more than it saves. `share_prompt="auto"` decides per batch with `shares_prompt`, from
token counts alone:

    cost(layout) = sequences x (L + L^2 / ATTENTION_LENGTH)      L = the layout's padded length after max_length

and packs when that cost is the lower one and the packed row has at most `MAX_PACKED_LENGTH` tokens (the mask and
attention grow with L^2; at 4096 tokens a float mask is 64 MB per row). ATTENTION_LENGTH = 3000 is the length whose
attention costs as much as its per-token work, fitted to the shared/unshared step-time ratio of each shape measured
side by side (`python -m benchmarks.prefix_sharing --sweep`: SmolLM2-135M + LoRA r=8, fp32, gradient
checkpointing, 2 CPU threads, K=4, one row per step;
`benchmarks/results/prefix_sharing/policy/prefix_sharing_policy.md`):

    prompt P, response C (tokens)    450/8   100/50  30/150  450/100  200/200  30/400
    shared / unshared, measured      0.13    0.34    1.08    0.34     0.65     1.89     (a busy machine)
    shared / unshared, rule          0.22    0.50    1.04    0.39     0.74     1.39

The sweep alone fits 2500; with two pairs measured earlier (prompt and responses ~160 words each: 0.71;
prompt ~20 words, responses ~300 words: 1.25) it fits 3100. Only the side on which a ratio falls changes the
decision, and the rule puts every measured shape on its side. The figures come from a CPU; other hardware may
balance tokens and attention differently (not measured here): `share_prompt=True` or `False` overrides the rule.

Several packed rows can share one sequence (`pack_rows`, `dmpo_trl.sharing.group_rows`): a batch of rows of uneven
length then carries no padding between rows, at the price of attention over the longer sequence. `pack_rows="auto"`
groups rows by the same cost, tokens plus attention (one row per sequence among the candidates), so that it groups
only where that is cheaper, typically short rows in the padding a long row leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers.data.data_collator import DataCollatorMixin

from .padding import pad_ids, pad_sequences
from .sharing import concatenate_rows, group_rows, pack_row, pad_rows


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


#: Sequence length at which a sequence's attention costs as much as its per-token work (fitted, see above).
ATTENTION_LENGTH = 3000
#: `share_prompt="auto"` never packs a row longer than this: the dense mask and attention grow with its square.
MAX_PACKED_LENGTH = 4096

SharePrompt = bool | Literal["auto"]
PackRows = bool | Literal["auto"]


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if isinstance(multiple, int) and multiple > 0 else length


def _completion_lengths(example: dict[str, Any], max_length: int | None) -> list[int]:
    prompt = len(example["prompt_ids"])
    completions = [len(example["chosen_ids"]), *map(len, example["rejected_ids"])]
    if max_length is not None:
        completions = [min(c, max(max_length - prompt, 0)) for c in completions]
    return completions


def packed_length(example: dict[str, Any], max_length: int | None = None) -> int:
    """Tokens of a row's packed sequence (`pack_row`) after the `max_length` cut: P - 1 + sum(C_k + 1).

    Example:
    ```python
    >>> packed_length({"prompt_ids": [1, 2, 3], "chosen_ids": [4], "rejected_ids": [[5, 6], [7]]})
    9
    ```
    """
    return len(example["prompt_ids"]) - 1 + sum(c + 1 for c in _completion_lengths(example, max_length))


def layout_lengths(
    examples: list[dict[str, Any]], max_length: int | None = None, pad_to_multiple_of: int | None = None
) -> dict[str, tuple[int, int]]:
    """`{"shared": (sequences, padded length), "unshared": (sequences, padded length)}` of a batch in each layout.

    Lengths are the collator's own, after its `max_length` cut (`keep_start`) and `pad_to_multiple_of` rounding.

    Example:
    ```python
    >>> layout_lengths([{"prompt_ids": [1, 2, 3], "chosen_ids": [4], "rejected_ids": [[5, 6], [7]]}])
    {'shared': (1, 9), 'unshared': (3, 5)}
    ```
    """
    packed, unshared, sequences = 0, 0, 0
    for example in examples:
        prompt = len(example["prompt_ids"])
        completions = _completion_lengths(example, max_length)
        packed = max(packed, packed_length(example, max_length))
        full = prompt + max(completions)
        unshared = max(unshared, full if max_length is None else min(full, max_length))
        sequences += len(completions)
    return {
        "shared": (len(examples), _round_up(packed, pad_to_multiple_of)),
        "unshared": (sequences, _round_up(unshared, pad_to_multiple_of)),
    }


def grouping(
    lengths: list[int],
    max_packed_length: int | None = MAX_PACKED_LENGTH,
    pad_to_multiple_of: int | None = None,
    by_cost: bool = False,
) -> list[list[int]]:
    """`group_rows` with the collator's cost: padded tokens, or with `by_cost` tokens plus attention (`layout_cost`).

    With `by_cost` (the `pack_rows="auto"` grouping), one row per sequence is among the candidates, so rows share a
    sequence only where that is cheaper: typically short rows filling the padding that a long row leaves them.

    Example:
    ```python
    >>> grouping([500, 520, 510, 490]), grouping([500, 520, 510, 490], by_cost=True)
    ([[0, 1, 2, 3]], [[0], [1], [2], [3]])
    >>> grouping([2000, 100, 100, 100], max_packed_length=2000, by_cost=True)
    [[0], [1, 2, 3]]
    ```
    """
    if by_cost:
        return group_rows(
            lengths, max_packed_length, lambda count, length: layout_cost(count, _round_up(length, pad_to_multiple_of))
        )
    return group_rows(lengths, max_packed_length, lambda count, length: count * _round_up(length, pad_to_multiple_of))


def grouped_lengths(
    lengths: list[int],
    max_packed_length: int | None = MAX_PACKED_LENGTH,
    pad_to_multiple_of: int | None = None,
    by_cost: bool = False,
) -> tuple[int, int]:
    """(sequences, padded length) of the `grouping` of packed rows of `lengths` tokens.

    Example:
    ```python
    >>> grouped_lengths([500, 300, 200, 450], max_packed_length=1000)
    (2, 750)
    >>> grouped_lengths([500, 300, 200, 450], max_packed_length=1000, by_cost=True)
    (3, 500)
    ```
    """
    groups = grouping(lengths, max_packed_length, pad_to_multiple_of, by_cost)
    longest = max((sum(lengths[index] for index in group) for group in groups), default=0)
    return len(groups), _round_up(longest, pad_to_multiple_of)


def layout_cost(sequences: int, length: int) -> float:
    """Relative cost of a training step over `sequences` rows of `length` tokens: tokens plus attention."""
    return sequences * (length + length**2 / ATTENTION_LENGTH)


def shares_prompt(
    examples: list[dict[str, Any]],
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    max_packed_length: int | None = MAX_PACKED_LENGTH,
) -> bool:
    """Whether prefix sharing is the cheaper layout for this batch (the `share_prompt="auto"` rule, module docstring).

    Example:
    ```python
    >>> short = {"prompt_ids": list(range(400)), "chosen_ids": [1], "rejected_ids": [[2], [3], [4]]}
    >>> long = {"prompt_ids": [1, 2], "chosen_ids": list(range(300)), "rejected_ids": [list(range(300))] * 3}
    >>> shares_prompt([short]), shares_prompt([long])
    (True, False)
    ```
    """
    lengths = layout_lengths(examples, max_length, pad_to_multiple_of)
    if max_packed_length is not None and lengths["shared"][1] > max_packed_length:
        return False
    return layout_cost(*lengths["shared"]) < layout_cost(*lengths["unshared"])


@dataclass
class DataCollatorForMultiPreference(DataCollatorMixin):
    """
    Pads tokenized rows `{"prompt_ids", "chosen_ids", "rejected_ids": [K lists]}` into one batch of sequences.

    The sequences are laid out as TRL's [`~trl.trainer.dpo_trainer.DataCollatorForPreference`] does for K = 1: the B
    chosen sequences first, then every row's rejected sequences in row order (sum of K rows in all, no padding rows),
    so a pairwise batch is identical to TRL's. `num_rejected` (B,), `rejected_index`, `rejected_mask` and
    `sequence_rows` tell which rejected sequence belongs to which row (see `rejected_layout`); `row_tokens` (B,) counts
    each row's tokens in that one-sequence-per-response layout, in either layout (the `num_tokens` metric).
    Each sequence is truncated to `max_length` before padding (`keep_start` keeps the prompt's start).

    With `share_prompt=True` each row becomes one packed sequence instead (see `dmpo_trl.sharing`): the prompt once,
    then a block per response, with `position_ids`, `block_ids` (for the block attention mask), `labels` (the token
    each position predicts) and `owner` (which sequence, in the layout above, a scored position belongs to). With
    `share_prompt="auto"` each batch takes the layout that `shares_prompt` finds cheaper, packing no row longer than
    `max_packed_length` (module docstring); a batch left unshared is exactly the `share_prompt=False` batch.
    `"auto"` never shares with `truncation_mode="keep_end"`, which the packed layout cannot reproduce.

    With `pack_rows=True` a shared batch puts several packed rows in one sequence, up to `max_packed_length` tokens
    (`dmpo_trl.sharing.group_rows`), with `row_ids` (the row of each token, -1 on padding) that keep attention within
    a row, grouped for the fewest padded tokens; `pack_rows="auto"` groups for the lowest `layout_cost` instead
    (`grouping`), which leaves rows one per sequence where grouping costs more. Unshared batches are never grouped.

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
    share_prompt: SharePrompt = False
    max_packed_length: int | None = MAX_PACKED_LENGTH
    pack_rows: PackRows = False
    return_tensors: str = "pt"

    def __post_init__(self):
        if self.share_prompt not in (True, False, "auto"):
            raise ValueError(f"share_prompt must be True, False or 'auto', got {self.share_prompt!r}.")
        if self.pack_rows not in (True, False, "auto"):
            raise ValueError(f"pack_rows must be True, False or 'auto', got {self.pack_rows!r}.")

    def uses_shared_layout(self, examples: list[dict[str, Any]]) -> bool:
        """The layout `torch_call` gives these rows: `share_prompt` itself, or the per-batch rule for `"auto"`."""
        if self.share_prompt != "auto":
            return bool(self.share_prompt)
        if self.truncation_mode != "keep_start":
            return False
        return shares_prompt(examples, self.max_length, self.pad_to_multiple_of, self.max_packed_length)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._shared(examples) if self.uses_shared_layout(examples) else self._unshared(examples)
        batch.update(rejected_layout([len(example["rejected_ids"]) for example in examples]))
        batch["row_tokens"] = torch.tensor([self._row_tokens(example) for example in examples])
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

    def _row_tokens(self, example: dict[str, Any]) -> int:
        """Tokens of the row's K + 1 sequences one per row, after `max_length`: what TRL counts in `num_tokens`."""
        prompt = len(example["prompt_ids"])
        lengths = [prompt + len(response) for response in [example["chosen_ids"], *example["rejected_ids"]]]
        return sum(min(length, self.max_length) if self.max_length is not None else length for length in lengths)

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
        if self.pack_rows:
            lengths = [len(row["input_ids"]) for row in rows]
            groups = grouping(lengths, self.max_packed_length, self.pad_to_multiple_of, self.pack_rows == "auto")
            if self.pack_rows is True or len(groups) < len(rows):
                rows = concatenate_rows(rows, groups)
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

        input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id, "right", self.pad_to_multiple_of)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": pad_ids(completion_masks, 0, "right", self.pad_to_multiple_of),
        }
