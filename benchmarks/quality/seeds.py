"""The main comparison per training seed: each method's figures seed by seed, their mean and spread, and the rows of
all seeds pooled.

The main folder (`--main`, default `benchmarks/results/quality/tuned`) holds seeds 0 and 1; a further seed run with
the same command and `--seeds 2` into its own folder (`--more`, default `benchmarks/results/quality/tuned-seed2`)
adds its own split (100 other training users, 250 other test users) and training seed. Nothing is retrained or
rescored: per seed this reads each method's saved scores (`compare.load_runs`), and reports HitRatio@1 and NDCG@5
(summed log-likelihood) per seed, the mean over seeds with the spread (lowest and highest seed), the pooled mean over
every seed's test users with its 95% bootstrap interval, and the paired differences DMPO K=4 minus each other method
over the pooled users (`dmpo_trl.metrics.paired_difference`).

    python -m benchmarks.quality.seeds   # writes seeds.md and seeds.json into --more
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dmpo_trl.metrics import interval, paired_difference
from dmpo_trl.provenance import provenance

from .compare import load_runs
from .config import REGIMES
from .summarize import fmt, per_user_metrics


METHODS = ("random", "popular", "zero-shot", "sft", "dpo", "dmpo-k4")
REFERENCE = "dmpo-k4"
METRICS = {"hit_ratio@1": "HR@1", "ndcg@5": "NDCG@5"}


def per_seed(folders: list[Path], method: str) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """{seed: {regime: {metric: per-user values}}} of `method` over the seeds the folders hold (a seed in two
    folders is refused)."""
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for folder in folders:
        runs, candidates = load_runs(f"{folder}:{method}")
        for run in runs:
            seed = run["seed"]
            if seed in out:
                raise SystemExit(f"quality.seeds: seed {seed} of {method!r} is in more than one folder")
            out[seed] = {r: per_user_metrics([run], candidates, r, "sum") for r in REGIMES}
    return out


def summary(folders: list[Path], methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Per method and regime: per-seed means, their mean and range, the pooled interval; the paired differences."""
    values = {method: per_seed(folders, method) for method in methods}
    seeds = sorted(values[methods[0]])
    for method, by_seed in values.items():
        if sorted(by_seed) != seeds:
            raise SystemExit(f"quality.seeds: {method!r} ran seeds {sorted(by_seed)}, {methods[0]!r} ran {seeds}")
    rows: dict[str, Any] = {}
    for method, by_seed in values.items():
        rows[method] = {}
        for regime in REGIMES:
            rows[method][regime] = {}
            for metric in METRICS:
                means = [float(np.mean(by_seed[s][regime][metric])) for s in seeds]
                pooled = np.concatenate([by_seed[s][regime][metric] for s in seeds])
                rows[method][regime][metric] = {
                    "per_seed": dict(zip(seeds, means)),
                    "mean_of_seeds": float(np.mean(means)),
                    "lowest": min(means),
                    "highest": max(means),
                    "pooled": interval(pooled),
                    "users": int(pooled.size),
                }
    differences: dict[str, Any] = {}
    reference = values[REFERENCE]
    for method in methods:
        if method == REFERENCE:
            continue
        differences[method] = {}
        for regime in REGIMES:
            differences[method][regime] = {}
            for metric in METRICS:
                a = np.concatenate([reference[s][regime][metric] for s in seeds])
                b = np.concatenate([values[method][s][regime][metric] for s in seeds])
                per_seed_diff = {s: paired_difference(reference[s][regime][metric], values[method][s][regime][metric])
                                 for s in seeds}  # fmt: skip
                differences[method][regime][metric] = {"pooled": paired_difference(a, b), "per_seed": per_seed_diff}
    return {"seeds": seeds, "folders": [str(f) for f in folders], "rows": rows, "differences": differences}


def markdown(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        "# The main comparison per training seed",
        "",
        f"Seeds {seeds} from {', '.join(f'`{f}`' for f in result['folders'])}: each seed has its own split (100 "
        "training users, 250 test users) and training seed; every method at the main comparison's settings. Summed "
        "log-likelihood. Per seed: the mean over that seed's test users; mean of seeds with the lowest and highest "
        "seed; pooled: all seeds' test users, 95% bootstrap interval.",
    ]
    for regime in REGIMES:
        for metric, label in METRICS.items():
            lines += ["", f"## {label}, candidates: {regime}", ""]
            head = ["method", *[f"seed {s}" for s in seeds], "mean of seeds [lowest, highest]", "pooled [95% CI]"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for method, by_regime in result["rows"].items():
                row = by_regime[regime][metric]
                cells = [f"{row['per_seed'][s]:.3f}" for s in seeds]
                spread = f"{row['mean_of_seeds']:.3f} [{row['lowest']:.3f}, {row['highest']:.3f}]"
                lines.append("| " + " | ".join([method, *cells, spread, fmt(*row["pooled"])]) + " |")
    lines += ["", f"## Paired differences, {REFERENCE} minus each method", ""]
    head = ["method", "regime", "metric", *[f"seed {s}" for s in seeds], "pooled"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, by_regime in result["differences"].items():
        for regime in REGIMES:
            for metric, label in METRICS.items():
                diff = by_regime[regime][metric]
                cells = [fmt(*diff["per_seed"][s]) for s in seeds]
                lines.append("| " + " | ".join([method, regime, label, *cells, fmt(*diff["pooled"])]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--main", type=Path, default=Path("benchmarks/results/quality/tuned"))
    parser.add_argument("--more", type=Path, default=Path("benchmarks/results/quality/tuned-seed2"))
    args = parser.parse_args(argv)
    result = summary([args.main, args.more])
    text = markdown(result)
    (args.more / "seeds.md").write_text(text)
    record = {**result, "provenance": provenance()}
    (args.more / "seeds.json").write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    print(text)
    return text


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


if __name__ == "__main__":
    main()
