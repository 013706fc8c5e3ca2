"""How much data the classic recommenders need: the few-shot protocol with N training users, and its cold start.

The few-shot protocol (`python -m benchmarks.classic_baselines --protocol few_shot`, results in
`benchmarks/results/classic/few-shot`) trains SASRec, GRU4Rec, BPR and most popular on what DMPO K=4 learns from:
the seed's 100 training users plus each held-out user's shown history (5 titles). This script adds two parts:

- `curve`: the same protocol with N training users, N = 100 (the existing runs), 200 and `all` (every user of the
  log who is neither a validation nor a test user of the seed's split: 643 of MovieLens-100K's 943 users; there is
  no N = 1,000 here). The first 100 are the split's training users, then further users in a seeded order
  (`training_users_at`), each giving its whole sequence, as the split's training users do (their target is their
  last item). Test users, candidate lists (both regimes), the validation users and the shown histories are those
  of the N = 100 run, and so are the grids (`classic_baselines.GRIDS`) and the rule choosing a setting at each N
  (validation NDCG@5, mean of the two regimes, pooled over the seeds; ties to the earlier setting). DMPO K=4 stays
  at N = 100, its saved per-user results of the main comparison (`benchmarks/results/quality/tuned`); training it
  on more users does not fit this machine.
- `cold`: the cold-start breakdown at N = 100, by history length, in `benchmarks.few_shot_cold`.

Every (part, N, seed, model, setting) result is written under `--out_dir/runs/` (`n200/seed0/sasrec__<setting>.json`,
`cold/seed0/...`) as it finishes; a rerun skips it. `--report_only` rewrites `sample_efficiency.md` / `.json` /
`.png` and `cold_start.md` / `.json` from the saved runs.

    python -m benchmarks.few_shot_curve
    python -m benchmarks.few_shot_curve --report_only
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()
import numpy as np  # noqa: E402

from benchmarks.classic_baselines import (  # noqa: E402
    GRIDS,
    SELECTION_RULE,
    Popularity,
    as_run,
    per_user,
    quality_config,
    run_setting,
    seed_data,
    setting_key,
    validation_candidates,
)
from benchmarks.quality import REGIMES, QualityConfig, fmt, interval, load_log, load_results  # noqa: E402
from dmpo_trl.data import InteractionLog, UserExample  # noqa: E402


MODELS = ("sasrec", "gru4rec", "bpr", "popular")
SIZES = ("100", "200", "all")
REFERENCE = "dmpo-k4"
CURVE_METRICS = ("hit_ratio@1", "ndcg@5")
LABELS = {"hit_ratio@1": "HR@1", "ndcg@5": "NDCG@5"}


def training_users_at(
    log: InteractionLog,
    train: Sequence[UserExample],
    held_out: Sequence[UserExample],
    num_users: int | None,
    seed: int = 0,
    max_history: int = 5,
) -> list[UserExample]:
    """The training examples of the few-shot protocol at `num_users` training users (`None`: every user of the log
    who is not held out): the split's own `train` examples first, then further users, neither training nor held
    out, in an order seeded by `seed` (so the users at a smaller N are a prefix of those at a larger N), each as an
    example whose target is its last item (the whole sequence is its training data, as `few_shot_sequences` reads
    it).

    Example:
    ```python
    >>> from dmpo_trl.data import example_at
    >>> log = InteractionLog({f"u{k}": ["a", "b", "c"] for k in range(6)}, {i: i for i in "abc"})
    >>> train, held_out = [example_at(log, "u0", -1)], [example_at(log, "u1", -1)]
    >>> [e.user for e in training_users_at(log, train, held_out, 3)][0]
    'u0'
    >>> len(training_users_at(log, train, held_out, None))
    5
    ```
    """
    taken = list(dict.fromkeys(e.user for e in train))
    held = {e.user for e in held_out}
    both = sorted(set(taken) & held)
    if both:
        raise ValueError(f"user {both[0]!r} is both a training and a held-out user")
    from dmpo_trl.data import example_at
    from dmpo_trl.data.tables import natural_key

    others = sorted((u for u in log.sequences if u not in held and u not in set(taken)), key=natural_key)
    random.Random(f"dmpo-trl-few-shot-curve|{seed}").shuffle(others)
    if num_users is None:
        extra = len(others)
    elif num_users < len(taken):
        raise ValueError(f"num_users={num_users} is below the split's {len(taken)} training users")
    elif num_users > len(taken) + len(others):
        raise ValueError(
            f"num_users={num_users} asks for more training users than the log has: {len(taken)} training users + "
            f"{len(others)} others who are not held out"
        )
    else:
        extra = num_users - len(taken)
    return list(train) + [example_at(log, u, -1, max_history) for u in others[:extra]]


def size_value(size: str) -> int | None:
    """`"all"` -> None, `"200"` -> 200; anything else is a clear error."""
    if size == "all":
        return None
    if not size.isdigit() or int(size) < 1:
        raise ValueError(f"a training-set size is a positive whole number of users or 'all', got {size!r}")
    return int(size)


def grid_results(out_dir: Path, size: str, seeds: list[int]) -> dict[str, dict[str, list[dict]]]:
    """{model: {setting_key: [result per seed]}} at `size` training users, for the settings finished on every seed."""
    found: dict[str, dict[str, list[dict]]] = {}
    for name in MODELS:
        for setting in GRIDS[name]:
            paths = [run_path(out_dir, f"n{size}", s, name, setting) for s in seeds]
            if all(p.is_file() for p in paths):
                found.setdefault(name, {})[setting_key(setting)] = [json.loads(p.read_text()) for p in paths]
    return found


def select(by_setting: dict[str, list[dict]], name: str, valid_candidates: dict[int, dict]) -> dict[str, Any]:
    """The setting with the best validation NDCG@5 (mean of the two regimes, pooled over the seeds; ties to the
    earlier setting of the grid), as `classic_baselines` chooses, with the grid's validation figures."""
    table = {}
    for key, results in by_setting.items():
        values = per_user([as_run(r, "valid") for r in results], valid_candidates)
        ndcg = {r: float(values[r]["ndcg@5"].mean()) for r in REGIMES}
        table[key] = {
            "setting": results[0]["setting"],
            "valid_ndcg@5": ndcg,
            "valid_ndcg@5_mean": float(np.mean(list(ndcg.values()))),
            "train_seconds": sum(r["train_seconds"] for r in results),
        }
    order = [setting_key(s) for s in GRIDS[name] if setting_key(s) in table]
    chosen = max(order, key=lambda k: (table[k]["valid_ndcg@5_mean"], -order.index(k)))
    return {"chosen": table[chosen]["setting"], "grid_complete": len(order) == len(GRIDS[name]), "grid": table}


