"""Two-stage ranking: a retriever proposes each user's top M unseen items of the whole catalogue, the LLM reranks them.

The names live in `dmpo_trl.evaluation`: `evaluate_two_stage` (also `evaluate_ranking(..., retriever=...)`) runs the
model on the retrieved lists, `dmpo_trl.evaluation.two_stage` holds the scoring (`two_stage_result`, `fused_scores`,
`choose_fusion_weight`, `FUSION_WEIGHTS`) and says what is measured. This module keeps them importable from
`dmpo_trl.two_stage`.

Example:
```python
>>> from dmpo_trl.two_stage import fused_scores
>>> fused_scores([-3.0, -1.0], [2.0, 1.0], 0.0).tolist()  # weight 0: the LLM's scores alone
[-3.0, -1.0]
```
"""

from .evaluation.evaluate import evaluate_two_stage
from .evaluation.two_stage import FUSION_WEIGHTS, choose_fusion_weight, fused_scores, two_stage_result


__all__ = ["FUSION_WEIGHTS", "choose_fusion_weight", "evaluate_two_stage", "fused_scores", "two_stage_result"]
