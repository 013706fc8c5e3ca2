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
code path. `unsupported_reason(model)` says where it cannot be exact (an attention implementation without custom 4D
masks, ALiBi, ...): the trainer and the evaluator then run unshared, with a warning. Sliding-window layers get their
window inside the packed layout, one mask per layer type (`packed_attention_mask`), and MoE models their router loss
as the unshared batch would give it (`packed_router_aux_loss`).

Several packed rows may also share one sequence (`group_rows`, `concatenate_rows`): each token then carries its
row's index (`row_ids`), attention never crosses rows and positions restart per row, so every row is scored as in
its own sequence while the batch carries no padding between rows.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch

from ._trl_compat import (
    attention_implementation,
    load_balancing_loss,
    router_logits_recorder,
    takes_mask_per_layer_type,
)


SUPPORTED_ATTENTION = ("eager", "sdpa", "flex_attention")
ATTENTION_KINDS = ("full_attention", "sliding_attention")


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


def group_rows(lengths: list[int], max_length: int | None = None, cost=None) -> list[list[int]]:
    """Which rows (by index) share a sequence: the cheapest grouping within `max_length` tokens per sequence.

    For each number of sequences, rows go longest first to the shortest sequence so far; of the groupings that fit,
    the one of lowest `cost(sequences, longest sequence)` wins (default: padded tokens, sequences x length), the
    fewer sequences on a tie. A row longer than `max_length` raises the budget to its own length (it sets the padded
    length anyway). `max_length=None`: one sequence.

    Example:
    ```python
    >>> group_rows([500, 300, 200, 450], max_length=1000)
    [[0, 2], [1, 3]]
    >>> group_rows([500, 300, 200, 450])
    [[0, 1, 2, 3]]
    ```
    """
    if not lengths:
        return []
    if max_length is None:
        return [list(range(len(lengths)))]
    cost = cost or (lambda sequences, length: sequences * length)
    budget = max(max_length, *lengths)
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    best, best_cost = None, None
    for count in range(-(-sum(lengths) // budget), len(lengths) + 1):
        if best_cost is not None and cost(count, max(lengths)) >= best_cost:
            break  # no grouping into this many sequences or more costs less
        groups, sizes = [[] for _ in range(count)], [0] * count
        for index in order:
            emptiest = min(range(count), key=sizes.__getitem__)
            groups[emptiest].append(index)
            sizes[emptiest] += lengths[index]
        if max(sizes) <= budget and (best_cost is None or cost(count, max(sizes)) < best_cost):
            best, best_cost = groups, cost(count, max(sizes))
    return sorted(sorted(group) for group in best if group)


def concatenate_rows(rows: list[dict[str, list]], groups: list[list[int]]) -> list[dict[str, list]]:
    """One sequence per group of packed rows (`pack_row`'s output), each row's tokens tagged with its index.

    `row_ids` holds the index of the row a token belongs to; positions, blocks, labels and owners stay the row's own.

    Example:
    ```python
    >>> rows = [pack_row([5, 6], [[8]]), pack_row([7], [[9], [10]])]
    >>> sequence = concatenate_rows(rows, [[0, 1]])[0]
    >>> sequence["input_ids"], sequence["position_ids"], sequence["row_ids"]
    ([5, 6, 8, 7, 9, 7, 10], [0, 1, 2, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1, 1])
    ```
    """
    sequences = []
    for group in groups:
        sequence = {key: [] for key in (*rows[group[0]], "row_ids")}
        for index in group:
            for key, values in rows[index].items():
                sequence[key] += values
            sequence["row_ids"] += [index] * len(rows[index]["input_ids"])
        sequences.append(sequence)
    return sequences


def block_attention_mask(
    block_ids: torch.Tensor,
    dtype: torch.dtype | None = None,
    position_ids: torch.Tensor | None = None,
    sliding_window: int | None = None,
    row_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, L) block ids -> (B, 1, L, L) mask: causal, and a token sees the shared prompt (block 0) and its own block.

    With `row_ids` (several rows per sequence, `concatenate_rows`), a token sees only tokens of its own row.
    Padding has block id -1 and is seen by nothing but itself. With `sliding_window` (and the rows' `position_ids`),
    a token also sees only the keys less than `sliding_window` positions behind it, as transformers' sliding-window
    layers do in an unpacked sequence. Returns a boolean mask (True = attend) for `sdpa`, or, given `dtype`, the
    additive float mask that `eager` attention adds to its scores.
    """
    length = block_ids.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=block_ids.device).tril()
    query, key = block_ids.unsqueeze(2), block_ids.unsqueeze(1)
    allowed = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))
    if row_ids is not None:
        allowed &= row_ids.unsqueeze(2) == row_ids.unsqueeze(1)
    if sliding_window is not None:
        if position_ids is None:
            raise ValueError("A sliding-window block mask needs the rows' position_ids.")
        allowed &= (position_ids.unsqueeze(2) - position_ids.unsqueeze(1)) < sliding_window
    allowed |= torch.eye(length, dtype=torch.bool, device=block_ids.device)  # no query row is left empty
    allowed = allowed.unsqueeze(1)
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=block_ids.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def block_mask_function(
    block_ids: torch.Tensor,
    position_ids: torch.Tensor,
    sliding_window: int | None = None,
    row_ids: torch.Tensor | None = None,
):
    """The block mask of `block_attention_mask` as a FlexAttention `mask_mod(batch, head, query, key) -> bool`.

    FlexAttention builds a sparse `BlockMask` from it, so attention skips the blocks a response cannot see (and, with
    `row_ids`, the other rows of the sequence) instead of reading a dense (L x L) mask; the dense mask stays the path
    for `eager` and `sdpa`.
    """

    def mask_mod(batch, head, query, key):
        query_block, key_block = block_ids[batch, query], block_ids[batch, key]
        allowed = (
            (key <= query) & (query_block >= 0) & (key_block >= 0) & ((key_block == 0) | (key_block == query_block))
        )
        if row_ids is not None:
            allowed = allowed & (row_ids[batch, query] == row_ids[batch, key])
        if sliding_window is not None:
            allowed = allowed & (position_ids[batch, query] - position_ids[batch, key] < sliding_window)
        return allowed | (query == key)

    return mask_mod


def _base_model(model):
    """The transformers model under PEFT and distributed wrappers."""
    model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def layer_attention_types(model) -> list[str]:
    """The attention kind of each decoder layer: `"full_attention"`, `"sliding_attention"` or another name.

    Read from the config as transformers reads it: `config.layer_types` where the architecture declares them (Gemma
    2/3, Qwen2/3, ...); otherwise every layer is sliding when the config sets a `sliding_window` (Mistral, Phi-3,
    Mixtral, Starcoder2: their configs set it only where the model applies it), and full attention when not.
    """
    config = _base_model(model).config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return list(layer_types)
    sliding = bool(getattr(config, "sliding_window", None))
    return ["sliding_attention" if sliding else "full_attention"] * config.num_hidden_layers


def unsupported_reason(model) -> str | None:
    """Why `model` cannot run the packed, block-masked layout exactly, or None when it can.

    The layout needs: an attention implementation that takes a custom mask (`eager`, `sdpa`: a dense 4D mask;
    `flex_attention`: a sparse block mask, no backward on CPU in torch); positions given by
    `position_ids` (learned absolute and rotary positions are; ALiBi, which derives positions from the 2D mask, is
    not); layers of full or sliding-window attention, with a mask per layer type where the two are mixed; no
    prompt-learning PEFT adapter (its virtual tokens are not in the layout).
    """
    base = _base_model(model)
    config = base.config.get_text_config()
    implementation = attention_implementation(base)
    if implementation not in SUPPORTED_ATTENTION:
        return (
            f"attention implementation {implementation!r} does not take a custom 4D attention mask "
            f"(supported: {', '.join(SUPPORTED_ATTENTION)})"
        )
    peft_config = getattr(model, "peft_config", None) or {}
    if any(getattr(config, "is_prompt_learning", False) for config in peft_config.values()):
        return "prompt-learning PEFT adapters prepend virtual tokens, which the packed layout does not model"
    if getattr(config, "alibi", False) or getattr(config, "position_embedding_type", None) == "alibi":
        return "ALiBi attention biases follow the 2D attention mask, not position_ids, so packed blocks cannot restart"
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return (
            f"{type(base).__name__} takes no position_ids (its positions come from the 2D attention mask, e.g. "
            "ALiBi), so packed blocks cannot restart their positions"
        )
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention is not causal, so a block would see the responses after it"
    kinds = set(layer_attention_types(model))
    unknown = kinds - set(ATTENTION_KINDS)
    if unknown:
        return f"layer attention type(s) {sorted(unknown)} have no packed equivalent (supported: {ATTENTION_KINDS})"
    if len(kinds) > 1 and not takes_mask_per_layer_type(type(base)):
        return f"{type(base).__name__} mixes {sorted(kinds)} layers but takes no mask per layer type"
    return None


def packed_attention_mask(
    model, block_ids: torch.Tensor, position_ids: torch.Tensor, row_ids: torch.Tensor | None = None
):
    """The block mask in the form `model` expects: one 4D mask, or a dict keyed by layer type where layers differ.

    `row_ids` keeps attention within each row where a sequence holds several (`concatenate_rows`). Sliding-window
    layers get the block mask cut to their window (measured in the rows' `position_ids`, i.e. in the
    unpacked sequence prompt + response), so every layer sees exactly what it would see without packing. Check
    `unsupported_reason(model)` first.
    """
    base = _base_model(model)
    implementation = attention_implementation(base)
    dtype = base.get_input_embeddings().weight.dtype if implementation == "eager" else None
    window = getattr(base.config.get_text_config(), "sliding_window", None)
    masks = {}
    for kind in set(layer_attention_types(model)):
        sliding = window if kind == "sliding_attention" else None
        if implementation == "flex_attention":
            from torch.nn.attention.flex_attention import create_block_mask  # only models run on FlexAttention

            batch, length = block_ids.shape
            mask_mod = block_mask_function(block_ids, position_ids, sliding, row_ids)
            masks[kind] = create_block_mask(mask_mod, batch, None, length, length, device=block_ids.device)
        else:
            masks[kind] = block_attention_mask(
                block_ids, dtype, position_ids=position_ids, sliding_window=sliding, row_ids=row_ids
            )
    # One kind: one mask, which every architecture takes (transformers returns a given 4D mask as it is). Several:
    # a mask per layer type (`unsupported_reason` has checked that the model takes them).
    if len(masks) == 1:
        return next(iter(masks.values()))
    return masks


def packed_forward_kwargs(model, batch: dict[str, torch.Tensor]) -> dict:
    """Keyword arguments that run a packed batch (`input_ids`, `block_ids`, `position_ids`, optional `row_ids`)
    through `model` exactly.

    MoE models are told not to build their router loss from the attention mask (it would get the 4D mask): the
    trainer computes that loss itself from the packed rows (`packed_router_aux_loss`).
    """
    kwargs = {
        "input_ids": batch["input_ids"],
        "attention_mask": packed_attention_mask(
            model, batch["block_ids"], batch["position_ids"], batch.get("row_ids")
        ),
        "position_ids": batch["position_ids"],
        "use_cache": False,
    }
    if hasattr(_base_model(model).config.get_text_config(), "output_router_logits"):
        kwargs["output_router_logits"] = False
    return kwargs


@contextlib.contextmanager
def recording_router_logits(model) -> Iterator[list[torch.Tensor]]:
    """Collect each MoE router's logits during the forward passes inside the block, one tensor per layer call.

    They are what transformers returns as `router_logits` (the same modules and output index), recorded by hooks so
    that the model need not build its own router loss from the 4D mask.
    """
    base = _base_model(model)
    recorder = router_logits_recorder(base)
    if recorder is None:
        raise ValueError(f"{type(base).__name__} records no router logits, so it has no router auxiliary loss.")
    target, index = recorder
    logits: list[torch.Tensor] = []

    def record(module, args, output):
        logits.append(output[index] if isinstance(output, (tuple, list)) else output)

    handles = [module.register_forward_hook(record) for module in base.modules() if isinstance(module, target)]
    try:
        yield logits
    finally:
        for handle in handles:
            handle.remove()


def packed_router_aux_loss(
    model, router_logits: list[torch.Tensor], block_ids, num_sequences, row_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The MoE load-balancing loss that the unshared batch would give, from a packed batch's router logits.

    The unshared batch holds each row's prompt once per sequence, so prompt tokens (block 0) weigh the row's number of
    sequences (`num_sequences`, (B,)), every block token weighs 1 and padding 0; the architecture's own
    `load_balancing_loss_func` takes those weights where it takes the 2D attention mask. With several rows per
    sequence, `row_ids` says whose prompt a token is.
    """
    base = _base_model(model)
    config = base.config.get_text_config()
    if row_ids is None:
        prompt_weights = num_sequences.unsqueeze(1).to(block_ids)
    else:
        prompt_weights = num_sequences.to(block_ids)[row_ids.clamp(min=0)]
    weights = torch.where(block_ids == 0, prompt_weights, (block_ids > 0).to(block_ids))
    balance = load_balancing_loss(base)
    num_experts = (
        getattr(base, "num_experts", None) or getattr(config, "num_local_experts", None) or config.num_experts
    )
    top_k = getattr(base, "num_experts_per_tok", None) or config.num_experts_per_tok
    return balance(tuple(router_logits), num_experts, top_k, weights)


def unpack_rows(batch: dict[str, torch.Tensor]) -> list[dict[str, list[int]]]:
    """The rows a packed batch holds, as `{"prompt_ids", "chosen_ids", "rejected_ids"}` (`pack_row` undone).

    Example:
    ```python
    >>> unpack_rows(pad_rows([pack_row([5, 6, 7], [[8], [9, 10]])], pad_token_id=0))
    [{'prompt_ids': [5, 6, 7], 'chosen_ids': [8], 'rejected_ids': [[9, 10]]}]
    ```
    """
    segments = {}  # row index -> (ids, blocks), in the batch's row order
    row_ids = batch.get("row_ids")
    for index, (ids, blocks) in enumerate(zip(batch["input_ids"].tolist(), batch["block_ids"].tolist())):
        owners = row_ids[index].tolist() if row_ids is not None else [index] * len(ids)
        for token, block, row in zip(ids, blocks, owners):
            if block >= 0:
                segment = segments.setdefault(row, ([], []))
                segment[0].append(token)
                segment[1].append(block)
    rows = []
    for row in sorted(segments):
        ids, blocks = segments[row]
        responses = [[token for token, b in zip(ids, blocks) if b == k] for k in range(1, max(blocks) + 1)]
        prompt = [token for token, b in zip(ids, blocks) if b == 0] + responses[0][:1]
        rows.append(
            {"prompt_ids": prompt, "chosen_ids": responses[0][1:], "rejected_ids": [r[1:] for r in responses[1:]]}
        )
    return rows


def pad_rows(rows: list[dict[str, list]], pad_token_id: int, pad_to_multiple_of: int | None = None):
    """Right-pad packed rows (or sequences of several, with `row_ids`) into tensors; padding gets block id -1, label
    -100, owner -1 and row id -1."""
    length = max(len(row["input_ids"]) for row in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    fill = {"input_ids": pad_token_id, "position_ids": 0, "block_ids": -1, "labels": -100, "owner": -1}
    if "row_ids" in rows[0]:
        fill["row_ids"] = -1
    return {
        key: torch.tensor([row[key] + [value] * (length - len(row[key])) for row in rows], dtype=torch.long)
        for key, value in fill.items()
    }
