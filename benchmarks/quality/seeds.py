"""A study's rows per training seed: each method's figures seed by seed, their mean and spread, and the rows of all
seeds pooled.

The folders (default: the main comparison, `benchmarks/results/quality/tuned` with seeds 0 and 1 and
`benchmarks/results/quality/tuned-seed2` with seed 2, its own split: 100 other training users, 250 other test users)
hold one study's seeds, each seed in one folder. Nothing is retrained or rescored: per seed this reads each method's
saved scores (`compare.load_runs`), and reports HitRatio@1 and NDCG@5 (summed log-likelihood) per seed, the mean over
seeds with the spread (lowest and highest seed), the pooled mean over every seed's test users with its 95% bootstrap
interval, and the paired differences of the reference method (DMPO K=4) minus each other method over the pooled
users (`dmpo_trl.metrics.paired_difference`). More rows can join, on the same users and candidates, and `--pair A B`
adds any further paired difference:

- `--prior W`: the reference method's scores plus the popularity prior at weight W (`quality.prior.with_prior`, the
  counts of each folder's `popular` run), W chosen once on validation users (`benchmarks/results/quality/prior`).
- `--against DIR [DIR ...] --against_methods M [M ...]`: the same methods run at another setting on the same users
  and candidates (the 5-title prompt against the 20-title one, say), each paired with its run here.
- `--classic DIR [DIR ...]`: the models of `benchmarks.classic_baselines` run on the same seeds (`DIR`s holding
  every seed's `runs/seed<S>/`; SASRec, GRU4Rec, BPR, and most popular under the few-shot protocol), each at the
  setting the first `DIR`'s report chose on validation users; `--classic_size 200` (or `all`) takes the few-shot
  curve's runs with that many training users instead of 100.

    python -m benchmarks.quality.seeds   # the main comparison: writes seeds.md and seeds.json into the last folder
    python -m benchmarks.quality.seeds benchmarks/results/quality/history20 --methods zero-shot dmpo-k4 \
        --title "The LLM shown 20 history items per training seed"
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmpo_trl.metrics import interval, paired_difference
from dmpo_trl.provenance import provenance

from .compare import load_runs
from .config import REGIMES
from .prior import with_prior
from .summarize import fmt, per_user_metrics


METHODS = ("random", "popular", "zero-shot", "sft", "dpo", "dmpo-k4")
REFERENCE = "dmpo-k4"
METRICS = {"hit_ratio@1": "HR@1", "ndcg@5": "NDCG@5"}
FOLDERS = (Path("benchmarks/results/quality/tuned"), Path("benchmarks/results/quality/tuned-seed2"))
TITLE = "The main comparison per training seed"

PerSeed = dict[int, dict[str, dict[str, np.ndarray]]]
"""{seed: {regime: {metric: per-user values}}}"""


def per_seed(folders: list[Path], method: str, prior: float | None = None) -> PerSeed:
    """Per-user metrics by seed of `method` over the seeds the folders hold (a seed in two folders is refused),
    with the popularity prior at weight `prior` if given."""
    out: PerSeed = {}
    for folder in folders:
        runs, candidates = load_runs(f"{folder}:{method}")
        if prior is not None:
            runs = with_prior(runs, load_runs(f"{folder}:popular")[0], candidates, prior)
        for run in runs:
            seed = run["seed"]
            if seed in out:
                raise SystemExit(f"quality.seeds: seed {seed} of {method!r} is in more than one folder")
            out[seed] = {r: per_user_metrics([run], candidates, r, "sum") for r in REGIMES}
    return out


def classic_choices(classic_dir: Path, size: str = "100") -> dict[str, Any]:
    """{model: setting} the folder's report chose on validation users: `classic.json` for the study's own 100
    training users, `sample_efficiency.json` for the few-shot curve's other sizes (`200`, `all`)."""
    if size == "100":
        selection = json.loads((classic_dir / "classic.json").read_text())["selection"]
        return {name: entry["chosen"] for name, entry in selection.items()}
    models = json.loads((classic_dir / "sample_efficiency.json").read_text())["sizes"][size]["models"]
    return {name: entry["setting"] for name, entry in models.items()}


