"""Paired differences between two saved quality-study runs, also across results folders.

`quality.py` compares the methods of one `--results_dir`; a lever studied in its own folder (600 training rows
instead of 100, say) ranks the same test users and candidates as the main run, so its per-user metrics pair with the
main run's. This reads `A` and `B` as `results_dir:method`, checks that every seed's candidates are identical, and
prints the mean per-user difference A - B of HitRatio@1 and NDCG@5 with a 95% paired bootstrap interval, for both
candidate regimes and both scorings (summed and per-token log-likelihood; baselines have one score).

    python -m benchmarks.quality.compare benchmarks/results/quality/rows600:dmpo-k4 \
        benchmarks/results/quality/tuned:dmpo-k4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dmpo_trl.metrics import paired_difference

from .config import REGIMES
from .summarize import fmt, per_user_metrics


def load_runs(spec: str) -> tuple[list[dict], dict[int, dict]]:
    """The runs (seed order) and candidates by seed of `results_dir:method`."""
    folder, _, method = spec.rpartition(":")
    if not folder or not method:
        raise SystemExit(f"quality_compare: {spec!r}: use results_dir:method")
    runs, candidates = [], {}
    for seed_dir in sorted(Path(folder, "runs").glob("seed*"), key=lambda p: int(p.name[4:])):
        path = seed_dir / f"{method}.json"
        if path.is_file():
            run = json.loads(path.read_text())
            runs.append(run)
            candidates[run["seed"]] = json.loads((seed_dir / "candidates.json").read_text())
    if not runs:
        raise SystemExit(f"quality_compare: no runs of {method!r} under {folder}/runs/seed*/")
    return runs, candidates


def compare(a: str, b: str) -> list[dict]:
    """One row per (regime, scoring, metric): the paired difference A - B over the seeds both ran."""
    runs_a, candidates_a = load_runs(a)
    runs_b, candidates_b = load_runs(b)
    seeds = sorted(set(candidates_a) & set(candidates_b))
    if not seeds:
        raise SystemExit(f"quality_compare: {a} and {b} share no seed")
    for seed in seeds:
        if candidates_a[seed] != candidates_b[seed]:
            raise SystemExit(f"quality_compare: seed {seed}: {a} and {b} ranked other users or candidates")
    runs_a = [r for r in runs_a if r["seed"] in seeds]
    runs_b = [r for r in runs_b if r["seed"] in seeds]
    candidates = {seed: candidates_a[seed] for seed in seeds}
    both_scorings = all("score" not in r["scores"][REGIMES[0]] for r in runs_a + runs_b)
    rows = []
    for regime in REGIMES:
        for scoring in ("sum", "mean") if both_scorings else ("sum",):
            metrics_a = per_user_metrics(runs_a, candidates, regime, scoring)
            metrics_b = per_user_metrics(runs_b, candidates, regime, scoring)
            for metric in ("hit_ratio@1", "ndcg@5"):
                mean, low, high = paired_difference(metrics_a[metric], metrics_b[metric])
                verdict = "win" if low > 0 else "loss" if high < 0 else "no clear difference"
                rows.append(
                    dict(regime=regime, scoring=scoring, metric=metric, users=len(metrics_a[metric]), seeds=seeds,
                         diff=mean, ci95=[low, high], verdict=verdict)
                )  # fmt: skip
    return rows


def markdown(a: str, b: str, rows: list[dict]) -> str:
    lines = [
        f"A = `{a}`, B = `{b}`: seeds {rows[0]['seeds']}, {rows[0]['users']} users, same candidates.",
        "",
        "| regime | scoring | metric | A - B [95% paired CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["regime"], row["scoring"], row["metric"], fmt(row["diff"], *row["ci95"]), row["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="results_dir:method")
    parser.add_argument("b", help="results_dir:method (the same test users and candidates)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = compare(args.a, args.b)
    print(json.dumps(rows) if args.json else markdown(args.a, args.b, rows), end="\n" if args.json else "")
    return rows


if __name__ == "__main__":
    main()
