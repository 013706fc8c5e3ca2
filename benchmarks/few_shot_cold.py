"""The cold-start breakdown of the few-shot protocol (`python -m benchmarks.few_shot_curve --parts cold`).

Per seed, the split's first 200 test users get a target drawn early in their sequence
(`dmpo_trl.cold_start.cold_start_examples(log, users, seed=<split seed>, max_history=5)`: 1-2, 3-5, 6-10 or 11-22
interactions before it, 50 users each), with 20 uniform-negative candidates drawn as the study draws them
(`candidate_sets(..., seed, "uniform")`). Each model is retrained at N = 100, at the setting chosen there
(`few_shot_curve.chosen_at_100`), on the training users plus the validation users' and these users' shown histories
(the 5 items before the early target), and HR@1 / NDCG@5 are broken down by the number of interactions before the
target (`dmpo_trl.cold_start.breakdown`). The runs are written under `--out_dir/runs/cold/seed<S>/`; the report
(`cold_start.md` / `.json`) is written by `few_shot_curve.report`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()
import numpy as np  # noqa: E402

from benchmarks.few_shot_curve import CURVE_METRICS, LABELS, MODELS, fit, run_path  # noqa: E402
from benchmarks.quality import QualityConfig, fmt, interval, split_users  # noqa: E402


COLD_USERS = 200
COLD_REGIME = "uniform"


# --- runs -------------------------------------------------------------------------------------------------------


def cold_data(cfg: QualityConfig, log, seed: int) -> dict[str, Any]:
    """The seed's cold-start examples, their uniform candidates and the N = 100 training data for them."""
    from dmpo_trl.classic import few_shot_sequences
    from dmpo_trl.cold_start import cold_start_examples
    from dmpo_trl.data import candidate_sets

    split = split_users(cfg, log, seed)
    users = [e.user for e in split.test][:COLD_USERS]
    cold = cold_start_examples(log, users, seed=seed, max_history=cfg.max_history)
    sets = candidate_sets(log, cold, cfg.num_candidates, seed, COLD_REGIME)
    rows = [
        {
            "user": e.user,
            "target": e.target,
            "position": e.extra["position"],
            "history": list(e.history),
            "candidates": c,
            "target_index": t,
        }
        for e, (c, t) in zip(cold, sets)
    ]
    sequences = few_shot_sequences(log, split.train, split.valid + cold)
    return {"examples": cold, "rows": rows, "sequences": sequences, "num_train_users": len(split.train)}


def run_cold(args, cfg: QualityConfig, log, settings: dict[str, dict[str, Any]]) -> None:
    for seed in args.seeds:
        data = cold_data(cfg, log, seed)
        folder = Path(args.out_dir) / "runs" / "cold" / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / "candidates.json"
        if saved.is_file() and json.loads(saved.read_text()) != data["rows"]:
            raise ValueError(f"{saved}: the saved cold-start examples differ from a fresh draw; wrong config?")
        saved.write_text(json.dumps(data["rows"]) + "\n")
        for name in args.models:
            path = run_path(Path(args.out_dir), "cold", seed, name, settings[name])
            if path.is_file():
                print(f"cold seed {seed} {name}: done already", flush=True)
                continue
            started = time.perf_counter()
            model = fit(name, settings[name], seed, data["sequences"])
            trained = time.perf_counter() - started
            rows = data["rows"]
            result = {
                "method": name,
                "seed": seed,
                "setting": settings[name],
                "setting_chosen_at": "N=100",
                "all_settings": model.settings,
                "num_train_users": data["num_train_users"],
                "train_interactions": model.num_interactions,
                "train_seconds": round(trained, 1),
                "score": [[round(v, 6) for v in model.score(r["user"], r["candidates"])] for r in rows],
                "unknown_targets": sum(bool(model.unknown_items([r["target"]])) for r in rows),
                "wall_seconds": round(time.perf_counter() - started, 1),
                "torch_threads": __import__("torch").get_num_threads(),
            }
            path.write_text(json.dumps(result) + "\n")
            print(f"cold seed {seed} {name}: {result['wall_seconds']} s -> {path}", flush=True)


