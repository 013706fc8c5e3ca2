"""How a model ranks: the prompt it reads and how its titles are scored (`PromptSettings`, one record for evaluation,
`Ranker` and `ranker.json`), and what a ranking evaluation ranks (`EvaluationSettings`: the mode and the candidate
lists).

Example:
```python
>>> PromptSettings(max_history=5).prompt_style
'history'
>>> EvaluationSettings(num_candidates=10).mode
'likelihood'
```
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PromptSettings:
    """How prompts are rendered and titles scored for a model (`evaluate_ranking`, `Ranker`, `ranker.json`)."""

    prompt_style: str = "history"
    conversational: bool = False
    list_style: str = "numbered"
    answer_prefix: str = "\nAnswer:"
    normalize: bool = False
    end_of_turn: bool = True
    max_history: int | None = None
    batch_size: int = 20
    popularity_prior: float = 0.0  # > 0: scores carry `popularity_prior * log(1 + count)` (`with_popularity_prior`)


@dataclass
class EvaluationSettings:
    """What `evaluate_ranking` ranks and how: the mode, the candidate lists, the work per forward pass.

    `num_candidates`, `seed` and `negative_strategy` draw the candidate lists as `dmpo_trl.data.candidate_sets` does
    (the same values give the same lists for every model, baseline and run); `max_new_tokens` is the answer length
    in generation mode; `users_per_forward` scores that many users' candidates in one packed forward (likelihood mode);
    `progress` shows a progress bar.
    """

    mode: str = "likelihood"  # "likelihood", "generation" or "auc" (`dmpo_trl.evaluation.MODES`)
    num_candidates: int = 20
    seed: int = 0
    negative_strategy: str = "uniform"
    max_new_tokens: int = 32
    users_per_forward: int = 1
    progress: bool = True
