"""Ranking evaluation of a causal LM recommender (and of simple baselines) on fixed candidate lists.

Every user gets `num_candidates` items: the target plus negatives from `dmpo_trl.data.candidate_sets` with the given
seed, so every model and baseline is scored on identical lists, which are also the lists the training prompts
show. The prompt and the candidate completions are rendered exactly as in `build_preference_dataset` rows.

Modes:
- "likelihood": score each candidate title by its log-likelihood after the prompt (`dmpo_trl.scoring`), rank them;
  reports hit_ratio@1, hit_ratio@5, ndcg@5, mrr.
- "generation": greedy-decode an answer and find which candidate titles it names; reports hit_ratio@1 (exactly one
  candidate named and it is the target, as S-DPO counts it) and valid_ratio (exactly one candidate named).
- "auc": the DMPO paper's pairwise protocol: for each negative, a prompt offering only the target and that negative
  (in a seeded order); auc is the fraction of negatives the target outscores (ties count one half), averaged over
  users.

Baselines, on the same candidates: "random" (seeded random scores) and "popular" (interaction counts; see
`baseline_popularity` for which interactions count). `popularity_prior=w` ranks by the model's log-likelihood plus
`w * log(1 + count)` (`with_popularity_prior`), the model and the popular baseline in one score.

Example:
```python
>>> from dmpo_trl.data import few_shot_split, load_movielens
>>> from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking
>>> log = load_movielens("movielens-100k")  # doctest: +SKIP
>>> test = few_shot_split(log, num_test_users=500, seed=0).test  # doctest: +SKIP
>>> evaluate_baseline("popular", test, log, num_candidates=20, seed=0)["metrics"]["hit_ratio@1"]  # doctest: +SKIP
0.238
>>> result = evaluate_ranking(model, tokenizer, test, log, output="results.json")  # doctest: +SKIP
>>> settings, prompt = EvaluationSettings(mode="auc", num_candidates=20), PromptSettings(batch_size=8)
>>> result = evaluate_ranking(model, tokenizer, test, log, settings=settings, prompt=prompt)  # doctest: +SKIP
```

The package, one concept a module (every name is importable from `dmpo_trl.evaluation`):

- `candidates`: the evaluation items (`RankingPrompt`, `build_ranking_prompts`, `given_candidate_sets`);
- `baselines`: `BASELINES`, `evaluate_baseline`, `baseline_popularity`, `with_popularity_prior`;
- `generation`: `generate_answers`, `named_candidates`, `explain_pick`;
- `results`: `ranking_metrics`, `per_user_ranking_metrics`, `save_result`, `check_result_path`, `progress_path`,
  `format_table`, `format_history_breakdown` (every result's `metrics["by_history_length"]`: the metrics per group
  of users by how many interactions they had before the target, `dmpo_trl.cold_start`);
- `evaluate`: `MODES`, `evaluate_ranking`, ranking by `dmpo_trl.settings.EvaluationSettings` and `PromptSettings`,
  and `evaluate_two_stage` (`evaluate_ranking(..., retriever=...)`): a retriever's top items of the whole catalogue,
  reranked by the model;
- `two_stage`: `FUSION_WEIGHTS`, `fused_scores`, `two_stage_result`, `choose_fusion_weight`, the two-stage
  ranking's full-catalogue scoring (also importable from `dmpo_trl.two_stage`).
"""

from ..classic import CLASSIC_BASELINES
from ..scoring import score_candidates, score_completions, tokenize_for_scoring
from ..settings import EvaluationSettings, PromptSettings
from .baselines import BASELINES, baseline_popularity, evaluate_baseline, with_popularity_prior
from .candidates import RankingPrompt, build_ranking_prompts, given_candidate_sets
from .evaluate import MODES, evaluate_ranking, evaluate_two_stage
from .generation import EXPLAIN_QUESTION, explain_pick, generate_answers, named_candidates
from .results import (
    check_result_path,
    format_history_breakdown,
    format_table,
    per_user_ranking_metrics,
    progress_path,
    ranking_metrics,
    save_result,
    tie_seed,
)
from .two_stage import FUSION_WEIGHTS, choose_fusion_weight, fused_scores, two_stage_result


__all__ = [
    "BASELINES",
    "CLASSIC_BASELINES",
    "EXPLAIN_QUESTION",
    "FUSION_WEIGHTS",
    "MODES",
    "EvaluationSettings",
    "PromptSettings",
    "RankingPrompt",
    "baseline_popularity",
    "build_ranking_prompts",
    "check_result_path",
    "choose_fusion_weight",
    "evaluate_baseline",
    "evaluate_ranking",
    "evaluate_two_stage",
    "explain_pick",
    "format_history_breakdown",
    "format_table",
    "fused_scores",
    "generate_answers",
    "given_candidate_sets",
    "named_candidates",
    "per_user_ranking_metrics",
    "progress_path",
    "ranking_metrics",
    "save_result",
    "score_candidates",
    "score_completions",
    "tie_seed",
    "tokenize_for_scoring",
    "two_stage_result",
    "with_popularity_prior",
]
