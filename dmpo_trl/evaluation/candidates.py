"""The evaluation items: each user's candidate list (drawn, or given) and the prompt and completions that show it.

The candidates are `dmpo_trl.data.candidate_sets`' lists, so every model and baseline ranks identical lists, which
are also the lists the training prompts show; the prompt and the completions are rendered exactly as in
`build_preference_dataset` rows.

Example:
```python
>>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
>>> [item] = build_ranking_prompts(log, [UserExample("u", ("a", "b"), "c")], num_candidates=3)
>>> len(item.candidates), item.candidates[item.target_index]
(3, 'c')
```
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..data import ANSWER_PREFIX, InteractionLog, UserExample, candidate_sets, render_prompt, resolve_template
from ..data.prompts import prompt_and_completions, uses_candidates
from ..scoring import Completion, Prompt
from ..settings import PromptSettings


__all__ = ["RankingPrompt", "build_ranking_prompts", "given_candidate_sets"]


@dataclass
class RankingPrompt:
    """One user's evaluation item: the rendered prompt, one completion per candidate, and where the target is."""

    example: UserExample
    candidates: list[str]  # item ids, in the order the prompt lists them
    target_index: int
    prompt: Prompt
    completions: list[Completion]  # same order as `candidates`

    @property
    def negatives(self) -> list[int]:
        return [k for k in range(len(self.candidates)) if k != self.target_index]


def build_ranking_prompts(
    log: InteractionLog,
    examples: Sequence[UserExample],
    num_candidates: int = 20,
    seed: int = 0,
    prompt_style: str | None = None,
    conversational: bool = False,
    negative_strategy: str = "uniform",
    *,
    list_style: str = "numbered",
    answer_prefix: str = ANSWER_PREFIX,
    popularity: Counter | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
) -> list[RankingPrompt]:
    """The evaluation prompts: for each example, `candidate_sets(...)` candidates and the prompt listing them.

    Prompts and completions are rendered as `build_preference_dataset` renders them with the same arguments (plain
    text: template + "\\nAnswer:" and " <title>"; conversational: a user message and assistant messages).
    `candidates` (one list of item ids per example, the target among them) replaces the drawn lists, e.g. the lists
    a training run saved in its `split.json`.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
    >>> [item] = build_ranking_prompts(log, [UserExample("u", ("a", "b"), "c")], num_candidates=4)
    >>> len(item.completions), item.completions[item.target_index], item.prompt.endswith("Answer:")
    (4, ' Movie C', True)
    ```
    """
    template = resolve_template(prompt_style)
    if candidates is None:
        sets = candidate_sets(log, examples, num_candidates, seed, negative_strategy, popularity)
    else:
        sets = given_candidate_sets(log, examples, candidates)
    with_candidates = uses_candidates(template)
    items = []
    for example, (candidates, target_index) in zip(examples, sets):
        titles = [log.titles[i] for i in candidates]
        history = [log.titles[i] for i in example.history]
        text = render_prompt(template, history, titles if with_candidates else (), list_style)
        prompt, completions = prompt_and_completions(text, titles, conversational, answer_prefix)
        items.append(RankingPrompt(example, candidates, target_index, prompt, completions))
    return items


def given_candidate_sets(
    log: InteractionLog, examples: Sequence[UserExample], candidates: Sequence[Sequence[str]]
) -> list[tuple[list[str], int]]:
    """`candidate_sets`' form for lists given per example; `ValueError` naming the user when a list does not fit.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b"]}, {i: i.upper() for i in "abcd"})
    >>> given_candidate_sets(log, [UserExample("u", ("a",), "b")], [["c", "b", "d"]])
    [(['c', 'b', 'd'], 1)]
    ```
    """
    if len(candidates) != len(examples):
        raise ValueError(f"{len(candidates)} candidate lists for {len(examples)} users")
    sets = []
    for example, items in zip(examples, candidates):
        items = [str(i) for i in items]
        unknown = [i for i in items if i not in log.titles]
        if example.target not in items or unknown or len(set(items)) != len(items):
            problem = f"items not in the log: {unknown}" if unknown else "no target or repeated items"
            raise ValueError(
                f"user {example.user!r}: candidate list {items} does not fit target {example.target!r} ({problem})"
            )
        sets.append((items, items.index(example.target)))
    return sets


def _pairwise_prompts(
    log: InteractionLog, item: RankingPrompt, seed: int, prompt: PromptSettings
) -> list[tuple[Prompt, list[Completion], int]]:
    """For each negative: (prompt offering target and negative, their completions, index of the target), rendered
    as `prompt` says (the AUC mode's pairs, in a seeded order)."""
    template = resolve_template(prompt.prompt_style)
    history = [log.titles[i] for i in item.example.history]
    target = item.candidates[item.target_index]
    rng = random.Random(f"dmpo-trl-pairwise|{seed}|{item.example.user}|{item.example.target}")
    out = []
    for k in item.negatives:
        pair = [target, item.candidates[k]]
        rng.shuffle(pair)
        titles = [log.titles[i] for i in pair]
        text = render_prompt(template, history, titles, prompt.list_style)
        shown, completions = prompt_and_completions(text, titles, prompt.conversational, prompt.answer_prefix)
        out.append((shown, completions, pair.index(target)))
    return out