def classic_per_seed(folders: list[Path], classic_dirs: list[Path], name: str, size: str = "100") -> PerSeed:
    """Per-user metrics by seed of classic model `name` at the setting the first classic folder's report chose
    (`classic_choices`), on the candidates of the quality folders' seeds; `size` other than 100 reads the
    few-shot curve's runs with that many training users (`runs/n<size>/`)."""
    chosen = classic_choices(classic_dirs[0], size)[name]
    candidates = candidates_by_seed(folders)
    pattern = f"seed*/{name}__*.json" if size == "100" else f"n{size}/seed*/{name}__*.json"
    out: PerSeed = {}
    for classic_dir in classic_dirs:
        for path in sorted(Path(classic_dir, "runs").glob(pattern)):
            result = json.loads(path.read_text())
            if result["setting"] != chosen:
                continue
            seed = result["seed"]
            if seed not in candidates or seed in out:
                raise SystemExit(f"quality.seeds: {path}: seed {seed} is not in the quality folders, or twice")
            run = {"seed": seed, "scores": {r: {"score": result["test"][r]["score"]} for r in REGIMES}}
            out[seed] = {r: per_user_metrics([run], candidates, r, "sum") for r in REGIMES}
    return out


def candidates_by_seed(folders: list[Path]) -> dict[int, Any]:
    """{seed: the seed's saved candidate lists} over the folders."""
    return {
        int(path.parent.name[4:]): json.loads(path.read_text())
        for folder in folders
        for path in Path(folder, "runs").glob("seed*/candidates.json")
    }


def same_candidates(folders: list[Path], others: list[Path]) -> None:
    """Refuse `others` unless they hold the folders' seeds with the very same users and candidate lists."""
    mine, theirs = candidates_by_seed(folders), candidates_by_seed(others)
    for seed, candidates in mine.items():
        if theirs.get(seed) != candidates:
            raise SystemExit(f"quality.seeds: seed {seed}: {others} do not hold the users and candidates of {folders}")


