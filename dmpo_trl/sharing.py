"""Prefix sharing: the prompt runs once for all of its responses, in one packed sequence.

A row with prompt p (P tokens) and responses r_0..r_K becomes one sequence

    p[:-1] | p[-1] r_0 | p[-1] r_1 | ... | p[-1] r_K

with a block attention mask (each block sees the shared prompt and itself, causally) and position ids that restart
at P-1 in every block, so every response is scored exactly as if it followed the prompt alone. The last prompt token
travels with each block because it is the one that predicts a response's first token. The cost falls from
(K+1)(P+C) tokens to P+(K+1)(C+1).

Why a packed sequence rather than a key/value cache reused across responses: it is a single ordinary forward, so
gradient checkpointing (which turns the cache off in training), LoRA, 4-bit QLoRA and TRL's fused log-prob head all
work unchanged, and the policy, the reference, precomputed reference log-probs and the ranking evaluator share one
code path. It needs an attention implementation that takes a custom 4D mask (`eager`, `sdpa`); on any other the
trainer falls back to the unshared path with a warning.
"""

from __future__ import annotations

import torch


SUPPORTED_ATTENTION = ("eager", "sdpa")


def pack_row(prompt_ids: list[int], completions: list[list[int]], max_length: int | None = None) -> dict[str, list]:
    """One packed sequence for a prompt and its completions.

    Returns `input_ids`, `position_ids`, `block_ids` (0 = shared prompt, k+1 = completion k), `labels` (the token each
    position predicts, -100 where none is scored) and `owner` (the index of the completion whose token a position
    predicts, -1 elsewhere). With `max_length`, each completion is cut so that prompt + completion fits, as the
    unshared collator would cut the sequence prompt + completion.

    Example:
    ```python
    >>> row = pack_row([5, 6, 7], [[8], [9, 10]])
    >>> row["input_ids"], row["position_ids"], row["labels"]
    ([5, 6, 7, 8, 7, 9, 10], [0, 1, 2, 3, 2, 3, 4], [-100, -100, 8, -100, 9, 10, -100])
    ```
    """
    if len(prompt_ids) == 0:
        raise ValueError("Prefix sharing needs a non-empty prompt: its last token predicts each completion's first.")
    shared, last = prompt_ids[:-1], prompt_ids[-1]
    row = {
        "input_ids": list(shared),
        "position_ids": list(range(len(shared))),
        "block_ids": [0] * len(shared),
        "labels": [-100] * len(shared),
        "owner": [-1] * len(shared),
    }
    for k, completion in enumerate(completions):
        if max_length is not None:
            completion = completion[: max(max_length - len(prompt_ids), 0)]
        block = [last, *completion]
        row["input_ids"] += block
        row["position_ids"] += list(range(len(shared), len(shared) + len(block)))
        row["block_ids"] += [k + 1] * len(block)
        row["labels"] += [*completion, -100]
        row["owner"] += [k] * len(completion) + [-1]
    return row


def block_attention_mask(block_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, L) block ids -> (B, 1, L, L) mask: causal, and a token sees the shared prompt (block 0) and its own block.

    Padding has block id -1 and is seen by nothing but itself. Returns a boolean mask (True = attend) for `sdpa`, or,
    given `dtype`, the additive float mask that `eager` attention adds to its scores.
    """
    length = block_ids.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=block_ids.device).tril()
    query, key = block_ids.unsqueeze(2), block_ids.unsqueeze(1)
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=block_ids.device)  # no query row is left empty
    allowed = allowed.unsqueeze(1)
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=block_ids.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def attention_mask_for(model, block_ids: torch.Tensor) -> torch.Tensor:
    """The block mask in the form `model`'s attention implementation expects."""
    implementation = model.config._attn_implementation
    if implementation == "eager":
        return block_attention_mask(block_ids, dtype=model.get_input_embeddings().weight.dtype)
    return block_attention_mask(block_ids)


def unsupported_reason(model) -> str | None:
    """Why `model` cannot take a packed, block-masked sequence, or None when it can."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in SUPPORTED_ATTENTION:
        return (
            f"attention implementation {implementation!r} does not take a custom 4D attention mask "
            f"(supported: {', '.join(SUPPORTED_ATTENTION)})"
        )
    peft_config = getattr(model, "peft_config", None) or {}
    if any(getattr(config, "is_prompt_learning", False) for config in peft_config.values()):
        return "prompt-learning PEFT adapters prepend virtual tokens, which the packed layout does not model"
    return None


def pad_rows(rows: list[dict[str, list]], pad_token_id: int, pad_to_multiple_of: int | None = None):
    """Right-pad packed rows into tensors; padding gets block id -1, label -100 and owner -1."""
    length = max(len(row["input_ids"]) for row in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    fill = {"input_ids": pad_token_id, "position_ids": 0, "block_ids": -1, "labels": -100, "owner": -1}
    return {
        key: torch.tensor([row[key] + [value] * (length - len(row[key])) for row in rows], dtype=torch.long)
        for key, value in fill.items()
    }


@torch.no_grad()
def score_completions_shared(model, prompt_ids: list[int], completions: list[list[int]]) -> torch.Tensor:
    """Summed log-prob of each completion after `prompt_ids`, with the prompt run once. No training path needed.

    Example:
    ```python
    >>> logps = score_completions_shared(model, tokenizer("Next:")["input_ids"], [[11, 2], [12, 2]])  # doctest: +SKIP
    ```
    """
    batch = pad_rows([pack_row(prompt_ids, completions)], pad_token_id=0)
    device = model.get_input_embeddings().weight.device
    batch = {key: value.to(device) for key, value in batch.items()}
    positions = (batch["labels"][0] != -100).nonzero().squeeze(1)
    outputs = model(
        input_ids=batch["input_ids"],
        attention_mask=attention_mask_for(model, batch["block_ids"]),
        position_ids=batch["position_ids"],
        use_cache=False,
        logits_to_keep=positions,
    )
    token_logps = outputs.logits[0].float().log_softmax(-1).gather(-1, batch["labels"][0, positions].unsqueeze(-1))
    scores = torch.zeros(len(completions), device=device)
    return scores.index_add_(0, batch["owner"][0, positions], token_logps.squeeze(-1)).cpu()
