"""Checking one preference row whose `rejected` holds one response or a list of K responses.

A row is all plain text (`prompt`, `chosen` and each rejected response non-empty strings) or all conversational (each a
non-empty list of messages `{"role": ..., "content": ...}` with a role among `ROLES` and string content), as TRL's
`DPOTrainer` takes them, with optional `tools` (a list of JSON schemas, or that list as a JSON string) and
`chat_template_kwargs` (a dict). Anything else is refused with a `ValueError` that names the row and the field, e.g.
`prompt[1].content`, so that no malformed value reaches the chat template (which would render `None` as text).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any


ROLES = ("system", "user", "assistant", "tool")
"""The message roles a conversational row may use (TRL's: system, user, assistant, tool)."""


def _refuse(index: int, field: str, problem: str) -> ValueError:
    return ValueError(f"Row {index}: `{field}` {problem}")


def _show(value: Any) -> str:
    return f"{type(value).__name__}: {str(value)[:80]!r}"


def _check_message(message: Any, field: str, index: int) -> None:
    """A message is a dict with a known `role` and string `content` (an assistant's tool call may have no content)."""
    if not isinstance(message, Mapping):
        raise _refuse(index, field, f"must be a message (a dict with 'role' and 'content'), got {_show(message)}.")
    role = message.get("role")
    if role not in ROLES:
        got = "is missing" if "role" not in message else f"is {role!r}"
        raise _refuse(index, f"{field}.role", f"{got}; a message's role is one of {', '.join(ROLES)}.")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (role == "assistant" and isinstance(tool_calls, list)):
        raise _refuse(
            index, f"{field}.tool_calls", f"must be a list on an assistant message, got {_show(tool_calls)}."
        )
    content = message.get("content")
    if isinstance(content, str) or (content is None and tool_calls):
        return
    got = "is missing" if "content" not in message else f"must be a string, got {_show(content)}"
    raise _refuse(index, f"{field}.content", f"{got}; every message needs text content.")


def _response_kind(value: Any, field: str, index: int) -> str:
    """'text' or 'conversational'; refuses anything else (naming the message at fault in a message list)."""
    if isinstance(value, str):
        if not value:
            raise _refuse(index, field, "is an empty string; it needs at least one character.")
        return "text"
    if isinstance(value, list):
        if not value:
            raise _refuse(index, field, "is an empty list; a conversational field needs at least one message.")
        for m, message in enumerate(value):
            _check_message(message, f"{field}[{m}]", index)
        return "conversational"
    raise _refuse(
        index, field, f"must be a string or a list of messages with 'role' and 'content', got {_show(value)}."
    )


def _check_tools(tools: Any, index: int) -> list | None:
    """`tools` as a list (parsed from JSON when it is a string), or None; refuses other values."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as error:
            raise _refuse(index, "tools", f"is a string but not valid JSON ({error}).") from None
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _refuse(index, "tools", f"must be a list of tool schemas (or that list as JSON), got {_show(tools)}.")
    for t, tool in enumerate(tools):
        if not (isinstance(tool, Mapping) or callable(tool)):
            raise _refuse(index, f"tools[{t}]", f"must be a tool schema (a dict) or a function, got {_show(tool)}.")
    return tools


def rejected_fields(rejected: Any) -> list[tuple[str, Any]]:
    """(field name, response) for each rejected response: a list whose first item is a message is one response.

    Example:
    ```python
    >>> rejected_fields([" b", " c"]), rejected_fields(" b")
    ([('rejected[0]', ' b'), ('rejected[1]', ' c')], [('rejected', ' b')])
    ```
    """
    if is_response_list(rejected):
        return [(f"rejected[{k}]", response) for k, response in enumerate(rejected)]
    return [("rejected", rejected)]


def is_response_list(rejected: Any) -> bool:
    """True when `rejected` is a list of K responses, False when it is one response (a string or a message list).

    A conversational response is itself a list (of messages); a list of responses holds strings or message lists.

    Example:
    ```python
    >>> is_response_list([" b", " c"]), is_response_list(" b"), is_response_list([{"role": "user", "content": "b"}])
    (True, False, False)
    ```
    """
    return isinstance(rejected, list) and not (rejected and isinstance(rejected[0], Mapping))


def extract_implicit_prompt(row: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """TRL's `extract_prompt` for a row whose `rejected` is one response or a list of K responses.

    The prompt is the longest prefix (of characters, or of messages) that `chosen` shares with every rejected
    response, each pair's prefix found by TRL's `extract_prompt`; with one rejected response the result is TRL's.
    A `chosen` or rejected value that is neither a string nor a list is refused with a `ValueError` naming the row.

    Example:
    ```python
    >>> extract_implicit_prompt({"chosen": "Q: hi A: yes", "rejected": ["Q: hi A: no", "Q: hi A: maybe"]})
    {'prompt': 'Q: hi A:', 'chosen': ' yes', 'rejected': [' no', ' maybe']}
    ```
    """
    chosen, rejected = row.get("chosen"), row.get("rejected")
    several = is_response_list(rejected)
    if several and not rejected:
        raise _refuse(index, "rejected", "is an empty list; give at least one rejected response.")
    for name, value in [("chosen", chosen), *rejected_fields(rejected)]:
        if not isinstance(value, (str, list)):
            raise _refuse(
                index, name, f"must be a string or a list of messages (no `prompt` column), got {_show(value)}."
            )
    from trl import extract_prompt  # here, so that importing this module does not import TRL

    responses = rejected if several else [rejected]
    length = min(len(extract_prompt({"chosen": chosen, "rejected": r})["prompt"]) for r in responses)
    remainders = [response[length:] for response in responses]
    return {"prompt": chosen[:length], "chosen": chosen[length:], "rejected": remainders if several else remainders[0]}


def check_row(row: dict[str, Any], index: int) -> tuple[bool, list]:
    """Validate one row and return (is_conversational, the rejected responses as a list).

    Raises a `ValueError` that names the row and field for: a missing, empty or `None` prompt or response; a response
    that is neither a string nor a message list; a message without a known `role` or string `content`; an empty
    `rejected` list; plain text mixed with conversational in one row; `tools` that is not a list of tool schemas (or
    its JSON), or tools on a plain-text row, which no chat template would show the model; `chat_template_kwargs` that
    is not a dict; and the chosen response repeated among its own rejected ones.

    Example:
    ```python
    >>> check_row({"prompt": "Q:", "chosen": " a", "rejected": [" b", " c"]}, index=0)
    (False, [' b', ' c'])
    >>> try:
    ...     check_row({"prompt": [{"role": "user", "content": None}], "chosen": " a", "rejected": " b"}, index=3)
    ... except ValueError as error:
    ...     print(error)
    Row 3: `prompt[0].content` must be a string, got NoneType: 'None'; every message needs text content.
    ```
    """
    if not isinstance(row, Mapping):
        raise ValueError(
            f"Row {index}: a row must be a dict with `prompt`, `chosen` and `rejected`, got {_show(row)}."
        )
    rejected = row.get("rejected")
    if isinstance(rejected, list) and len(rejected) == 0:
        raise _refuse(index, "rejected", "is an empty list; give at least one rejected response.")
    responses = rejected_fields(rejected)
    fields = [("prompt", row.get("prompt")), ("chosen", row.get("chosen")), *responses]
    kinds = {name: _response_kind(value, name, index) for name, value in fields}
    if len(set(kinds.values())) > 1:
        text = [name for name, kind in kinds.items() if kind == "text"]
        chat = [name for name, kind in kinds.items() if kind == "conversational"]
        raise ValueError(
            f"Row {index}: plain text ({', '.join(text)}) mixed with conversational ({', '.join(chat)}); "
            "a row must be all plain text or all conversational."
        )
    is_chat = kinds["prompt"] == "conversational"
    tools = _check_tools(row.get("tools"), index)
    if tools and not is_chat:
        raise _refuse(
            index, "tools", "is given on a plain-text row; tools reach the model only through a chat template."
        )
    template_kwargs = row.get("chat_template_kwargs")
    if template_kwargs is not None and not isinstance(template_kwargs, Mapping):
        raise _refuse(index, "chat_template_kwargs", f"must be a dict, got {_show(template_kwargs)}.")
    for name, response in responses:
        if response == row["chosen"]:
            raise _refuse(index, name, f"repeats the chosen response {str(response)[:80]!r}.")
    return is_chat, [response for _, response in responses]


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
    the row and field for: a field that is not a list of token ids, an empty prompt or response, an id outside the
    vocabulary (when `vocab_size` is given), and the chosen response repeated among its own rejected ones.

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
    if not isinstance(row, Mapping):
        raise ValueError(f"Row {index}: a row must be a dict with `prompt_ids`, `chosen_ids`, `rejected_ids`.")
    rejected = row.get("rejected_ids")
    if isinstance(rejected, list) and len(rejected) == 0:
        raise _refuse(index, "rejected_ids", "is empty; give one id list or a list of id lists.")
    if isinstance(rejected, list) and isinstance(rejected[0], list):
        responses = [(f"rejected_ids[{k}]", response) for k, response in enumerate(rejected)]
    else:
        responses = [("rejected_ids", rejected)]
    fields = [("prompt_ids", row.get("prompt_ids")), ("chosen_ids", row.get("chosen_ids")), *responses]
    for name, value in fields:
        if not _is_id_list(value):
            raise _refuse(index, name, f"must be a list of token ids (int), got {_show(value)}.")
        if len(value) == 0:
            needs = (
                "the first response token is scored after a prompt token"
                if name == "prompt_ids"
                else ("every response needs at least one token")
            )
            raise _refuse(index, name, f"is empty; {needs}.")
        outside = [token for token in value if vocab_size is not None and not 0 <= token < vocab_size]
        if outside:
            raise _refuse(index, name, f"holds token id {outside[0]}, outside the vocabulary 0..{vocab_size - 1}.")
    for name, response in responses:
        if response == row["chosen_ids"]:
            raise _refuse(index, name, "repeats the chosen response.")
    return [response for _, response in responses]
