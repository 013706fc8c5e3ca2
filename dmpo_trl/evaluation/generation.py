"""Generation mode: greedy answers, which candidate titles an answer names, and the model explaining its pick.

Example:
```python
>>> named_candidates("Maybe Heat?", ["Heat (1995)", "Babe (1995)"])
[0]
```
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .._trl_compat import tokenize
from ..data import InteractionLog, UserExample, render_prompt, resolve_template
from ..data.prompts import uses_candidates
from ..metrics import bootstrap_interval
from ..padding import pad_sequences, padding_id
from ..scoring import Prompt, eval_mode
from .candidates import RankingPrompt
from .results import _by_history_length, _user_record


__all__ = ["EXPLAIN_QUESTION", "explain_pick", "generate_answers", "named_candidates"]


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy answers for a batch of prompts (strings, or message lists through the chat template), left-padded.

    Example:
    ```python
    >>> items = build_ranking_prompts(log, split.test, prompt_style="history")  # doctest: +SKIP
    >>> generate_answers(model, tokenizer, [items[0].prompt], max_new_tokens=16)  # doctest: +SKIP
    [' Toy Story (1995)']
    ```
    """
    encoded = [
        tokenize(tokenizer, p, add_generation_prompt=True)["input_ids"]
        if isinstance(p, list)
        else tokenize(tokenizer, p)["input_ids"]
        for p in prompts
    ]
    pad_id = padding_id(tokenizer)
    input_ids, attention_mask = pad_sequences(encoded, pad_id, side="left")
    length = input_ids.shape[1]
    device = next(model.parameters()).device
    with eval_mode(model):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)


EXPLAIN_QUESTION = "In one or two sentences, why would this user enjoy {title}, given what they watched?"


def explain_pick(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    example: UserExample,
    log: InteractionLog,
    item: str,
    prompt_style: str = "history",
    candidates: Sequence[str] = (),
    max_new_tokens: int = 60,
) -> str:
    """Ask the model why `item` (its pick for this user) fits the user's history: the paper's case study.

    The conversation is the ranking prompt, the model's pick as its answer, then `EXPLAIN_QUESTION`; the reply is
    decoded greedily. Needs a tokenizer with a chat template.

    Example:
    ```python
    >>> explain_pick(model, tokenizer, split.test[0], log, item="50")  # doctest: +SKIP
    'The user watched several sci-fi adventures, and Star Wars is the classic of the genre.'
    ```
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("explain_pick needs a chat model: the tokenizer has no chat_template")
    template = resolve_template(prompt_style)
    history = [log.titles[i] for i in example.history]
    titles = [log.titles[i] for i in candidates] if uses_candidates(template) else ()
    question = render_prompt(template, history, titles)
    title = log.titles[item]
    messages = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": title},
        {"role": "user", "content": EXPLAIN_QUESTION.format(title=title)},
    ]
    return generate_answers(model, tokenizer, [messages], max_new_tokens)[0].strip()


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(?P<name>.+), (?P<article>the|a|an|les|la|le|il|el|das|der|die)$", re.IGNORECASE)


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _title_forms(title: str) -> list[str]:
    """Normalized ways an answer may name a title: as written, without the year, with a trailing article moved
    to the front ("Godfather, The (1972)" -> "The Godfather")."""
    bare = _YEAR.sub("", title)
    forms = [title, bare]
    match = _ARTICLE.match(bare)
    if match:
        forms.append(f"{match['article']} {match['name']}")
    return [f for f in dict.fromkeys(_normalize(f) for f in forms) if f]


def named_candidates(output: str, titles: Sequence[str]) -> list[int]:
    """Indices of the candidate titles that a generated answer names, in order of first mention.

    Matching ignores case, punctuation and the year, on word boundaries; a title also accepts its leading-article
    form ("The Godfather" for "Godfather, The (1972)"). A title found only inside a longer named title ("Heat"
    inside "Heat Wave") does not count.

    Example:
    ```python
    >>> titles = ["Heat (1995)", "Godfather, The (1972)", "Heat Wave (1990)"]
    >>> named_candidates("I think: The Godfather.", titles)
    [1]
    >>> named_candidates("Heat Wave (1990)", titles)
    [2]
    >>> named_candidates("heat, or the godfather", titles)
    [0, 1]
    ```
    """
    text = f" {_normalize(output)} "
    spans: dict[int, list[tuple[int, int]]] = {}
    for index, title in enumerate(titles):
        for form in _title_forms(title):
            needle = f" {form} "
            start = text.find(needle)
            while start != -1:
                spans.setdefault(index, []).append((start + 1, start + len(needle) - 1))
                start = text.find(needle, start + 1)
    all_spans = [(s, e, i) for i, found in spans.items() for s, e in found]

    def inside_other(index: int, span: tuple[int, int]) -> bool:
        s, e = span
        return any(i != index and s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, i in all_spans)

    named = {
        i: min(s for s, e in found if not inside_other(i, (s, e)))
        for i, found in spans.items()
        if any(not inside_other(i, span) for span in found)
    }
    return sorted(named, key=named.__getitem__)


def _generation_result(items: Sequence[RankingPrompt], answers: Sequence[str], log: InteractionLog, seed: int) -> dict:
    per_user, hits, valid = [], [], []
    for item, answer in zip(items, answers):
        named = named_candidates(answer, [log.titles[i] for i in item.candidates])
        valid.append(float(len(named) == 1))
        hits.append(float(named == [item.target_index]))
        per_user.append(_user_record(item, answer=answer, named=named))
    metrics = {
        "hit_ratio@1": sum(hits) / len(hits) if hits else float("nan"),
        "valid_ratio": sum(valid) / len(valid) if valid else float("nan"),
        "hit_ratio@1_ci95": list(bootstrap_interval(hits, seed=seed)),
        "num_users": len(items),
        "by_history_length": _by_history_length(items, {"hit_ratio@1": hits, "valid_ratio": valid}),
    }
    return {"metrics": metrics, "per_user": per_user}
