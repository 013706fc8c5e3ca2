"""Every configuration tried to make DMPO beat the most popular movie, side by side on the same test users.

Each lever of the quality study ran in its own results folder (other training negatives, more rows, another base
model, length-normalised rewards, a listwise loss) on the test users and candidates of the main comparison
(`results/quality/tuned`, seeds 0 and 1, and `results/quality/tuned-seed2`, seed 2). This reads each folder's runs,
checks each seed's candidates match the main run's, and writes one table: HitRatio@1 and NDCG@5 in both candidate
regimes, and the paired HitRatio@1 differences against most popular, DPO and the main DMPO K=4 run on the same seeds'
users (500 for seeds 0 and 1, 750 with seed 2). A folder without seeds 0 and 1 is listed as not run yet.

    python -m benchmarks.quality.levers --out benchmarks/results/quality/levers/quality-levers.md
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dmpo_trl.metrics import interval

from .compare import load_runs
from .config import REGIMES
from .seeds import candidates_by_seed
from .summarize import fmt, marked_difference, per_user_metrics


RESULTS = Path(__file__).resolve().parents[1] / "results"
MAIN = ("quality/tuned", "quality/tuned-seed2")


@dataclass
class Lever:
    label: str  # the configuration, in words
    folder: str | tuple[str, ...]  # under results/; several folders hold its seeds
    method: str
    settings: str  # lr x epochs, and whether they were chosen on validation users


LEVERS = [
    Lever("DMPO K=4, uniform negatives, 100 rows (main run)", MAIN, "dmpo-k4", "1e-3 x 2, chosen on validation"),
    Lever("zero-shot SmolLM2-135M-Instruct", MAIN, "zero-shot", "untrained"),
    Lever("DPO (K=1), 100 rows", MAIN, "dpo", "3e-3 x 1, chosen on validation"),
    Lever("SFT, 100 rows", MAIN, "sft", "3e-3 x 1, chosen on validation"),
    Lever("DMPO K=4, popularity-matched training negatives", "quality/tuned-popneg", "dmpo-k4",
          "1e-3 x 2, main run's"),
    Lever("DMPO K=4, popularity-matched training negatives", "quality/popneg-chosen", "dmpo-k4@popularity_matched",
          "1e-3 x 1, chosen on validation"),
    Lever("DMPO K=4, mined negatives (2 of 4 from the policy)", "quality/tuned-mined", "dmpo-k4@model50",
          "1e-3 x 2, chosen on validation"),
    Lever("DMPO K=4, length-normalised rewards (beta 1.3)", "quality/tuned-ln", "dmpo-k4-ln", "1e-3 x 2, main run's"),
    Lever("DMPO K=4, length-normalised rewards (beta 1.3)", "quality/ln-chosen", "dmpo-k4-ln",
          "1e-3 x 1, chosen on validation"),
    Lever("Plackett-Luce K=4 (listwise)", "quality/pl", "pl-k4", "1e-3 x 2, main run's"),
    Lever("Plackett-Luce K=4 (listwise)", "quality/pl-chosen", "pl-k4", "3e-3 x 1, chosen on validation"),
    Lever("DMPO K=4, 600 rows", "quality/rows600", "dmpo-k4", "1e-3 x 1, not chosen on validation"),
    Lever("DMPO K=4, 600 rows", "quality/rows600-chosen", "dmpo-k4", "1e-3 x 2, chosen on validation"),
    Lever("DMPO K=4, 1,000 rows", "quality/rows1000", "dmpo-k4", "1e-3 x 1, not chosen on validation"),
    Lever("DMPO K=4, 1,000 rows", "quality/rows1000-chosen", "dmpo-k4", "1e-3 x 2, chosen on validation"),
    Lever("Gemma 3 270M zero-shot", "quality/gemma", "zero-shot", "untrained"),
    Lever("Gemma 3 270M, DMPO K=4, 100 rows", "quality/gemma-dmpo", "dmpo-k4", "1e-3 x 2, SmolLM2's"),
    Lever("Gemma 3 270M, DMPO K=4, 100 rows", "quality/gemma-chosen", "dmpo-k4", "3e-4 x 1, chosen on validation"),
]  # fmt: skip
REFERENCES = [("most popular", "popular"), ("DPO", "dpo"), ("DMPO K=4 main", "dmpo-k4")]


def as_folders(folder: str | tuple[str, ...]) -> tuple[str, ...]:
    return (folder,) if isinstance(folder, str) else tuple(folder)


def load_method(root: Path, folders: tuple[str, ...], method: str, main_candidates: dict[int, dict]):
    """The finished runs of `method` over `folders` (seed order) and their candidates by seed, or None when there are
    none. Refuses a seed whose users or candidates differ from the main folders'."""
    runs, candidates = [], {}
    for folder in folders:
        try:
            found, found_candidates = load_runs(f"{root / folder}:{method}")
        except SystemExit:
            continue
        for run in found:
            seed = run["seed"]
            if found_candidates[seed] != main_candidates.get(seed):
                raise SystemExit(f"quality_levers: {folder} seed {seed}: other users or candidates than the main run")
            runs.append(run)
            candidates[seed] = found_candidates[seed]
    return (sorted(runs, key=lambda run: run["seed"]), candidates) if runs else None


