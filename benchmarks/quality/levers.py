"""Every configuration tried to make DMPO beat the most popular movie, side by side on the same 500 test users.

Each lever of the quality study ran in its own results folder (other training negatives, more rows, another base
model, length-normalised rewards, a listwise loss) on the test users and candidates of `results/quality/tuned`. This
reads each folder's run, checks the candidates match the main run's, and writes one table: HitRatio@1 and NDCG@5 in
both candidate regimes, and the paired HitRatio@1 differences against most popular, DPO and the main DMPO K=4 run.
A folder not yet run is listed as missing.

    python -m benchmarks.quality.levers --out benchmarks/results/quality/levers/quality-levers.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dmpo_trl.metrics import interval

from .compare import load_runs
from .config import REGIMES
from .summarize import fmt, marked_difference, per_user_metrics


RESULTS = Path(__file__).resolve().parents[1] / "results"
MAIN = "quality/tuned"


@dataclass
class Lever:
    label: str  # the configuration, in words
    folder: str  # under results/
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


def per_user(root: Path, main: str, folder: str, method: str) -> dict[str, dict[str, object]] | None:
    """Per-user metrics by regime of `folder:method` (summed log-likelihood), or None when it has no finished run of
    every seed the main folder has. Refuses a folder whose candidates differ from the main folder's."""
    main_candidates = {
        int(path.parent.name[4:]): json.loads(path.read_text())
        for path in (root / main).glob("runs/seed*/candidates.json")
    }
    try:
        runs, candidates = load_runs(f"{root / folder}:{method}")
    except SystemExit:
        return None
    if sorted(candidates) != sorted(main_candidates):
        return None
    for seed, rows in candidates.items():
        if rows != main_candidates[seed]:
            raise SystemExit(f"quality_levers: {folder} seed {seed}: other users or candidates than {main}")
    return {regime: per_user_metrics(runs, candidates, regime, "sum") for regime in REGIMES}


def table(
    root: Path = RESULTS,
    main: str = MAIN,
    levers: list[Lever] = LEVERS,
    references: list[tuple[str, str]] = REFERENCES,
) -> str:
    """The markdown table of `levers` against `references` (label, method of the `main` folder) under `root`."""
    reference_runs = {name: per_user(root, main, main, method) for name, method in references}
    if any(found is None for found in reference_runs.values()):
        raise SystemExit(f"quality_levers: {root / main} lacks a run of {[method for _, method in references]}")
    users = len(next(iter(reference_runs.values()))[REGIMES[0]]["hit_ratio@1"])
    head = ["configuration", "lr x epochs", "folder"]
    head += [f"HR@1 {r}" for r in REGIMES] + [f"NDCG@5 {r}" for r in REGIMES]
    head += [f"HR@1 {r} - {name}" for name in reference_runs for r in REGIMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    missing = []
    for lever in levers:
        metrics = per_user(root, main, lever.folder, lever.method)
        if metrics is None:
            missing.append(lever)
            continue
        cells = [lever.label, lever.settings, f"`{lever.folder}:{lever.method}`"]
        cells += [fmt(*interval(metrics[r]["hit_ratio@1"])) for r in REGIMES]
        cells += [fmt(*interval(metrics[r]["ndcg@5"])) for r in REGIMES]
        for name, reference in reference_runs.items():
            for r in REGIMES:
                same = lever.folder == main and dict(references)[name] == lever.method
                cells.append("" if same else marked_difference(metrics[r]["hit_ratio@1"], reference[r]["hit_ratio@1"]))
        lines.append("| " + " | ".join(cells) + " |")
    out = [
        "# Levers tried to make DMPO beat the most popular movie",
        "",
        f"{users} test users, the candidates of `{main}`; ranked by summed log-likelihood; 95% "
        "bootstrap intervals, paired (same users and candidates) for the differences, marked win / loss when they "
        "exclude 0. SmolLM2-135M-Instruct + LoRA r=16 unless Gemma is named. Each folder's notes.md (or the README) "
        "gives the command that made it; each run's JSON records its settings, library versions and commit.",
        "",
        *lines,
        "",
    ]
    if missing:
        out += ["Not run yet: " + "; ".join(f"{m.label} (`{m.folder}:{m.method}`)" for m in missing) + ".", ""]
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