def selections(out_dir: Path, cfg: QualityConfig, log, size: str, seeds: list[int]) -> dict[str, Any]:
    """{model: (selection, results of the chosen setting per seed)} at `size` training users."""
    out = {}
    for name, by_setting in grid_results(out_dir, size, seeds).items():
        valid_candidates = validation_candidates(next(iter(by_setting.values())), cfg, log)
        chosen = select(by_setting, name, valid_candidates)
        out[name] = (chosen, by_setting[setting_key(chosen["chosen"])])
    return out


def chosen_at_100(out_dir: Path, cfg: QualityConfig, log, seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Each model's setting chosen at N = 100 (its whole grid must have run there)."""
    found = selections(out_dir, cfg, log, "100", seeds)
    missing = [m for m in MODELS if m not in found or not found[m][0]["grid_complete"]]
    if missing:
        raise FileNotFoundError(
            f"{out_dir}: the N = 100 grid of {', '.join(missing)} is not complete; run "
            "`python -m benchmarks.classic_baselines --protocol few_shot` first"
        )
    return {m: found[m][0]["chosen"] for m in MODELS}


def run_path(out_dir: Path, part: str, seed: int, name: str, setting: dict[str, Any]) -> Path:
    """Where one result lives: the N = 100 runs are the few-shot study's own (`runs/seed<S>/`)."""
    folder = out_dir / "runs" / (f"seed{seed}" if part == "n100" else f"{part}/seed{seed}")
    return folder / f"{name}__{setting_key(setting)}.json"


def fit(name: str, setting: dict[str, Any], seed: int, sequences: dict[str, list[str]]):
    from dmpo_trl.classic import ClassicRecommender

    if name == "popular":
        return Popularity(sequences)
    return ClassicRecommender(name, seed=seed, **setting).fit(sequences)


# --- runs -------------------------------------------------------------------------------------------------------


def run_curve(args, cfg: QualityConfig, log) -> None:
    for size in args.sizes:
        if size == "100":
            continue  # the few-shot study's own runs
        for seed in args.seeds:
            data = seed_data(cfg, log, seed, "few_shot")
            split = data["split"]
            held_out = split.valid + split.test
            train = training_users_at(log, split.train, held_out, size_value(size), seed, cfg.max_history)
            from dmpo_trl.classic import few_shot_sequences

            data["sequences"] = few_shot_sequences(log, train, held_out)
            for name in args.models:
                for setting in GRIDS[name]:
                    path = run_path(Path(args.out_dir), f"n{size}", seed, name, setting)
                    if path.is_file():
                        print(f"N={size} seed {seed} {name} {setting}: done already", flush=True)
                        continue
                    result = run_setting(name, setting, seed, data)
                    result["num_train_users"] = len({e.user for e in train})
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(result) + "\n")
                    print(f"N={size} seed {seed} {name} {setting}: {result['wall_seconds']} s -> {path}", flush=True)


