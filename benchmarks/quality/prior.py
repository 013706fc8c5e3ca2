"""A popularity prior on the quality study's saved scores: its weight chosen on validation users, then the test users.

`evaluate_ranking(..., popularity_prior=w)` ranks by log-likelihood + w * log(1 + count), the counts the popular
baseline ranks by (`with_popularity_prior`). Every quality-study run saves each candidate's summed log-likelihood,
and its folder's `popular` run each candidate's count, so the prior needs no new forward pass: for each model this
reads a validation run and a test run (`results_dir:method`, each folder with a `popular` run), picks the weight on
the validation run by the study's rule (validation NDCG@5, mean of both candidate regimes; the first best wins a
tie), and reports the test run with that weight: HitRatio@1 and NDCG@5 with 95% intervals, paired against most
popular, the same model without the prior, and the other models with theirs.

    python -m benchmarks.quality.prior --out benchmarks/results/quality/prior/prior.md
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dmpo_trl.evaluation import with_popularity_prior
from dmpo_trl.metrics import interval, paired_difference
from dmpo_trl.prior import PRIOR_WEIGHTS
from dmpo_trl.provenance import provenance

from .compare import load_runs as _load_runs
from .config import REGIMES
from .summarize import fmt, marked_difference, per_user_metrics


RESULTS = Path(__file__).resolve().parents[1] / "results"
WEIGHTS = PRIOR_WEIGHTS  # the grid `dmpo-trl train` chooses the weight from


@dataclass
class Prior:
    label: str
    valid: str  # results_dir:method of the validation run the weight is chosen on (relative to the results root)
    test: str  # results_dir:method of the test run it is applied to
    valid_popular: str | None = None  # the folder of the popular run for `valid` (default: its own folder)


load_runs = functools.lru_cache(maxsize=None)(_load_runs)  # each run is read once, however many weights use it

CONFIGS = [
    Prior("DMPO K=4, 100 rows", "quality/lr/lr1e-3-ep2:dmpo-k4", "quality/tuned:dmpo-k4"),
    Prior("DPO, 100 rows", "quality/lr/lr3e-3:dpo", "quality/tuned:dpo"),
    Prior("SFT, 100 rows", "quality/lr/lr3e-3:sft", "quality/tuned:sft"),
    Prior("zero-shot SmolLM2-135M-Instruct", "quality/prior/valid:zero-shot", "quality/tuned:zero-shot"),
    Prior("DMPO K=4, 600 rows (w of 100 rows)", "quality/lr/lr1e-3-ep2:dmpo-k4", "quality/rows600:dmpo-k4"),
    Prior("DMPO K=4, 600 rows", "quality/lr-rows600/lr1e-3-ep2:dmpo-k4", "quality/rows600-chosen:dmpo-k4",
          "quality/prior/valid"),
    Prior("DMPO K=4, 1,000 rows (w of 100 rows)", "quality/lr/lr1e-3-ep2:dmpo-k4", "quality/rows1000:dmpo-k4"),
    Prior("DMPO K=4, 1,000 rows", "quality/lr-rows1000/lr1e-3-ep2:dmpo-k4", "quality/rows1000-chosen:dmpo-k4",
          "quality/prior/valid"),
    Prior("zero-shot Gemma 3 270M", "quality/prior/valid-gemma:zero-shot", "quality/gemma:zero-shot"),
    Prior("Gemma 3 270M, DMPO K=4, 100 rows", "quality/lr-gemma/lr3e-4:dmpo-k4", "quality/gemma-chosen:dmpo-k4",
          "quality/prior/valid-gemma"),
]  # fmt: skip


def with_prior(runs: list[dict], popular: list[dict], candidates: dict[int, dict], weight: float) -> list[dict]:
    """Copies of `runs` whose summed scores carry the prior, the counts from the same seeds' `popular` runs."""
    by_seed = {run["seed"]: run for run in popular}
    out = []
    for run in runs:
        scores = {}
        for regime in REGIMES:
            rows = candidates[run["seed"]][regime]
            counts = by_seed[run["seed"]]["scores"][regime]["score"]
            scores[regime] = {
                "sum": [
                    with_popularity_prior(s, row["candidates"], Counter(dict(zip(row["candidates"], c))), weight)
                    for s, row, c in zip(run["scores"][regime]["sum"], rows, counts, strict=True)
                ]
            }
        out.append({"seed": run["seed"], "scores": scores})
    return out


def metrics(spec: str, weight: float, root: Path, popular_folder: str | None = None) -> tuple[dict, dict]:
    """Per-user metrics by regime of run `spec` with the prior at `weight`, and the run's candidates by seed; the
    counts from the popular run in `popular_folder` (default: the run's own folder), on the same candidates."""
    folder, _, method = spec.rpartition(":")
    runs, candidates = load_runs(f"{root / folder}:{method}")
    popular, popular_candidates = load_runs(f"{root / (popular_folder or folder)}:popular")
    if any(popular_candidates.get(seed) != rows for seed, rows in candidates.items()):
        raise SystemExit(f"quality_prior: {spec}: its popular run ranked other candidates")
    runs = with_prior(runs, popular, candidates, weight)
    return {r: per_user_metrics(runs, candidates, r, "sum") for r in REGIMES}, candidates


def criterion(per_user: dict) -> float:
    """The study's selection rule: NDCG@5, mean of both candidate regimes."""
    return float(np.mean([per_user[r]["ndcg@5"].mean() for r in REGIMES]))


def choose(config: Prior, weights: tuple[float, ...], root: Path) -> tuple[float, dict[float, float]]:
    curve = {w: criterion(metrics(config.valid, w, root, config.valid_popular)[0]) for w in weights}
    return max(weights, key=lambda w: (curve[w], -weights.index(w))), curve