def per_user(runs: list[dict], candidates: dict[int, dict], seeds: list[int]) -> dict[str, dict[str, object]]:
    """Per-user metrics by regime (summed log-likelihood) of the runs of `seeds`, pooled in seed order."""
    chosen = [run for run in runs if run["seed"] in seeds]
    return {regime: per_user_metrics(chosen, candidates, regime, "sum") for regime in REGIMES}


def table(
    root: Path = RESULTS,
    main: str | tuple[str, ...] = MAIN,
    levers: list[Lever] = LEVERS,
    references: list[tuple[str, str]] = REFERENCES,
) -> str:
    """The markdown table of `levers` against `references` (label, method of the `main` folders) under `root`. Each
    lever is paired on the seeds its folder holds; it needs every seed of the first main folder."""
    mains = as_folders(main)
    main_candidates = candidates_by_seed([root / folder for folder in mains])
    first_seeds = set(candidates_by_seed([root / mains[0]]))
    reference_runs = {name: load_method(root, mains, method, main_candidates) for name, method in references}
    reference_metrics: dict[tuple[int, ...], dict[str, dict]] = {}  # by the seeds a lever holds
    if any(found is None for found in reference_runs.values()):
        raise SystemExit(f"quality_levers: {root / mains[0]} lacks a run of {[method for _, method in references]}")
    head = ["configuration", "lr x epochs", "folder", "seeds (users)"]
    head += [f"HR@1 {r}" for r in REGIMES] + [f"NDCG@5 {r}" for r in REGIMES]
    head += [f"HR@1 {r} - {name}" for name in reference_runs for r in REGIMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    missing = []
    for lever in levers:
        folders = as_folders(lever.folder)
        found = load_method(root, folders, lever.method, main_candidates)
        if found is None or not first_seeds <= set(found[1]):
            missing.append(lever)
            continue
        seeds = sorted(found[1])
        metrics = per_user(*found, seeds)
        users = len(metrics[REGIMES[0]]["hit_ratio@1"])
        where = " + ".join(folders)
        cells = [lever.label, lever.settings, f"`{where}:{lever.method}`", f"{', '.join(map(str, seeds))} ({users})"]
        cells += [fmt(*interval(metrics[r]["hit_ratio@1"])) for r in REGIMES]
        cells += [fmt(*interval(metrics[r]["ndcg@5"])) for r in REGIMES]
        if tuple(seeds) not in reference_metrics:
            lacking = [name for name, (_, candidates) in reference_runs.items() if not set(seeds) <= set(candidates)]
            if lacking:
                raise SystemExit(f"quality_levers: the main run has no {', '.join(lacking)} run of seeds {seeds}")
            reference_metrics[tuple(seeds)] = {
                name: per_user(runs, candidates, seeds) for name, (runs, candidates) in reference_runs.items()
            }
        for name, reference in reference_metrics[tuple(seeds)].items():
            same = folders == mains and dict(references)[name] == lever.method
            for r in REGIMES:
                cells.append("" if same else marked_difference(metrics[r]["hit_ratio@1"], reference[r]["hit_ratio@1"]))
        lines.append("| " + " | ".join(cells) + " |")
    out = [
        "# Levers tried to make DMPO beat the most popular movie",
        "",
        f"The test users and candidates of {' and '.join(f'`{m}`' for m in mains)} (each seed its own split and 250 "
        "test users); each row on the seeds its folder holds, paired against the references on those same users. "
        "Ranked by summed log-likelihood; 95% bootstrap intervals over the pooled users, paired (same users and "
        "candidates) for the differences, marked win / loss when they exclude 0. SmolLM2-135M-Instruct + LoRA r=16 "
        "unless Gemma is named. Each folder's notes.md gives the command that made it; each run's JSON records its "
        "settings, library versions and commit.",
        "",
        *lines,
        "",
    ]
    if missing:
        out += [
            "Not run yet: "
            + "; ".join(f"{m.label} (`{' + '.join(as_folders(m.folder))}:{m.method}`)" for m in missing)
            + ".",
            "",
        ]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS)
    out += [f"Made by `python -m benchmarks.quality.levers` at commit {commit.stdout.strip() or 'unknown'}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table here as well as printing it")
    args = parser.parse_args(argv)
    text = table()
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
