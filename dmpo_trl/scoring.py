"""Log-likelihood of candidate completions after a prompt, tokenized exactly as `DMPOTrainer` tokenizes training rows.

Two layers:
- `tokenize_for_scoring` turns a prompt and its completions (plain text or conversational, as in a preference row)
  into `prompt_ids` and one id list per completion, the way the trainer does: plain-text completions get the EOS
  token appended; conversational ones are rendered by the chat template (which closes the assistant turn); the
  completion starts where the tokenized prompt and every tokenized prompt+completion diverge.
- `score_completions` runs the model and returns, per completion, the summed log-probability of its tokens and their
  count. This module is the only place that scores with the model: with prefix sharing (`score_completions_shared`,
  `score_many_shared`: the prompt runs once in a packed row laid out by `dmpo_trl.sharing`) where the model takes
  the packed layout, unshared otherwise, so its internals can change without touching callers.

Example:
```python
>>> from dmpo_trl.scoring import score_candidates
>>> prompt, titles = "Pick one: Heat, Fargo.\\nAnswer:", [" Heat (1995)", " Fargo (1996)"]
>>> scores = score_candidates(model, tokenizer, prompt, titles)  # doctest: +SKIP
```
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .padding import pad_sequences, padding_id
from .sharing import pack_row, packed_forward_kwargs, pad_rows, unsupported_reason
from .tokenization import is_conversational as is_conversational  # re-exported: it was defined here
from .tokenization import tokenize_responses


Prompt = str | list[dict[str, Any]]
Completion = str | list[dict[str, Any]]


def tokenize_for_scoring(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    completions: Sequence[Completion],
    end_of_turn: bool = True,
    tools: Any = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[int], list[list[int]]]:
    """Token ids of `prompt` and of each completion, as `DMPOTrainer` (and TRL's `DPOTrainer`) would train them.

    Plain text: `tokenizer(prompt)` and `tokenizer(prompt + completion + eos)`. Conversational (message lists):
    the chat template with `add_generation_prompt=True` for the prompt, and prompt + assistant message for each
    completion (with `tools` and `chat_template_kwargs`, as a training row gives them). The completions start at the
    longest prefix shared by the prompt and all prompt+completion ids. The trainer's own tokenization
    (`dmpo_trl.tokenization.tokenize_responses`) makes them.

    `end_of_turn=False` leaves out what closes the answer: the EOS of plain text, or the chat template's end-of-turn
    tokens, so only the title's own tokens are scored (this no longer matches training exactly).

    Example:
    ```python
    >>> prompt_ids, completions_ids = tokenize_for_scoring(tokenizer, "Answer:", [" Heat", " Fargo"])  # doctest: +SKIP
    >>> tokenizer.decode(completions_ids[0])  # doctest: +SKIP
    ' Heat<|im_end|>'
    ```
    """
    if not completions:
        raise ValueError("tokenize_for_scoring needs at least one completion")
    return tokenize_responses(
        tokenizer, prompt, completions, tools=tools, chat_template_kwargs=chat_template_kwargs, end_of_turn=end_of_turn
    )


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Switch `model` to eval mode (no dropout) inside the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


_warned_unshared: set[str] = set()


@torch.no_grad()
def score_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    completions_ids: Sequence[Sequence[int]],
    batch_size: int | None = None,
    share_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each completion after the prompt, and each completion's token count.

    Returns two CPU tensors of shape `(len(completions_ids),)`: float32 sums of `log p(token | prefix)` over the
    completion's tokens, and int64 counts (so `sums / counts` is the per-token mean).

    With `share_prompt=True` (the default) the prompt runs once for all completions (`dmpo_trl.sharing`: one packed
    sequence with a block attention mask; `batch_size` is then unused). A model whose attention cannot take that
    mask is scored the unshared way, with a one-time warning that says why.

    Unshared: the prompt is repeated in front of every completion; sequences are left-padded into batches of
    `batch_size` (all at once when `None`), with position ids that skip the padding, so each row computes exactly
    what an unpadded forward pass would. Since every row ends with its completion, only the last
    `max completion length + 1` positions are projected to the vocabulary (`logits_to_keep`) and go through the
    log-softmax, so memory does not grow with the prompt length times the vocabulary size.

    Example:
    ```python
    >>> sums, counts = score_completions(model, tokenizer, [1, 2, 3], [[4, 5], [6]])  # doctest: +SKIP
    >>> sums.shape, counts.tolist()  # doctest: +SKIP
    (torch.Size([2]), [2, 1])
    ```
    """
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError("score_completions needs a non-empty prompt (the first completion token needs a context)")
    total = len(completions_ids)
    counts = torch.tensor([len(c) for c in completions_ids], dtype=torch.int64)
    if share_prompt and total and min(counts) > 0:
        reason = unsupported_reason(model)
        if reason is None:
            with eval_mode(model):
                return score_completions_shared(model, prompt_ids, [list(c) for c in completions_ids]).float(), counts
        if reason not in _warned_unshared:
            _warned_unshared.add(reason)
            warnings.warn(f"Scoring without prefix sharing: the model's {reason}.", stacklevel=2)
    sums = torch.zeros(total, dtype=torch.float32)
    batch_size = batch_size or max(total, 1)
    pad_id = padding_id(tokenizer)
    device = _device(model)
    keep_kwarg = _accepts_logits_to_keep(model)
    with eval_mode(model):
        for start in range(0, total, batch_size):
            chunk = [list(c) for c in completions_ids[start : start + batch_size]]
            width = max(len(c) for c in chunk)
            if width == 0:
                continue
            input_ids, attention_mask = pad_sequences([prompt_ids + c for c in chunk], pad_id, side="left")
            length = input_ids.shape[1]
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
            inputs = {k: v.to(device) for k, v in inputs.items()}
            if keep_kwarg:
                logits = model(**inputs, logits_to_keep=width + 1, use_cache=False).logits
            else:
                logits = model(**inputs, use_cache=False).logits[:, -(width + 1) :]
            # logits[:, j] predicts the token after position (length - width - 1 + j); drop the one past the end
            logps = logits[:, :-1].float().log_softmax(-1)
            targets = input_ids[:, length - width :].to(device)
            token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            lengths = torch.tensor([len(c) for c in chunk], device=device)
            mask = torch.arange(width, device=device).unsqueeze(0) >= (width - lengths).unsqueeze(1)
            sums[start : start + len(chunk)] = (token_logps * mask).sum(-1).cpu()
    return sums, counts


@torch.no_grad()
def score_completions_shared(model, prompt_ids: list[int], completions: list[list[int]]) -> torch.Tensor:
    """Summed log-prob of each completion after `prompt_ids`, with the prompt run once. No training path needed.

    Example:
    ```python
    >>> logps = score_completions_shared(model, tokenizer("Next:")["input_ids"], [[11, 2], [12, 2]])  # doctest: +SKIP
    ```
    """
    return score_many_shared(model, [(prompt_ids, completions)])[0]


@torch.no_grad()
def score_many_shared(model, requests: list[tuple[list[int], list[list[int]]]]) -> list[torch.Tensor]:
    """`score_completions_shared` for several prompts in one forward: one packed row each, padded into a batch.

    Only the positions some row scores go through the vocabulary projection (`logits_to_keep`).
    """
    batch = pad_rows([pack_row(prompt, completions) for prompt, completions in requests], pad_token_id=0)
    device = model.get_input_embeddings().weight.device
    batch = {key: value.to(device) for key, value in batch.items()}
    scored = batch["labels"] != -100
    positions = scored.any(dim=0).nonzero().squeeze(1)
    outputs = model(**packed_forward_kwargs(model, batch), logits_to_keep=positions)
    labels, owner, keep = batch["labels"][:, positions], batch["owner"][:, positions], scored[:, positions]
    token_logps = outputs.logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    results = []
    for row, (_, completions) in enumerate(requests):
        scores = torch.zeros(len(completions), device=device)
        results.append(scores.index_add_(0, owner[row][keep[row]], token_logps[row][keep[row]]).cpu())
    return results


def score_candidates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    completions: Sequence[Completion],
    normalize: bool = False,
    end_of_turn: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Score each completion by its log-likelihood after `prompt`: the sum over its tokens, or the per-token mean.

    `prompt` and `completions` take the forms of a preference row (see `dmpo_trl.data.build_preference_dataset`):
    a string and strings (" Heat (1995)"), or a message list and assistant-message lists. See
    `tokenize_for_scoring` for the tokens scored and `score_completions` for the computation.

    Example:
    ```python
    >>> titles = [" Heat (1995)", " Fargo (1996)"]
    >>> score_candidates(model, tokenizer, "Next movie:", titles, normalize=True)  # doctest: +SKIP
    tensor([-2.1034, -2.4117])
    ```
    """
    prompt_ids, completions_ids = tokenize_for_scoring(tokenizer, prompt, completions, end_of_turn=end_of_turn)
    sums, counts = score_completions(model, tokenizer, prompt_ids, completions_ids, batch_size=batch_size)
    return sums / counts.clamp(min=1) if normalize else sums


def score_candidates_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[Prompt, Sequence[Completion]]],
    normalize: bool = False,
    end_of_turn: bool = True,
    batch_size: int | None = None,
) -> list[torch.Tensor]:
    """`score_candidates` for several (prompt, completions) requests, with one forward for all of them where the
    model takes the packed layout (one packed row per request); otherwise one request after the other.

    Example:
    ```python
    >>> requests = [("Next movie:", [" Heat", " Fargo"]), ("Then:", [" Babe"])]
    >>> [s.shape for s in score_candidates_batch(model, tokenizer, requests)]  # doctest: +SKIP
    [torch.Size([2]), torch.Size([1])]
    ```
    """
    tokenized = [tokenize_for_scoring(tokenizer, prompt, completions, end_of_turn) for prompt, completions in requests]
    if len(requests) > 1 and unsupported_reason(model) is None and all(p and all(c) for p, c in tokenized):
        with eval_mode(model):
            sums = score_many_shared(model, [(list(p), [list(c) for c in cs]) for p, cs in tokenized])
        counts = [torch.tensor([len(c) for c in cs]) for _, cs in tokenized]
        return [s / n.clamp(min=1) if normalize else s for s, n in zip(sums, counts)]
    results = []
    for prompt_ids, completions_ids in tokenized:
        sums, counts = score_completions(model, tokenizer, prompt_ids, completions_ids, batch_size=batch_size)
        results.append(sums / counts.clamp(min=1) if normalize else sums)
    return results
