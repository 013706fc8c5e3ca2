"""Choose each method's learning rate and epochs on validation users, for `quality.py --method_settings`.

Reads validation runs of `benchmarks/quality/` (`--num_valid_users N --evaluate_on valid`, one `--results_dir` per
learning rate / epochs setting), tabulates every (method, setting) and picks, per method, the setting with the best
validation NDCG@5 averaged over the two candidate regimes (summed log-likelihood). The rule was fixed before the
runs: NDCG@5 is less coarse than HitRatio@1 on a few dozen users, and averaging the regimes rewards ranking that
popularity alone does not explain. Test users are never read.

    python -m benchmarks.quality.selection benchmarks/results/quality/lr/* \
        --out benchmarks/results/quality/lr/selection.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dmpo_trl.metrics import interval

from .config import REGIMES, QualityConfig
from .summarize import fmt, per_user_metrics


SELECTION_METRIC = "validation NDCG@5, mean of the uniform and popularity-matched regimes"


def validation_cells(dirs: list[Path]) -> list[dict]:
    """One cell per (results dir, seed, method): its setting and per-regime validation metrics."""
    cells = []
    for folder in dirs:
        for seed_dir in sorted((folder / "runs").glob("seed*")):
            candidates = {int(seed_dir.name[4:]): json.loads((seed_dir / "candidates.json").read_text())}
            for path in sorted(seed_dir.glob("*.json")):
                if path.name == "candidates.json":
                    continue
                run = json.loads(path.read_text())
                cfg = QualityConfig(
                    **{k: v for k, v in run["config"].items() if k in QualityConfig.__dataclass_fields__}
                )
                if cfg.evaluate_on != "valid":
                    raise ValueError(f"{path} ranks test users: selection reads validation runs only")
                metrics = {regime: per_user_metrics([run], candidates, regime, "sum") for regime in REGIMES}
                trained = "train" in run and run["train"]
                lr, epochs = cfg.training_settings(run["method"]) if trained else (None, None)
                cells.append(
                    {
                        "method": run["method"],
                        "seed": run["seed"],
                        "learning_rate": lr,
                        "num_train_epochs": epochs,
                        "users": len(candidates[run["seed"]][REGIMES[0]]),
                        "metrics": metrics,
                        "criterion": float(np.mean([metrics[r]["ndcg@5"].mean() for r in REGIMES])),
                    }
                )
    return cells


def choose(cells: list[dict]) -> dict[str, dict]:
    """Per trained method, the cell with the best criterion (first seen wins a tie)."""
    best: dict[str, dict] = {}
    for cell in cells:
        if cell["learning_rate"] is None:
            continue
        if cell["method"] not in best or cell["criterion"] > best[cell["method"]]["criterion"]:
            best[cell["method"]] = cell
    return best


def markdown(cells: list[dict], best: dict[str, dict]) -> str:
    lines = [
        "# Learning rate and epochs chosen on validation users",
        "",
        f"Selection rule (fixed before the runs): {SELECTION_METRIC}, summed log-likelihood. 95% bootstrap intervals.",
        "",
        "| method | lr | epochs | users | HR@1 uniform | HR@1 pop-matched | NDCG@5 uniform | NDCG@5 pop-matched | "
        "criterion | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(cells, key=lambda c: (c["method"], c["learning_rate"] or 0, c["num_train_epochs"] or 0))
    for cell in order:
        m = cell["metrics"]
        chosen = cell["learning_rate"] is not None and best.get(cell["method"]) is cell
        lines.append(
            "| "
            + " | ".join(
                [
                    cell["method"],
                    "-" if cell["learning_rate"] is None else f"{cell['learning_rate']:g}",
                    "-" if cell["num_train_epochs"] is None else f"{cell['num_train_epochs']:g}",
                    str(cell["users"]),
                    fmt(*interval(m["uniform"]["hit_ratio@1"])),
                    fmt(*interval(m["popularity_matched"]["hit_ratio@1"])),
                    fmt(*interval(m["uniform"]["ndcg@5"])),
                    fmt(*interval(m["popularity_matched"]["ndcg@5"])),
                    f"{cell['criterion']:.3f}",
                    "**yes**" if chosen else "",
                ]
            )
            + " |"
        )
    settings = " ".join(f"{name}:{c['learning_rate']:g}:{c['num_train_epochs']:g}" for name, c in sorted(best.items()))
    lines += ["", f"Chosen: `--method_settings {settings}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="results dirs of validation runs")
    parser.add_argument("--out", type=Path, help="write the markdown here")
    args = parser.parse_args(argv)
    cells = validation_cells([d for d in args.dirs if (d / "runs").is_dir()])
    # baselines repeat in every dir: keep one of each
    seen, unique = set(), []
    for cell in cells:
        key = (cell["method"], cell["seed"], cell["learning_rate"], cell["num_train_epochs"])
        if key not in seen:
            seen.add(key)
            unique.append(cell)
    text = markdown(unique, choose(unique))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
