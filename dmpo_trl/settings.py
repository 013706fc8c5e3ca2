"""How a model ranks: the prompt it reads and how its titles are scored, one record for evaluation, `Ranker` and
`ranker.json`.

Example:
```python
>>> PromptSettings(max_history=5).prompt_style
'history'
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
