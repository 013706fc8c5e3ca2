"""The quality study's summaries from its saved runs: per-user metrics pooled over seeds, intervals, paired
comparisons and diagnostics (the statistics themselves are `dmpo_trl.metrics`')."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dmpo_trl.metrics import interval, paired_difference

from .config import _DMPO_K, REGIMES, QualityConfig
from .data import load_log, ranked_users, split_users


def load_results(cfg: QualityConfig) -> tuple[dict[str, list[dict]], dict[int, dict]]:
    """Saved results by method (one entry per seed, in seed order) and candidates by seed."""
    results: dict[str, list[dict]] = {}
    candidates: dict[int, dict] = {}
    for seed in cfg.seeds:
        folder = Path(cfg.results_dir) / "runs" / f"seed{seed}"
        if not (folder / "candidates.json").is_file():
            continue
        candidates[seed] = json.loads((folder / "candidates.json").read_text())
        for name in cfg.methods:
            if (folder / f"{name}.json").is_file():
                results.setdefault(name, []).append(json.loads((folder / f"{name}.json").read_text()))
    return results, candidates


def per_user_metrics(
    runs: list[dict], candidates: dict[int, dict], regime: str, scoring: str
) -> dict[str, np.ndarray]:
    """HitRatio@1 and NDCG@5 per test user, pooled over the seeds (in seed order)."""
    from dmpo_trl.metrics import hits_at_k, ndcg_at_k, rank_of_target, tie_seed

    ranks = []
    for run_ in runs:
        rows = candidates[run_["seed"]][regime]
        if scoring == "mean":
            sums, tokens = run_["scores"][regime]["sum"], run_["tokens"][regime]
            all_scores = [[s / max(n, 1) for s, n in zip(a, b)] for a, b in zip(sums, tokens)]
        else:
            key = "score" if "score" in run_["scores"][regime] else "sum"
            all_scores = run_["scores"][regime][key]
        for row, scores in zip(rows, all_scores):
            seed = tie_seed(run_["seed"], row["user"], row["target"])
            ranks.append(rank_of_target(scores, row["target_index"], ties="random", seed=seed))
    return {"hit_ratio@1": hits_at_k(ranks, 1), "ndcg@5": ndcg_at_k(ranks, 5)}


def fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def summarize(cfg: QualityConfig) -> dict[str, Any]:
    results, candidates = load_results(cfg)
    summary: dict[str, Any] = {"methods": {}, "comparisons": [], "seeds": sorted(candidates)}
    complete = {name: runs for name, runs in results.items() if len(runs) == len(candidates)}
    from dmpo_trl.evaluation import baseline_popularity

    log = load_log(cfg)
    popularity = {
        seed: baseline_popularity(log, ranked_users(cfg, split_users(cfg, log, seed))) for seed in candidates
    }
    for name, runs in complete.items():
        entry: dict[str, Any] = {}
        scorings = ["score"] if "score" in runs[0]["scores"][REGIMES[0]] else ["sum", "mean"]
        for regime in REGIMES:
            for scoring in scorings:
                values = per_user_metrics(runs, candidates, regime, scoring)
                label = "sum" if scoring == "score" else scoring
                entry[f"{regime}/{label}"] = {key: interval(v) for key, v in values.items()}
                entry[f"{regime}/{label}/per_user"] = values
            if "generation" in runs[0]:
                hits = np.concatenate([r["generation"][regime]["hit"] for r in runs])
                valid = np.concatenate([r["generation"][regime]["valid"] for r in runs])
                entry[f"{regime}/generation"] = {"hit_ratio@1": interval(hits), "valid_ratio": float(valid.mean())}
        entry["train_seconds"] = sum(r.get("train", {}).get("seconds", 0.0) for r in runs)
        entry["eval_seconds"] = sum(r.get("eval_seconds", 0.0) for r in runs)
        entry["wall_seconds"] = sum(r.get("wall_seconds", 0.0) for r in runs)
        entry["num_users"] = sum(len(candidates[r["seed"]][REGIMES[0]]) for r in runs)
        entry["diagnostics"] = diagnostics(runs, candidates, popularity)
        summary["methods"][name] = entry
    summary["comparisons"] = comparisons(summary["methods"])
    return summary


def marked_difference(a: np.ndarray, b: np.ndarray) -> str:
    """The paired difference a - b as "mean [low, high]", marked win / loss when its interval excludes 0."""
    mean, low, high = paired_difference(a, b)
    return fmt(mean, low, high) + (" win" if low > 0 else " loss" if high < 0 else "")


def comparisons(methods: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired bootstrap intervals of HitRatio@1 differences (same users, same candidates) for the claims."""
    dmpo = [m for m in methods if _DMPO_K.match(m)]
    pairs = []
    for regime in REGIMES:
        key = f"{regime}/sum"
        best = max(dmpo, key=lambda m: methods[m][key]["hit_ratio@1"][0], default=None)
        if best is None:
            continue
        for other in ("popular", "dpo", "sft", "zero-shot", "sdpo-k4", "pl-k4", "sft+dmpo-k4", "random"):
            if other in methods and other != best:
                pairs.append((regime, best, other))
        if "dmpo-k4" in methods and "dpo" in methods:
            pairs.append((regime, "dmpo-k4", "dpo"))
        for name in methods:  # other training negatives or length-normalised rewards against the plain method
            base = name.split("@")[0]
            if base != name and base in methods:
                pairs.append((regime, name, base))
            if base.endswith("-ln") and base[:-3] in methods:
                pairs.append((regime, base, base[:-3]))
    out = []
    for regime, a, b in dict.fromkeys(pairs):
        key = f"{regime}/sum/per_user"
        mean, low, high = paired_difference(methods[a][key]["hit_ratio@1"], methods[b][key]["hit_ratio@1"])
        verdict = "win" if low > 0 else "loss" if high < 0 else "no clear difference"
        out.append({"regime": regime, "a": a, "b": b, "diff": mean, "ci95": [low, high], "verdict": verdict})
    return out