# --- report -----------------------------------------------------------------------------------------------------


def summarize_curve(out_dir: Path, cfg: QualityConfig, log) -> dict[str, Any]:
    from dmpo_trl.metrics import paired_difference

    cfg.methods = [REFERENCE]
    llm_runs, candidates = load_results(cfg)
    seeds = sorted(candidates)
    if len(llm_runs.get(REFERENCE, [])) != len(seeds):
        raise FileNotFoundError(f"{cfg.results_dir}: no {REFERENCE} run for every seed {seeds}")
    reference = per_user(llm_runs[REFERENCE], candidates)
    sizes: dict[str, Any] = {}
    for size in SIZES:
        found = selections(out_dir, cfg, log, size, seeds)
        if not found:
            continue
        entry: dict[str, Any] = {"models": {}}
        for name, (selection, results) in found.items():
            values = per_user([as_run(r, "test") for r in results], candidates)
            entry["models"][name] = {
                "setting": selection["chosen"],
                "grid_complete": selection["grid_complete"],
                "grid": selection["grid"],
                "num_train_users": [r.get("num_train_users", cfg.num_train_users) for r in results],
                "train_interactions": [r["train_interactions"] for r in results],
                "train_seconds": sum(r["train_seconds"] for r in results),
                **{reg: {m: interval(values[reg][m]) for m in CURVE_METRICS} for reg in REGIMES},
                "difference": {
                    reg: {m: paired_difference(reference[reg][m], values[reg][m]) for m in CURVE_METRICS}
                    for reg in REGIMES
                },
            }
        sizes[size] = entry
    return {
        "seeds": seeds,
        "num_test_users": len(reference[REGIMES[0]]["ndcg@5"]),
        "reference": {
            "method": REFERENCE,
            "num_train_users": cfg.num_train_users,
            **{reg: {m: interval(reference[reg][m]) for m in CURVE_METRICS} for reg in REGIMES},
        },
        "sizes": sizes,
    }


def users_label(summary: dict[str, Any], size: str) -> str:
    """'N = 643' for 'all' (the count of the runs, the same for every seed), else 'N = 200'."""
    counts = {
        n for entry in summary["sizes"].get(size, {"models": {}})["models"].values() for n in entry["num_train_users"]
    }
    if size == "all" and len(counts) == 1:
        return f"all ({counts.pop()})"
    return size