def summary(
    folders: list[Path],
    methods: tuple[str, ...] = METHODS,
    reference: str = REFERENCE,
    extra: dict[str, PerSeed] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Per method and regime: per-seed means, their mean and range, the pooled interval; the paired differences of
    `reference` minus each other method, and of each `(a, b)` in `pairs`. `extra` adds rows computed elsewhere
    (`classic_per_seed`, a prior)."""
    values = {method: per_seed(folders, method) for method in methods} | (extra or {})
    methods = tuple(values)
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
    differences = {method: difference(values, reference, method, seeds) for method in methods if method != reference}
    return {
        "seeds": seeds,
        "folders": [str(f) for f in folders],
        "reference": reference,
        "rows": rows,
        "differences": differences,
        "pairs": [{"a": a, "b": b, "difference": difference(values, a, b, seeds)} for a, b in pairs],
    }


def difference(values: dict[str, PerSeed], a: str, b: str, seeds: list[int]) -> dict[str, Any]:
    """`a` minus `b` per regime and metric: per seed and pooled over every seed's users, paired intervals."""
    out: dict[str, Any] = {}
    for regime in REGIMES:
        out[regime] = {}
        for metric in METRICS:
            pooled_a = np.concatenate([values[a][s][regime][metric] for s in seeds])
            pooled_b = np.concatenate([values[b][s][regime][metric] for s in seeds])
            per_seed_diff = {
                s: paired_difference(values[a][s][regime][metric], values[b][s][regime][metric]) for s in seeds
            }
            out[regime][metric] = {"pooled": paired_difference(pooled_a, pooled_b), "per_seed": per_seed_diff}
    return out


def markdown(result: dict[str, Any], title: str = TITLE, notes: str = "") -> str:
    seeds = result["seeds"]
    lines = [
        f"# {title}",
        "",
        f"Seeds {seeds} from {', '.join(f'`{f}`' for f in result['folders'])}: each seed has its own split (100 "
        "training users, 250 test users) and training seed; every method at the study's settings. Summed "
        "log-likelihood. Per seed: the mean over that seed's test users; mean of seeds with the lowest and highest "
        "seed; pooled: all seeds' test users, 95% bootstrap interval." + (f" {notes}" if notes else ""),
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
    lines += ["", f"## Paired differences, {result['reference']} minus each method", ""]
    lines += difference_table(result["differences"], seeds)
    if result["pairs"]:
        lines += ["", "## Other paired differences", ""]
        lines += difference_table({f"{p['a']} minus {p['b']}": p["difference"] for p in result["pairs"]}, seeds)
    return "\n".join(lines) + "\n"


def difference_table(by_label: dict[str, dict[str, Any]], seeds: list[int]) -> list[str]:
    head = ["method", "regime", "metric", *[f"seed {s}" for s in seeds], "pooled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, by_regime in by_label.items():
        for regime in REGIMES:
            for metric, name in METRICS.items():
                diff = by_regime[regime][metric]
                cells = [fmt(*diff["per_seed"][s]) for s in seeds]
                lines.append("| " + " | ".join([label, regime, name, *cells, fmt(*diff["pooled"])]) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="*", default=list(FOLDERS), help="quality results folders")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--reference", default=REFERENCE, help="the method the paired differences subtract from")
    parser.add_argument("--prior", type=float, default=None, help="add the reference with the popularity prior at W")
    parser.add_argument("--classic", type=Path, nargs="+", default=[], help="classic_baselines folders to add")
    parser.add_argument("--classic_size", default="100", help="the few-shot curve's training users: 100, 200, all")
    parser.add_argument("--against", type=Path, nargs="+", default=[], help="folders of another setting, same users")
    parser.add_argument("--against_methods", nargs="+", default=[], help="methods paired with their --against runs")
    parser.add_argument("--against_label", default="other", help="what the --against rows are called")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"), help="also A minus B")
    parser.add_argument("--title", default=TITLE)
    parser.add_argument("--out", type=Path, default=None, help="where seeds.md and seeds.json go (the last folder)")
    parser.add_argument("--name", default="seeds", help="the files' name: NAME.md and NAME.json")
    args = parser.parse_args(argv)
    classic = classic_choices(args.classic[0], args.classic_size) if args.classic else {}
    if set(classic) & set(args.methods):
        raise SystemExit(f"quality.seeds: {sorted(set(classic) & set(args.methods))} are in --methods and --classic")
    extra = {name: classic_per_seed(args.folders, args.classic, name, args.classic_size) for name in classic}
    notes, pairs = [], []
    if args.prior is not None:
        label = f"{args.reference} + prior (w {args.prior:g})"
        extra[label] = per_seed(args.folders, args.reference, args.prior)
        notes.append(f"The prior row adds {args.prior:g} x log(1 + count) to {args.reference}'s scores.")
        pairs = [(label, "popular")] if "popular" in args.methods else []
    if args.against:
        same_candidates(args.folders, args.against)
        for method in args.against_methods:
            label = f"{method} ({args.against_label})"
            extra[label] = per_seed(args.against, method)
            pairs.append((method, label))
        notes.append(
            f"Rows marked ({args.against_label}) are the same methods in {', '.join(f'`{d}`' for d in args.against)}, "
            "on the same users and candidates, paired below."
        )
    if args.classic:
        trained_on = "" if args.classic_size == "100" else f" trained on N = {args.classic_size} users,"
        notes.append(
            f"The classic rows come from {', '.join(f'`{d}`' for d in args.classic)},{trained_on} at the settings "
            "the first one's validation users chose."
        )
    pairs += [tuple(pair) for pair in args.pair]
    result = summary(args.folders, tuple(args.methods), args.reference, extra, pairs)
    text = markdown(result, args.title, " ".join(notes))
    out = args.out or args.folders[-1]
    (out / f"{args.name}.md").write_text(text)
    record = {**result, "settings": {k: str(v) for k, v in vars(args).items()}, "provenance": provenance()}
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    print(text)
    return text


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


if __name__ == "__main__":
    main()
