"""The few-shot curve on three training seeds: one table and plot from the per-size `quality.seeds` reports.

`python -m benchmarks.quality.seeds ... --classic DIR DIR [--classic_size N]` puts the classic models trained on
N = 100, 200 or all training users (`benchmarks.few_shot_curve`) beside DMPO K=4 (N = 100) seed by seed, one report
per N (`seeds.md`, `seeds-n200.md`, `seeds-nall.md`). This script reads their JSON and writes the curve:
`sample_efficiency_seeds.md` / `.json` / `.png` in the same folder, each model's mean of seeds with the lowest and
highest seed at each N, and DMPO K=4 minus each over every seed's test users pooled (95% paired bootstrap interval).
Nothing is rerun.

    python -m benchmarks.few_shot_seeds --dir benchmarks/results/classic/few-shot-seed2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.quality import fmt
from dmpo_trl.provenance import provenance


SIZES = {"100": "seeds", "200": "seeds-n200", "all": "seeds-nall"}
MODELS = ("sasrec", "gru4rec", "bpr", "popular")
REFERENCE = "dmpo-k4"
REGIMES = ("uniform", "popularity_matched")
METRICS = {"hit_ratio@1": "HR@1", "ndcg@5": "NDCG@5"}


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """{size: that size's `quality.seeds` JSON} for the sizes the folder holds; refused unless they share seeds."""
    found = {size: folder / f"{stem}.json" for size, stem in SIZES.items()}
    reports = {size: json.loads(path.read_text()) for size, path in found.items() if path.is_file()}
    if "100" not in reports:
        raise SystemExit(f"few_shot_seeds: {found['100']} is missing (the N = 100 report)")
    seeds = {size: report["seeds"] for size, report in reports.items()}
    if len({tuple(s) for s in seeds.values()}) != 1:
        raise SystemExit(f"few_shot_seeds: the reports hold different seeds: {seeds}")
    return reports


def curve(reports: dict[str, dict[str, Any]], users_at_all: int | None = None) -> dict[str, Any]:
    """{"seeds", "reference", "models": {model: {size: {"row", "difference"}}}} from the per-size reports."""
    first = reports["100"]
    out: dict[str, Any] = {"seeds": first["seeds"], "reference": first["rows"][REFERENCE], "models": {}}
    out["users_at_all"] = users_at_all
    for name in MODELS:
        out["models"][name] = {
            size: {"row": report["rows"][name], "difference": report["differences"][name]}
            for size, report in reports.items()
            if name in report["rows"]
        }
    return out


def size_label(size: str, users_at_all: int | None) -> str:
    return f"all ({users_at_all})" if size == "all" and users_at_all else size


def markdown(result: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in result["seeds"])
    users = result["reference"][REGIMES[0]]["hit_ratio@1"]["users"]
    lines = [
        f"# The few-shot curve on training seeds {seeds}",
        "",
        f"The classic models trained on N training users under the few-shot protocol, DMPO K=4 on N = 100, on the "
        f"same {users} test users and candidates (every seed's). Each cell: the mean of seeds [lowest, highest seed]; "
        "the paired rows: DMPO K=4 minus the model over every seed's test users pooled, 95% bootstrap interval.",
    ]
    for regime in REGIMES:
        ref = result["reference"][regime]
        lines += ["", f"## Candidates: {regime}", "", "| model | N | HR@1 | NDCG@5 | DMPO K=4 minus, HR@1 | NDCG@5 |"]
        lines.append("|---|---|---|---|---|---|")
        cells = [f"{ref[m]['mean_of_seeds']:.3f} [{ref[m]['lowest']:.3f}, {ref[m]['highest']:.3f}]" for m in METRICS]
        lines.append(f"| {REFERENCE} | 100 | {cells[0]} | {cells[1]} | | |")
        for name, by_size in result["models"].items():
            for size, entry in by_size.items():
                row, diff = entry["row"][regime], entry["difference"][regime]
                means = [
                    f"{row[m]['mean_of_seeds']:.3f} [{row[m]['lowest']:.3f}, {row[m]['highest']:.3f}]" for m in METRICS
                ]
                paired = [fmt(*diff[m]["pooled"]) for m in METRICS]
                label = size_label(size, result["users_at_all"])
                lines.append(f"| {name} | {label} | {means[0]} | {means[1]} | {paired[0]} | {paired[1]} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = {"100": 100, "200": 200, "all": result["users_at_all"] or 643}
    fig, axes = plt.subplots(len(REGIMES), len(METRICS), figsize=(9, 7), squeeze=False)
    for i, regime in enumerate(REGIMES):
        for j, (metric, label) in enumerate(METRICS.items()):
            ax = axes[i][j]
            for k, (name, by_size) in enumerate(result["models"].items()):
                dodge = 1 + 0.025 * (k - (len(MODELS) - 1) / 2)
                rows = [(users[size] * dodge, entry["row"][regime][metric]) for size, entry in by_size.items()]
                means = [r["mean_of_seeds"] for _, r in rows]
                spread = [
                    [r["mean_of_seeds"] - r["lowest"] for _, r in rows],
                    [r["highest"] - r["mean_of_seeds"] for _, r in rows],
                ]
                ax.errorbar([x for x, _ in rows], means, yerr=spread, marker="o", capsize=3, label=name)
            ref = result["reference"][regime][metric]
            yerr = [[ref["mean_of_seeds"] - ref["lowest"]], [ref["highest"] - ref["mean_of_seeds"]]]
            ax.errorbar([100], [ref["mean_of_seeds"]], yerr=yerr, marker="*", markersize=12, color="black",
                        capsize=3, linestyle="none", label=f"{REFERENCE} (N = 100)")  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(sorted(users.values()))
            ax.set_xticklabels([str(u) for u in sorted(users.values())])
            ax.minorticks_off()
            ax.set_xlabel("training users N")
            ax.set_ylabel(label)
            ax.set_title(f"{label}, {regime} candidates")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    seeds = ", ".join(str(s) for s in result["seeds"])
    fig.suptitle(f"Few-shot protocol, MovieLens-100K, seeds {seeds}: mean of seeds, bars lowest to highest seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("benchmarks/results/classic/few-shot-seed2"))
    args = parser.parse_args(argv)
    curve_file = args.dir / "sample_efficiency.json"
    users_at_all = None
    if curve_file.is_file():
        models = json.loads(curve_file.read_text())["sizes"].get("all", {}).get("models", {})
        users_at_all = next((entry["num_train_users"][0] for entry in models.values()), None)
    result = curve(load(args.dir), users_at_all)
    text = markdown(result)
    (args.dir / "sample_efficiency_seeds.md").write_text(text)
    record = {**result, "settings": {"dir": str(args.dir)}, "provenance": provenance()}
    (args.dir / "sample_efficiency_seeds.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(result, args.dir / "sample_efficiency_seeds.png")
    print(text)
    return text


if __name__ == "__main__":
    main()
