"""How a model ranks: the prompt it reads and how its titles are scored (`PromptSettings`, one record for evaluation,
`Ranker` and `ranker.json`), and what a ranking evaluation ranks (`EvaluationSettings`: the mode and the candidate
lists). `from_arguments` builds either from the data and ranking arguments of the recipe and the commands.

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
from typing import Any


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

    @classmethod
    def from_arguments(cls, data_args: Any, ranking_args: Any, **fields: Any) -> PromptSettings:
        """The prompt that data arguments (`template`, `conversational`, `max_history`: a `RecDataArguments`) and
        ranking arguments (`ranking_normalize`, `ranking_batch_size`: a `RecipeArguments`, `dmpo-trl evaluate`'s)
        describe; `fields` set any field, e.g. the conversational form the tokenizer chose or `popularity_prior`.

        Example:
        ```python
        >>> from dmpo_trl.recipe import RecDataArguments, RecipeArguments
        >>> data_args, recipe_args = RecDataArguments(max_history=5), RecipeArguments()
        >>> prompt = PromptSettings.from_arguments(data_args, recipe_args, end_of_turn=False)
        >>> prompt.prompt_style, prompt.max_history, prompt.end_of_turn
        ('history', 5, False)
        ```
        """
        named = {
            "prompt_style": data_args.template,
            "conversational": data_args.conversational,
            "max_history": data_args.max_history,
            "normalize": ranking_args.ranking_normalize,
            "batch_size": ranking_args.ranking_batch_size,
        }
        return cls(**{**named, **fields})


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

    @classmethod
    def from_arguments(cls, data_args: Any, ranking_args: Any, seed: int, **fields: Any) -> EvaluationSettings:
        """What data arguments (`num_candidates`, `candidate_strategy`: a `RecDataArguments`) and ranking arguments
        (`ranking_mode`, `show_progress`: a `RecipeArguments`, `dmpo-trl evaluate`'s) rank, the candidate lists drawn
        with `seed`; `fields` set any field, e.g. `max_new_tokens`.

        Example:
        ```python
        >>> from dmpo_trl.recipe import RecDataArguments, RecipeArguments
        >>> data_args, recipe_args = RecDataArguments(num_candidates=10), RecipeArguments()
        >>> settings = EvaluationSettings.from_arguments(data_args, recipe_args, seed=3)
        >>> settings.mode, settings.num_candidates, settings.seed, settings.negative_strategy
        ('likelihood', 10, 3, 'uniform')
        ```
        """
        named = {
            "mode": ranking_args.ranking_mode,
            "num_candidates": data_args.num_candidates,
            "seed": seed,
            "negative_strategy": data_args.candidate_strategy,
            "progress": ranking_args.show_progress,
        }
        return cls(**{**named, **fields})