def study(configs: list[Prior] = CONFIGS, weights: tuple[float, ...] = WEIGHTS, root: Path = RESULTS) -> dict:
    """The chosen weight, validation curve and test metrics of each configuration, and the paired differences."""
    rows, tests = [], {}
    for config in configs:
        weight, curve = choose(config, weights, root)
        by_weight = {w: metrics(config.test, w, root)[0] for w in {*weights, weight, 0.0}}
        prior, plain = by_weight[weight], by_weight[0.0]
        folder = config.test.rpartition(":")[0]
        popular, candidates = load_runs(f"{root / folder}:popular")  # `metrics` checked they match the run's
        baseline = {r: per_user_metrics(popular, candidates, r, "sum") for r in REGIMES}
        tests[config.label] = (prior, candidates)
        hits = baseline[REGIMES[0]]["hit_ratio@1"]
        test_curve = {  # for reading only: w is chosen on the validation run
            w: paired_difference(by_weight[w][REGIMES[0]]["hit_ratio@1"], hits) for w in weights
        }
        rows.append({"config": config, "weight": weight, "curve": curve, "prior": prior, "plain": plain,
                     "popular": baseline, "test_curve": test_curve})  # fmt: skip
    labels = list(tests)
    for row in rows:  # each model with its prior against those after it, where they ranked the same candidates
        mine = row["config"].label
        row["others"] = {
            label: {r: marked_difference(row["prior"][r]["hit_ratio@1"], prior[r]["hit_ratio@1"]) for r in REGIMES}
            for label, (prior, candidates) in tests.items()
            if labels.index(label) > labels.index(mine) and candidates == tests[mine][1]
        }
    return {"weights": list(weights), "rows": rows}


def report(result: dict) -> str:
    weights = result["weights"]
    lines = [
        "# A popularity prior on the quality study's scores",
        "",
        "Ranked by summed log-likelihood + w x log(1 + count), the counts of the popular baseline (the log without "
        "the ranked users' targets), as `evaluate_ranking(..., popularity_prior=w)` ranks. w is chosen per model on "
        "its validation run (seed 0, 50 validation users) by the study's rule, validation NDCG@5 averaged over both "
        "candidate regimes, from the grid below; the test runs are the 500 test users (2 seeds x 250) of each "
        "folder. 95% bootstrap intervals, paired for the differences (win / loss: the interval excludes 0).",
        "",
        "## Chosen weight and test users",
        "",
    ]
    head = ["model", "validation run", "test run", "w"]
    head += [f"{m} {r}" for m in ("HR@1", "NDCG@5") for r in REGIMES]
    head += [f"HR@1 {r} - most popular" for r in REGIMES] + [f"NDCG@5 {r} - most popular" for r in REGIMES]
    head += [f"HR@1 {r} - same model, w=0" for r in REGIMES]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        config, prior = row["config"], row["prior"]
        cells = [config.label, f"`{config.valid}`", f"`{config.test}`", f"{row['weight']:g}"]
        cells += [fmt(*interval(prior[r][m])) for m in ("hit_ratio@1", "ndcg@5") for r in REGIMES]
        for metric in ("hit_ratio@1", "ndcg@5"):
            cells += [marked_difference(prior[r][metric], row["popular"][r][metric]) for r in REGIMES]
        cells += [marked_difference(prior[r]["hit_ratio@1"], row["plain"][r]["hit_ratio@1"]) for r in REGIMES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## The models with their priors, paired (HitRatio@1, A - B)", ""]
    lines += ["| A | B | " + " | ".join(REGIMES) + " |", "|---|---|" + "---|" * len(REGIMES)]
    for row in result["rows"]:
        for label, cells in row["others"].items():
            lines.append(f"| {row['config'].label} | {label} | " + " | ".join(cells[r] for r in REGIMES) + " |")
    lines += ["", "## Validation criterion against w", ""]
    lines += ["| model | " + " | ".join(f"{w:g}" for w in weights) + " |", "|---|" + "---|" * len(weights)]
    seen = set()
    for row in result["rows"]:
        if row["config"].valid in seen:
            continue
        seen.add(row["config"].valid)
        cells = [f"**{v:.3f}**" if w == row["weight"] else f"{v:.3f}" for w, v in row["curve"].items()]
        lines.append(f"| `{row['config'].valid}` | " + " | ".join(cells) + " |")
    lines += ["", f"## Test users at every w: HitRatio@1 {REGIMES[0]} minus most popular, paired", ""]
    lines += ["For reading only (how much the margin depends on w); w was chosen on validation runs, above.", ""]
    lines += ["| test run | " + " | ".join(f"{w:g}" for w in weights) + " |", "|---|" + "---|" * len(weights)]
    for row in result["rows"]:
        cells = [f"**{fmt(*d)}**" if w == row["weight"] else fmt(*d) for w, d in row["test_curve"].items()]
        lines.append(f"| `{row['config'].test}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(result: dict) -> dict:
    """The report's figures and settings as JSON, with library versions and the commit."""
    rows = []
    for row in result["rows"]:
        entry = {**asdict(row["config"]), "weight": row["weight"], "validation_criterion": row["curve"]}
        entry["test_hit_ratio@1_minus_popular"] = row["test_curve"]
        for name in ("prior", "plain", "popular"):
            entry[name] = {f"{r}/{m}": interval(row[name][r][m]) for r in REGIMES for m in ("hit_ratio@1", "ndcg@5")}
        rows.append(entry)
    return {"weights": result["weights"], "rows": rows, "provenance": provenance()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS), help="the grid of w")
    parser.add_argument("--out", type=Path, help="write the report here (and its JSON beside it)")
    args = parser.parse_args(argv)
    result = study(weights=tuple(args.weights))
    text = report(result)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(summary(result), indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
