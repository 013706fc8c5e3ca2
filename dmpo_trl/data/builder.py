"""User examples -> TRL datasets: preference rows with K rejected completions (DMPO), and SFT rows.

Plain text: `prompt` is the rendered template + "\\nAnswer:", completions are " <title>" (leading space).
Conversational: `prompt` is `[{"role": "user", "content": <rendered template>}]`, completions are
`[{"role": "assistant", "content": <title>}]`. `rejected` is always a list of K completions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence

from datasets import Dataset

from .log import InteractionLog, UserExample
from .negatives import NegativeSampler, candidate_sets, example_rng
from .prompts import ANSWER_PREFIX, prompt_and_completions, render_prompt, resolve_template, uses_candidates


def _prompts(
    log: InteractionLog,
    examples: Sequence[UserExample],
    prompt_style: str,
    num_candidates: int,
    negative_strategy: str,
    seed: int,
    list_style: str,
    popularity: Counter | None,
) -> Iterator[tuple[UserExample, str, list[str]]]:
    """(example, rendered prompt, candidate ids other than the target; [] for history-only templates)."""
    template = resolve_template(prompt_style)
    if uses_candidates(template):
        sets = candidate_sets(log, examples, num_candidates, seed, negative_strategy, popularity)
    else:
        sets = [([], -1)] * len(examples)
    for example, (candidates, _) in zip(examples, sets):
        prompt = render_prompt(
            template, [log.titles[i] for i in example.history], [log.titles[i] for i in candidates], list_style
        )
        yield example, prompt, [c for c in candidates if c != example.target]


def build_preference_dataset(
    log: InteractionLog,
    examples: Sequence[UserExample],
    num_negatives: int = 4,
    prompt_style: str | None = None,
    num_candidates: int = 20,
    negative_strategy: str = "uniform",
    conversational: bool = False,
    seed: int = 0,
    *,
    list_style: str = "numbered",
    answer_prefix: str = ANSWER_PREFIX,
    popularity: Counter | None = None,
    negatives: Sequence[Sequence[str]] | None = None,
) -> Dataset:
    """TRL preference rows: `prompt`, `chosen` (the target's title), `rejected` (K = `num_negatives` titles).

    `prompt_style` is "history" (the default, `None`: next-item prompt without candidates, the best measured for
    likelihood ranking), "candidates" (the S-DPO/LLaRA prompt listing `num_candidates` shuffled titles) or your own
    template string. With candidates, the K negatives are drawn
    from the prompt's candidates, so every rejected title is one the model was offered; the candidate lists are
    the same as `candidate_sets(log, examples, num_candidates, seed, negative_strategy)`, which the evaluator
    uses. Without candidates, negatives come from `negative_strategy` over the whole catalog. Extra columns
    `user` and `target` hold the ids. Deterministic for a given `seed`.

    `negatives` (one list of `num_negatives` item ids per example, e.g. mined by `dmpo_trl.mining`) replaces the
    drawn negatives; it needs a prompt without a candidate list.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
    >>> row = build_preference_dataset(log, [UserExample("u", ("a", "b"), "c")], num_negatives=2,
    ...                                num_candidates=5)[0]
    >>> row["prompt"].endswith("Answer:"), row["chosen"], len(row["rejected"])
    (True, ' Movie C', 2)
    ```
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    with_candidates = uses_candidates(resolve_template(prompt_style))
    if with_candidates and num_negatives > num_candidates - 1:
        raise ValueError(f"num_negatives={num_negatives} must be at most num_candidates - 1 = {num_candidates - 1}")
    if negatives is not None:
        _check_given(log, examples, negatives, num_negatives, with_candidates)
    sampler = None if with_candidates else NegativeSampler(log, negative_strategy, popularity)
    rows: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "user": [], "target": []}
    parts = _prompts(log, examples, prompt_style, num_candidates, negative_strategy, seed, list_style, popularity)
    for index, (example, prompt, others) in enumerate(parts):
        if negatives is not None:
            rejected_ids = list(negatives[index])
        elif with_candidates:
            rejected_ids = random.Random(f"dmpo-trl-rejected|{seed}|{example.user}|{example.target}").sample(
                others, num_negatives
            )
        else:
            rejected_ids = sampler.sample(example, num_negatives, example_rng(example, seed))
        text, completions = prompt_and_completions(
            prompt, [log.titles[i] for i in [example.target, *rejected_ids]], conversational, answer_prefix
        )
        rows["prompt"].append(text)
        rows["chosen"].append(completions[0])
        rows["rejected"].append(completions[1:])
        rows["user"].append(example.user)
        rows["target"].append(example.target)
    return Dataset.from_dict(rows)


def _check_given(
    log: InteractionLog,
    examples: Sequence[UserExample],
    negatives: Sequence[Sequence[str]],
    num_negatives: int,
    with_candidates: bool,
) -> None:
    """`ValueError` naming the row and the item for given negatives that a row cannot use."""
    if with_candidates:
        raise ValueError("negatives= needs a prompt without a candidate list (prompt_style 'history' or your own)")
    if len(negatives) != len(examples):
        raise ValueError(f"negatives: {len(negatives)} lists for {len(examples)} examples")
    for index, (example, items) in enumerate(zip(examples, negatives)):
        where = f"negatives[{index}] (user {example.user!r})"
        if len(items) != num_negatives or len(set(items)) != len(items):
            raise ValueError(f"{where}: needs {num_negatives} distinct item ids, got {list(items)}")
        touched = set(log.sequences.get(example.user, ())) | {example.target}
        for item in items:
            if item not in log.titles:
                raise ValueError(f"{where}: item {item!r} has no title in the log")
            if item in touched:
                raise ValueError(f"{where}: item {item!r} is the target or one the user touched")


def build_sft_dataset(
    log: InteractionLog,
    examples: Sequence[UserExample],
    prompt_style: str | None = None,
    num_candidates: int = 20,
    negative_strategy: str = "uniform",
    conversational: bool = False,
    seed: int = 0,
    *,
    list_style: str = "numbered",
    answer_prefix: str = ANSWER_PREFIX,
    popularity: Counter | None = None,
) -> Dataset:
    """TRL prompt-completion rows (`prompt`, `completion` = the target's title, plus `user`, `target`).

    Same prompts as `build_preference_dataset` with the same arguments and seed.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
    >>> row = build_sft_dataset(log, [UserExample("u", ("a", "b"), "c")], prompt_style="history",
    ...                         conversational=True)[0]
    >>> row["prompt"][0]["role"], row["completion"]
    ('user', [{'role': 'assistant', 'content': 'Movie C'}])
    ```
    """
    rows: dict[str, list] = {"prompt": [], "completion": [], "user": [], "target": []}
    parts = _prompts(log, examples, prompt_style, num_candidates, negative_strategy, seed, list_style, popularity)
    for example, prompt, _ in parts:
        target = [log.titles[example.target]]
        text, (completion,) = prompt_and_completions(prompt, target, conversational, answer_prefix)
        rows["prompt"].append(text)
        rows["completion"].append(completion)
        rows["user"].append(example.user)
        rows["target"].append(example.target)
    return Dataset.from_dict(rows)
