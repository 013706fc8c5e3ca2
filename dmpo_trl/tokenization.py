"""One tokenization of a prompt and its K responses, shared by the trainer, the scorer, the ranker and the miner.

`tokenize_responses` gives the token ids `DMPOTrainer` trains on (as TRL's `DPOTrainer` makes them): plain text is
`tokenizer(prompt)` and `tokenizer(prompt + response + eos)`; conversational rows (message lists) go through the chat
template, with `add_generation_prompt=True` for the prompt and prompt + assistant message for each response, with a
row's `tools` and `chat_template_kwargs`. Each response starts where the tokenized prompt and every tokenized
prompt+response diverge (`trl.data_utils.common_prefix_length`), so a template that renders the prompt differently
alone still splits at the same place for all responses. `dmpo_trl.scoring.tokenize_for_scoring` (the ranking
evaluator, the `Ranker`, the negative miner) and the trainer's dataset preparation both call it.

Example:
```python
>>> prompt_ids, responses_ids = tokenize_responses(tokenizer, "Next:", [" Heat", " Fargo"])  # doctest: +SKIP
>>> tokenizer.decode(responses_ids[0])  # doctest: +SKIP
' Heat<|im_end|>'
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase
from trl.data_utils import common_prefix_length

from ._trl_compat import tokenize


Prompt = str | list[dict[str, Any]]
Response = str | list[dict[str, Any]]


def is_conversational(value: Any) -> bool:
    """True for a message list (`[{"role": ..., "content": ...}, ...]`), False for plain text.

    Example:
    ```python
    >>> is_conversational([{"role": "user", "content": "hi"}]), is_conversational("hi")
    (True, False)
    ```
    """
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) and "role" in m for m in value)


def chat_template_arguments(tools: Any = None, chat_template_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments a row gives the chat template: its `tools` (a list, or that list as JSON) and its
    `chat_template_kwargs`.

    Example:
    ```python
    >>> chat_template_arguments('[{"type": "function"}]', {"enable_thinking": False})
    {'tools': [{'type': 'function'}], 'enable_thinking': False}
    ```
    """
    return {"tools": json.loads(tools) if isinstance(tools, str) else tools, **(chat_template_kwargs or {})}


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, Any]], **template: Any) -> list[int]:
    """The tokens a chat template puts after an assistant message's content (e.g. `<|im_end|>` and a newline)."""
    prompt_ids = tokenize(tokenizer, prompt, add_generation_prompt=True, **template)["input_ids"]
    empty = tokenize(tokenizer, prompt + [{"role": "assistant", "content": ""}], **template)["input_ids"]
    return empty[common_prefix_length(prompt_ids, empty) :]


def tokenize_responses(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    responses: Sequence[Response],
    tools: Any = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    end_of_turn: bool = True,
) -> tuple[list[int], list[list[int]]]:
    """Token ids of `prompt` and of each response, as `DMPOTrainer` (and TRL's `DPOTrainer`) trains them.

    `tools` (a list of tool schemas, or that list as JSON) and `chat_template_kwargs` reach the chat template of a
    conversational prompt. `end_of_turn=False` leaves out what closes a response: the EOS of plain text, or the chat
    template's end-of-turn tokens (this no longer matches training). Plain-text responses get the EOS token only
    where the tokenizer has one and the response does not already end with it.

    Example:
    ```python
    >>> prompt_ids, responses_ids = tokenize_responses(tokenizer, "Answer:", [" Heat", " Fargo"])  # doctest: +SKIP
    ```
    """
    if is_conversational(prompt):
        template = chat_template_arguments(tools, chat_template_kwargs)
        prompt_ids = tokenize(tokenizer, prompt, add_generation_prompt=True, **template)["input_ids"]
        full = [tokenize(tokenizer, prompt + list(response), **template)["input_ids"] for response in responses]
    else:
        eos = tokenizer.eos_token
        if end_of_turn and eos is not None:
            responses = [r if r.endswith(eos) else r + eos for r in responses]
        prompt_ids = tokenize(tokenizer, prompt)["input_ids"]
        full = [tokenize(tokenizer, prompt + response)["input_ids"] for response in responses]
    prompt_len = min(common_prefix_length(prompt_ids, ids) for ids in full)
    responses_ids = [ids[prompt_len:] for ids in full]
    if is_conversational(prompt) and not end_of_turn:
        suffix = end_of_turn_ids(tokenizer, prompt, **template)
        if suffix:
            responses_ids = [ids[: -len(suffix)] if ids[-len(suffix) :] == suffix else ids for ids in responses_ids]
    return list(prompt_ids[:prompt_len]), responses_ids
