"""Every private TRL or transformers name dmpo-trl uses, in one place, each with what it is for.

Checked against TRL 1.16.0 and transformers 5.25.0: when a release renames one of these, change this file.
"""

from __future__ import annotations

from typing import Any

from trl.data_utils import _tokenize


def tokenize(processing_class: Any, value: Any, **kwargs: Any) -> dict[str, Any]:
    """Token ids of a text or message list as TRL's trainers make them (`trl.data_utils._tokenize`, TRL 1.16): plain
    text through the tokenizer, messages through the chat template (`add_generation_prompt`, `tools` and other chat
    template arguments as keywords)."""
    return _tokenize(processing_class, value, **kwargs)