# --- report -----------------------------------------------------------------------------------------------------


def summarize_cold(out_dir: Path, cfg: QualityConfig, settings: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    from benchmarks.quality import per_user_metrics
    from dmpo_trl.cold_start import breakdown

    seeds = list(cfg.seeds)
    folders = [out_dir / "runs" / "cold" / f"seed{s}" for s in seeds]
    if not all((f / "candidates.json").is_file() for f in folders):
        return None
    rows = {s: json.loads((f / "candidates.json").read_text()) for s, f in zip(seeds, folders)}
    lengths = [r["position"] for s in seeds for r in rows[s]]
    values: dict[str, dict[str, np.ndarray]] = {}
    meta: dict[str, Any] = {}
    for name in MODELS:
        paths = [run_path(out_dir, "cold", s, name, settings[name]) for s in seeds]
        if not all(p.is_file() for p in paths):
            continue
        results = [json.loads(p.read_text()) for p in paths]
        runs = [{"seed": r["seed"], "scores": {COLD_REGIME: {"score": r["score"]}}} for r in results]
        values[name] = per_user_metrics(runs, {s: {COLD_REGIME: rows[s]} for s in seeds}, COLD_REGIME, "score")
        meta[name] = {
            "train_interactions": [r["train_interactions"] for r in results],
            "train_seconds": sum(r["train_seconds"] for r in results),
            "unknown_targets": sum(r["unknown_targets"] for r in results),
            "overall": {m: interval(values[name][m]) for m in CURVE_METRICS},
        }
    names = [m for m in MODELS if m in values]
    return {
        "seeds": seeds,
        "num_users": len(lengths),
        "regime": COLD_REGIME,
        "models": meta,
        "breakdown": {m: breakdown({n: values[n][m] for n in names}, lengths) for m in CURVE_METRICS},
    }


def cold_markdown(summary: dict[str, Any], cfg: QualityConfig, settings: dict[str, dict[str, Any]]) -> str:
    from dmpo_trl.cold_start import format_breakdown

    names = list(summary["models"])
    lines = [
        "# Cold start in the few-shot protocol: the classic models at N = 100, by history length",
        "",
        f"Seeds {summary['seeds']}: each seed's first {COLD_USERS} test users with the target drawn early "
        "(`dmpo_trl.cold_start.cold_start_examples`, seeded by the split seed: 1-2, 3-5, 6-10 or 11-22 "
        f"interactions before it), {summary['num_users']} users pooled, {cfg.num_candidates} candidates each, "
        f"{summary['regime']} negatives. Each model learns from the split's 100 training users and the held-out "
        f"users' shown histories (the up to {cfg.max_history} items before the early target, what the LLM's "
        "prompt would show), at the setting chosen at N = 100, and scores a user from that history, so a user with "
        f"more than {cfg.max_history} interactions before the target is scored from its last {cfg.max_history}. "
        "Means with 95% bootstrap intervals.",
        "",
        "## All cold-start users",
        "",
        "| method | HR@1 | NDCG@5 | train s (all seeds) | targets never seen in training |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        entry = summary["models"][name]
        cells = " | ".join(fmt(*entry["overall"][m]) for m in CURVE_METRICS)
        lines.append(f"| {name} | {cells} | {entry['train_seconds']:.0f} | {entry['unknown_targets']} |")
    for metric in CURVE_METRICS:
        lines += ["", f"## {LABELS[metric]} by interactions before the target", ""]
        lines.append(format_breakdown(summary["breakdown"][metric], names))
    lines += [
        "",
        "No LLM row: the main comparison's LLM runs score only the test users' last items. The LLM's cold-start "
        "rows (zero-shot and DMPO K=4, another split of 200 users with early targets) are in the two-stage study, "
        "`two_stage/ml100k`.",
        "",
        "Settings: " + ", ".join(f"{n} `{json.dumps(settings[n])}`" for n in names) + ".",
    ]
    return "\n".join(lines) + "\n"
