"""Ranking the test users around training, and what `run_recipe` returns: `evaluate_models`, `RecipeResult` and its
before/after table (`summary_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data import InteractionLog, UserExample
from ..evaluation import evaluate_baseline, evaluate_ranking, format_table
from ..settings import EvaluationSettings, PromptSettings
from .arguments import RecDataArguments, RecipeArguments
from .loading import data_seed


__all__ = ["DEMO_METRICS", "RecipeResult", "evaluate_models", "summary_table"]

DEMO_METRICS = ("hit_ratio@1", "ndcg@5")
"""The metrics of the before/after table."""


@dataclass
class RecipeResult:
    """What `run_recipe` returns: ranking results by name, training history, timings, and the trainer."""

    results: dict[str, dict[str, Any]]
    log_history: list[dict[str, Any]]
    timings: dict[str, float]
    output_dir: str | None = None
    trainer: Any = field(default=None, repr=False)
    data_args: RecDataArguments | None = None  # the settings the test users were ranked with

    def table(self, metrics: Sequence[str] = DEMO_METRICS) -> str:
        """The results as a plain-text table (`summary_table`)."""
        return summary_table(self.results, metrics)

    def metric(self, name: str, key: str) -> float:
        """One metric of one named result, e.g. `result.metric("dmpo", "hit_ratio@1")`."""
        return self.results[name]["metrics"][key]


def evaluate_models(
    models: dict[str, Any],
    tokenizer,
    log: InteractionLog,
    examples: Sequence[UserExample],
    data_args: RecDataArguments,
    recipe_args: RecipeArguments | None = None,
    conversational: bool = False,
    seed: int = 0,
    candidates: Sequence[Sequence[str]] | None = None,
    negative_strategy: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Rank `examples` with each named model (and `recipe_args.baselines`) on the same candidate lists.

    `candidates` (one list per example) replaces the lists drawn with the split seed, e.g. a saved `split.json`'s;
    `negative_strategy` draws them another way than `data_args.candidate_strategy`.

    Example:
    ```python
    >>> results = evaluate_models({"zero-shot": model}, tokenizer, log, split.test, data_args)  # doctest: +SKIP
    >>> results["zero-shot"]["metrics"]["ndcg@5"]  # doctest: +SKIP
    0.31
    ```
    """
    recipe_args = recipe_args or RecipeArguments()
    strategy = negative_strategy or data_args.candidate_strategy
    settings = EvaluationSettings.from_arguments(
        data_args, recipe_args, data_seed(data_args, seed), negative_strategy=strategy
    )
    prompt = PromptSettings.from_arguments(data_args, recipe_args, conversational=conversational)
    results = {}
    for baseline in recipe_args.baselines:
        results[baseline] = evaluate_baseline(
            baseline,
            examples,
            log,
            settings.num_candidates,
            settings.seed,
            negative_strategy=settings.negative_strategy,
            candidates=candidates,
        )
    for name, model in models.items():
        results[name] = evaluate_ranking(
            model, tokenizer, examples, log, settings=settings, prompt=prompt, candidates=candidates, model_name=name
        )
    return results


def summary_table(results: dict[str, dict[str, Any]], metrics: Sequence[str] = DEMO_METRICS) -> str:
    """A plain-text table of the chosen metrics, one row per named result.

    Example:
    ```python
    >>> print(summary_table({"zero-shot": {"metrics": {"hit_ratio@1": 0.1, "ndcg@5": 0.2, "mrr": 0.3}}}))
    model      hit_ratio@1  ndcg@5
    zero-shot  0.1000       0.2000
    ```
    """
    chosen = {
        name: {"metrics": {key: float(result["metrics"][key]) for key in metrics if key in result["metrics"]}}
        for name, result in results.items()
    }
    return format_table(chosen)