def diagnostics(runs: list[dict], candidates: dict[int, dict], popularity: dict[int, Any]) -> dict[str, float]:
    """What drives the scores (uniform regime): popularity and title length, and training's final reward margins.

    `popularity`: per seed, the popular baseline's counts (the log without the ranked users' targets)."""
    if "tokens" not in runs[0] and "train" not in runs[0]:
        return {}
    out: dict[str, float] = {}
    if "tokens" in runs[0]:
        pop_corr, len_corr, top_popular, target_tokens, negative_tokens = [], [], [], [], []
        for run_ in runs:
            rows, counts = candidates[run_["seed"]]["uniform"], popularity[run_["seed"]]
            for row, scores, tokens in zip(rows, run_["scores"]["uniform"]["sum"], run_["tokens"]["uniform"]):
                pop = np.log1p([counts.get(i, 0) for i in row["candidates"]])
                pop_corr.append(_spearman(scores, pop))
                len_corr.append(_spearman(scores, tokens))
                top_popular.append(float(int(np.argmax(scores)) == int(np.argmax(pop))))
                target_tokens.append(tokens[row["target_index"]])
                negative_tokens.extend(t for k, t in enumerate(tokens) if k != row["target_index"])
        out.update(
            {
                "spearman(score, log popularity)": float(np.nanmean(pop_corr)),
                "spearman(score, title tokens)": float(np.nanmean(len_corr)),
                "top pick = most popular candidate": float(np.mean(top_popular)),
                "target title tokens": float(np.mean(target_tokens)),
                "negative title tokens": float(np.mean(negative_tokens)),
            }
        )
    histories = [r["train"]["log_history"] for r in runs if r.get("train")]
    for key in ("rewards/margins", "rewards/accuracies", "loss"):
        finals = [last for h in histories if (last := _last(h, key)) is not None]
        if finals:
            out[f"final train {key}"] = float(np.mean(finals))
    return out


def _last(history: list[dict], key: str) -> float | None:
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
