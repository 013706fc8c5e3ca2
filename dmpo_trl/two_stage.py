"""Two-stage ranking: a retriever proposes each user's top M unseen items of the whole catalogue, the LLM reranks them.

This is how an LLM ranker is deployed, and the measure that goes with it is full-catalogue: Recall@10, NDCG@10 and
MRR over every item the user has not seen, a target the retriever missed counted as a miss
(`dmpo_trl.retrieval.full_catalogue_metrics`). Reranking permutes the retrieved items, so the two-stage Recall@M is
the retriever's; what the LLM can change is the order within them.

- `evaluate_two_stage(model, tokenizer, examples, log, retriever="sasrec", top_m=20)`, also
  `evaluate_ranking(model, tokenizer, examples, log, retriever="sasrec", retrieve_top=20)`: retrieve, rank the
  retrieved lists that hold the target with `evaluate_ranking` (a list without the target is a miss whatever its
  order), and score the two-stage ranking beside the retriever's own order.
- Fusion: `fusion_weight > 0` ranks by the LLM's log-likelihood plus `fusion_weight` times the retriever's score,
  standardised within each user's list (`fused_scores`); `choose_fusion_weight` picks the weight from
  `FUSION_WEIGHTS` by mean NDCG@10 on validation users, the rule the popularity prior's weight is chosen by.

Example:
```python
>>> from dmpo_trl.data import InteractionLog, UserExample
>>> from dmpo_trl.retrieval import Retrieved
>>> retrieved = [Retrieved(UserExample("u", ("a",), "c"), ["b", "c"], [2.0, 1.0])]
>>> llm = {"per_user": [{"user": "u", "candidates": ["b", "c"], "scores": [-3.0, -1.0]}]}
>>> two_stage_result(retrieved, llm, k=1)["metrics"]["full_catalogue"]["recall@1"]  # the LLM moves c up
1.0
>>> two_stage_result(retrieved, llm, fusion_weight=10.0, k=1)["metrics"]["full_catalogue"]["recall@1"]
0.0
```

The names live in `dmpo_trl.evaluation` (`two_stage` for the scoring, `evaluate` for the model's part); this module
keeps them importable from `dmpo_trl.two_stage`.
"""

from .evaluation.evaluate import evaluate_two_stage
from .evaluation.two_stage import FUSION_WEIGHTS, choose_fusion_weight, fused_scores, two_stage_result


__all__ = ["FUSION_WEIGHTS", "choose_fusion_weight", "evaluate_two_stage", "fused_scores", "two_stage_result"]
