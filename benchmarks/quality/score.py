"""Ranking the study's users with a trained model through the library: every candidate scored by log-likelihood
(`dmpo_trl.scoring.tokenize_for_scoring` and `score_completions`, one forward per distinct prompt), the baselines
(`dmpo_trl.evaluation.evaluate_baseline`), greedy generation and explanations (`dmpo_trl.evaluation`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .config import REGIMES, Method
from .data import Study, conversational


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def run_baseline(study: Study, method: Method) -> dict[str, Any]:
    from dmpo_trl.evaluation import evaluate_baseline

    scores = {}
    for regime in REGIMES:
        # no `popularity` argument: it would also change how candidates are drawn (popularity_matched)
        result = evaluate_baseline(method.name, study.users, study.log, study.cfg.num_candidates, study.seed, regime)
        scores[regime] = {"score": [_round(u["scores"]) for u in result["per_user"]]}
    return {"scores": scores}


def score_users(study: Study, model, tokenizer) -> dict[str, Any]:
    """Summed log-prob and token count of every candidate of every regime; one forward per distinct prompt."""
    from dmpo_trl.scoring import score_completions, tokenize_for_scoring

    by_regime = study.ranking_prompts(tokenizer)
    out = {regime: {"sum": [], "tokens": []} for regime in REGIMES}
    for user_items in zip(*by_regime.values()):
        groups: dict[str, dict[str, Any]] = {}  # prompt -> {item: completion}
        for item in user_items:
            key = json.dumps(item.prompt)
            groups.setdefault(key, {"prompt": item.prompt, "completions": {}})
            groups[key]["completions"].update(zip(item.candidates, item.completions))
        scored: dict[tuple[str, str], tuple[float, int]] = {}
        for key, group in groups.items():
            items = list(group["completions"])
            prompt_ids, completion_ids = tokenize_for_scoring(
                tokenizer, group["prompt"], [group["completions"][i] for i in items]
            )
            sums, counts = score_completions(model, tokenizer, prompt_ids, completion_ids)
            scored.update({(key, i): (float(s), int(n)) for i, s, n in zip(items, sums, counts)})
        for regime, item in zip(REGIMES, user_items):
            key = json.dumps(item.prompt)
            out[regime]["sum"].append(_round(scored[(key, i)][0] for i in item.candidates))
            out[regime]["tokens"].append([scored[(key, i)][1] for i in item.candidates])
    return {
        "scores": {r: {"sum": v["sum"]} for r, v in out.items()},
        "tokens": {r: v["tokens"] for r, v in out.items()},
    }


def generate(study: Study, model, tokenizer) -> dict[str, Any]:
    """Greedy answers; per regime, HitRatio@1 (exactly one candidate named, the target) and ValidRatio."""
    from dmpo_trl.evaluation import generate_answers, named_candidates

    result = {}
    answers_by_prompt: dict[str, str] = {}
    for regime, items in study.ranking_prompts(tokenizer).items():
        todo = [item.prompt for item in items if json.dumps(item.prompt) not in answers_by_prompt]
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            for prompt, answer in zip(chunk, generate_answers(model, tokenizer, chunk, study.cfg.max_new_tokens)):
                answers_by_prompt[json.dumps(prompt)] = answer
        hits, valid = [], []
        for item in items:
            named = named_candidates(
                answers_by_prompt[json.dumps(item.prompt)], [study.log.titles[i] for i in item.candidates]
            )
            hits.append(float(named == [item.target_index]))
            valid.append(float(len(named) == 1))
        result[regime] = {"hit": hits, "valid": valid}
    answers = [answers_by_prompt[json.dumps(item.prompt)] for item in items]
    return {"generation": result, "answers": answers}


def explain(study: Study, model, tokenizer, scores: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's top pick (uniform regime, summed log-prob) for the first test users, and its explanation."""
    from dmpo_trl.evaluation import explain_pick

    if not conversational(tokenizer):
        return []
    out = []
    for index in range(min(study.cfg.explain_users, len(study.users))):
        example = study.users[index]
        candidates, _ = study.candidates["uniform"][index]
        user_scores = scores["uniform"]["sum"][index]
        pick = candidates[int(np.argmax(user_scores))]
        text = explain_pick(model, tokenizer, example, study.log, pick, study.cfg.prompt_style, candidates)
        out.append(
            {
                "user": example.user,
                "history": [study.log.titles[i] for i in example.history],
                "target": study.log.titles[example.target],
                "pick": study.log.titles[pick],
                "explanation": text,
            }
        )
    return out