def curve_markdown(summary: dict[str, Any], cfg: QualityConfig) -> str:
    sizes = [s for s in SIZES if s in summary["sizes"]]
    labels = {s: users_label(summary, s) for s in sizes}
    ref = summary["reference"]
    lines = [
        "# Sample efficiency of the few-shot protocol: classic recommenders trained on N users, DMPO K=4 at 100",
        "",
        f"Seeds {summary['seeds']}, {summary['num_test_users']} test users (pooled), {cfg.num_candidates} candidates "
        "each: the test users and lists of the few-shot study and of the main comparison. SASRec / GRU4Rec / BPR "
        "(Cornac) and most popular learn from N training users' sequences plus every held-out user's shown history "
        f"(the {cfg.max_history} titles of the LLM's prompt) and score a test user from that history: N = 100 is the "
        "split's training users (the few-shot study's runs), larger N adds further users who are neither validation "
        "nor test users, in a seeded order, each with its whole sequence; `all` is every such user (MovieLens-100K "
        "has 943 users, so there is no N = 1,000). At each N, each model's setting is chosen on the validation users "
        "from the few-shot study's grid, by its rule (last section). "
        f"{REFERENCE}: the main comparison's saved runs, trained on the {ref['num_train_users']} users of N = 100. "
        "Means with 95% bootstrap intervals.",
        "",
        "## Training data",
        "",
        "| N | training users (per seed) | interactions (per seed) |",
        "|---|---|---|",
    ]
    for size in sizes:
        entry = summary["sizes"][size]["models"].get("popular") or next(
            iter(summary["sizes"][size]["models"].values())
        )
        users = ", ".join(str(n) for n in entry["num_train_users"])
        interactions = ", ".join(f"{n:,}" for n in entry["train_interactions"])
        lines.append(f"| {labels[size]} | {users} | {interactions} |")
    lines.append("")
    for regime in REGIMES:
        for metric in CURVE_METRICS:
            lines += [
                f"## {LABELS[metric]} against N, candidates: {regime}",
                "",
                "| method | " + " | ".join(f"N = {labels[s]}" for s in sizes) + " |",
                "|---" * (len(sizes) + 1) + "|",
            ]
            for name in MODELS:
                cells = [
                    fmt(*summary["sizes"][s]["models"][name][regime][metric])
                    if name in summary["sizes"][s]["models"]
                    else ""
                    for s in sizes
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            cells = [fmt(*ref[regime][metric]) if s == "100" else "" for s in sizes]
            lines += [f"| {REFERENCE} | " + " | ".join(cells) + " |", ""]
    lines += [
        f"## Paired differences: {REFERENCE} (N = 100) minus each model at each N (positive: {REFERENCE} better)",
        "",
        "Same users and candidates; 95% paired bootstrap intervals of the per-user difference.",
        "",
        "| regime | method | N | HR@1 diff | NDCG@5 diff |",
        "|---|---|---|---|---|",
    ]
    for regime in REGIMES:
        for name in MODELS:
            for size in sizes:
                entry = summary["sizes"][size]["models"].get(name)
                if entry:
                    diff = entry["difference"][regime]
                    cells = " | ".join(fmt(*diff[m]) for m in CURVE_METRICS)
                    lines.append(f"| {regime} | {name} | {labels[size]} | {cells} |")
    lines += [
        "",
        f"## Settings chosen on validation users at each N ({SELECTION_RULE})",
        "",
        "| model | N | setting | validation NDCG@5 (uniform, pop.-matched, mean) | train s (all seeds) |",
        "|---|---|---|---|---|",
    ]
    unfinished = []
    for name in MODELS:
        for size in sizes:
            entry = summary["sizes"][size]["models"].get(name)
            if not entry:
                continue
            if not entry["grid_complete"]:
                unfinished.append(f"{name} at N = {labels[size]}")
            for row in entry["grid"].values():
                mark = " **chosen**" if row["setting"] == entry["setting"] else ""
                v = row["valid_ndcg@5"]
                cells = f"{v[REGIMES[0]]:.3f}, {v[REGIMES[1]]:.3f}, {row['valid_ndcg@5_mean']:.3f}"
                setting = f"`{json.dumps(row['setting'])}`{mark}"
                lines.append(f"| {name} | {labels[size]} | {setting} | {cells} | {row['train_seconds']:.0f} |")
    if unfinished:
        lines += ["", f"Grid not finished (chosen among the settings run so far): {', '.join(unfinished)}."]
    return "\n".join(lines) + "\n"


def curve_plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s in SIZES if s in summary["sizes"]]
    fig, axes = plt.subplots(len(REGIMES), len(CURVE_METRICS), figsize=(9, 7), squeeze=False)
    for row, regime in enumerate(REGIMES):
        for col, metric in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            for k, name in enumerate(MODELS):
                dodge = 1 + 0.025 * (k - (len(MODELS) - 1) / 2)  # side by side at the same N (log axis)
                points = [
                    (summary["sizes"][s]["models"][name]["num_train_users"][0], summary["sizes"][s]["models"][name])
                    for s in sizes
                    if name in summary["sizes"][s]["models"]
                ]
                xs = [x * dodge for x, _ in points]
                means = np.array([e[regime][metric][0] for _, e in points])
                errors = np.array([[e[regime][metric][0] - e[regime][metric][1] for _, e in points],
                                   [e[regime][metric][2] - e[regime][metric][0] for _, e in points]])  # fmt: skip
                ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
            ref = summary["reference"]
            mean, low, high = ref[regime][metric]
            style = {"marker": "*", "markersize": 12, "color": "black", "capsize": 3, "linestyle": "none"}
            label = f"{REFERENCE} (N = 100)"
            ax.errorbar([ref["num_train_users"]], [mean], yerr=[[mean - low], [high - mean]], label=label, **style)
            ax.set_xscale("log")
            ticks = sorted(
                {x for s in sizes for e in summary["sizes"][s]["models"].values() for x in e["num_train_users"]}
            )
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("training users N")
            ax.set_ylabel(LABELS[metric])
            ax.set_title(f"{LABELS[metric]}, {regime} candidates")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Few-shot protocol, MovieLens-100K, {summary['num_test_users']} test users, 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def provenance_record() -> dict[str, Any]:
    from dmpo_trl.provenance import provenance

    record = provenance()
    record["libraries"]["cornac"] = version("cornac")
    return record


