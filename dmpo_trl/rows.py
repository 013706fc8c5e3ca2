"""Checking one preference row whose `rejected` holds one response or a list of K responses."""

from __future__ import annotations

import random
from typing import Any


def is_message_list(value: Any) -> bool:
    """True for a conversational response: a non-empty list of `{"role": ..., "content": ...}` dicts."""
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) and "role" in m for m in value)


def _kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if is_message_list(value):
        return "conversational"
    return None


def rejected_as_list(rejected: Any) -> list:
    """`rejected` as a list of responses: one string or message list becomes a list of one."""
    if isinstance(rejected, str) or is_message_list(rejected):
        return [rejected]
    return rejected


def check_row(row: dict[str, Any], index: int) -> tuple[bool, list]:
    """Validate one row and return (is_conversational, the rejected responses as a list).

    Raises a `ValueError` that names the row and field for: an empty `rejected` list, a response that is neither a
    string nor a message list, plain text mixed with conversational in one row, and the chosen response repeated among
    its own rejected ones.

    Example:
    ```python
    >>> check_row({"prompt": "Q:", "chosen": " a", "rejected": [" b", " c"]}, index=0)
    (False, [' b', ' c'])
    ```
    """
    rejected = row.get("rejected")
    if isinstance(rejected, list) and len(rejected) == 0:
        raise ValueError(f"Row {index}: `rejected` is an empty list; give at least one rejected response.")
    rejected = rejected_as_list(rejected)
    if not isinstance(rejected, list):
        raise ValueError(
            f"Row {index}: `rejected` must be a string, a message list, or a list of them; "
            f"got {type(rejected).__name__}."
        )
    fields = [("prompt", row.get("prompt")), ("chosen", row.get("chosen"))]
    fields += [(f"rejected[{k}]", response) for k, response in enumerate(rejected)]
    kinds = {}
    for name, value in fields:
        kind = _kind(value)
        if kind is None:
            raise ValueError(
                f"Row {index}: `{name}` must be a string or a list of messages with 'role' and 'content', "
                f"got {type(value).__name__}: {str(value)[:80]!r}."
            )
        kinds[name] = kind
    if len(set(kinds.values())) > 1:
        text = [name for name, kind in kinds.items() if kind == "text"]
        chat = [name for name, kind in kinds.items() if kind == "conversational"]
        raise ValueError(
            f"Row {index}: plain text ({', '.join(text)}) mixed with conversational ({', '.join(chat)}); "
            "a row must be all plain text or all conversational."
        )
    for k, response in enumerate(rejected):
        if response == row["chosen"]:
            raise ValueError(f"Row {index}: `rejected[{k}]` repeats the chosen response {str(response)[:80]!r}.")
    return kinds["prompt"] == "conversational", rejected


def subsample(responses: list, max_count: int | None, seed: int, index: int) -> list:
    """At most `max_count` of `responses`, chosen without replacement and in their original order; seeded per row."""
    if max_count is None or len(responses) <= max_count:
        return responses
    keep = sorted(random.Random(seed * 1_000_003 + index).sample(range(len(responses)), max_count))
    return [responses[k] for k in keep]


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(token, int) and not isinstance(token, bool) for token in value)


def check_tokenized_row(row: dict[str, Any], index: int, vocab_size: int | None = None) -> list[list[int]]:
    """Validate one pre-tokenized row and return its rejected responses as a list of id lists.

    `rejected_ids` may be one id list (TRL's pairwise form) or a list of K id lists. Raises a `ValueError` that names
    the row and field for: a field that is not a list of token ids, an empty response, an id outside the vocabulary
    (when `vocab_size` is given), and the chosen response repeated among its own rejected ones.

    Example:
    ```python
    >>> check_tokenized_row({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}, index=0)
    [[4, 5]]
    >>> try:
    ...     check_tokenized_row({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [[4], []]}, index=7)
    ... except ValueError as error:
    ...     print(error)
    Row 7: `rejected_ids[1]` is empty; every response needs at least one token.
    ```
    """
    rejected = row.get("rejected_ids")
    if isinstance(rejected, list) and len(rejected) > 0 and all(isinstance(r, list) for r in rejected):
        fields = [(f"rejected_ids[{k}]", response) for k, response in enumerate(rejected)]
    else:
        if isinstance(rejected, list) and len(rejected) == 0:
            raise ValueError(f"Row {index}: `rejected_ids` is empty; give one id list or a list of id lists.")
        rejected = [rejected]
        fields = [("rejected_ids", rejected[0])]
    fields = [("prompt_ids", row.get("prompt_ids")), ("chosen_ids", row.get("chosen_ids"))] + fields
    for name, value in fields:
        if not _is_id_list(value):
            raise ValueError(
                f"Row {index}: `{name}` must be a list of token ids (int), got {type(value).__name__}: "
                f"{str(value)[:80]!r}."
            )
        if name != "prompt_ids" and len(value) == 0:
            raise ValueError(f"Row {index}: `{name}` is empty; every response needs at least one token.")
        outside = [token for token in value if vocab_size is not None and not 0 <= token < vocab_size]
        if outside:
            raise ValueError(
                f"Row {index}: `{name}` holds token id {outside[0]}, outside the vocabulary 0..{vocab_size - 1}."
            )
    for k, response in enumerate(rejected):
        if response == row["chosen_ids"]:
            raise ValueError(f"Row {index}: `{fields[2 + k][0]}` repeats the chosen response.")
    return rejected