def report(args, cfg: QualityConfig) -> str:
    out = Path(args.out_dir)
    log = load_log(cfg)
    common = {"quality_dir": str(args.quality_dir), "grids": GRIDS, "selection_rule": SELECTION_RULE}
    texts = []
    curve = summarize_curve(out, cfg, log)
    if curve["sizes"]:
        text = curve_markdown(curve, cfg)
        (out / "sample_efficiency.md").write_text(text)
        settings = {
            **common,
            "sizes": list(SIZES),
            "added_users_order": "random.Random('dmpo-trl-few-shot-curve|<seed>')",
        }
        payload = {"provenance": provenance_record(), "settings": settings, **curve}
        (out / "sample_efficiency.json").write_text(json.dumps(payload, indent=1) + "\n")
        curve_plot(curve, out / "sample_efficiency.png")
        texts.append(text)
    from benchmarks.few_shot_cold import COLD_REGIME, COLD_USERS, cold_markdown, summarize_cold

    chosen = chosen_at_100(out, cfg, log, list(cfg.seeds))
    cold = summarize_cold(out, cfg, chosen)
    if cold and cold["models"]:
        text = cold_markdown(cold, cfg, chosen)
        (out / "cold_start.md").write_text(text)
        settings = {**common, "chosen_at_n100": chosen, "cold_users_per_seed": COLD_USERS, "regime": COLD_REGIME}
        payload = {"provenance": provenance_record(), "settings": settings, **cold}
        (out / "cold_start.json").write_text(json.dumps(payload, indent=1) + "\n")
        texts.append(text)
    return "\n".join(texts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality_dir", default="benchmarks/results/quality/tuned")
    parser.add_argument("--out_dir", default="benchmarks/results/classic/few-shot")
    parser.add_argument("--parts", nargs="+", default=["curve", "cold"], choices=["curve", "cold"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="Training users: numbers or 'all'.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Default: the quality run's seeds.")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--report", default="true", choices=["true", "false"])
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    try:
        for size in args.sizes:
            size_value(size)
        unknown = [s for s in args.sizes if s not in SIZES]
        if unknown:
            raise ValueError(f"--sizes {' '.join(unknown)}: the report reads {', '.join(SIZES)} only")
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    cfg = quality_config(Path(args.quality_dir))
    args.seeds = args.seeds or list(cfg.seeds)
    if not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
        log = load_log(cfg)
        if "curve" in args.parts:
            run_curve(args, cfg, log)
        if "cold" in args.parts:
            from benchmarks.few_shot_cold import run_cold

            run_cold(args, cfg, log, chosen_at_100(Path(args.out_dir), cfg, log, args.seeds))
    if args.report == "true" or args.report_only:
        print(report(args, cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
