"""The recommenders users would pick instead: SASRec, GRU4Rec and BPR beside the LLM, on the same users and candidates.

Reads the quality study's tuned test run (`--quality_dir`, default `benchmarks/results/quality/tuned`: its config,
each seed's `candidates.json` and the per-user candidate scores of random, popular, zero-shot, SFT, DPO and DMPO
K=4, summed log-likelihood; no LLM is retrained) and adds Cornac's SASRec, GRU4Rec and BPR (`dmpo_trl.classic`):

- Users: the study's split per seed (`quality.split_users`): its 100 training users, 50 validation users and 250
  test users, so 500 test users over seeds 0 and 1, ranked on the exact candidate lists the LLM ranked (the
  saved `candidates.json`, checked against a fresh draw), in both regimes (uniform and popularity-matched).
- Training data: the whole MovieLens-100K log minus the validation and test users' targets (each user's last item),
  i.e. every interaction the LLM could have used except 50 validation targets per seed. One model per (seed,
  baseline, setting) is trained on it and scores both the validation and the test candidates; each sequence model
  reads the user's whole history before the target (SASRec its last `max_len` = 20 items), while the LLM's prompt
  shows the last 5 titles. An item never seen in training scores below every known item.
- Tuning rule, fixed before any run: a small grid per baseline (`GRIDS`), the setting with the best validation
  NDCG@5, averaged over the two regimes and pooled over both seeds' validation users (the rule of
  `quality/selection.py`); ties go to the cheaper (earlier) setting. Test users are not read to choose.
- Metrics per test user: HR@1, NDCG@5 (ties broken at random, seeded as in `quality.py`) and the DMPO paper's
  pairwise AUC: the target against each negative, the fraction it outscores (ties count 1/2), i.e. the expected
  outcome of a two-candidate comparison with one sampled negative. The study's prompts do not list candidates, so a
  title's score does not depend on the others and these pairs are exactly the two-candidate protocol's pairs.
  95% bootstrap intervals over the pooled users; paired bootstrap intervals of DMPO K=4 minus each method.

`--protocol few_shot` is the DMPO paper's few-shot protocol instead: each classic model learns only from what DMPO
learns from, the seed's 100 training users' interactions up to their targets, plus each validation and test user's
shown history (the 5 titles of the LLM's prompt, `dmpo_trl.classic.few_shot_sequences`), and scores a user's
candidates from that history (results in `benchmarks/results/classic/few-shot`). Popular counts the same data there.

Each (seed, baseline, setting) result is saved under `--out_dir/runs/seed<S>/` as it finishes; a rerun skips it.

    python -m benchmarks.classic_baselines --seeds 0 --report false &   # one process per seed on 2 cores ...
    python -m benchmarks.classic_baselines --seeds 1 --report false; wait
    python -m benchmarks.classic_baselines --report_only                 # ... then the table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()
import numpy as np  # noqa: E402

from benchmarks.quality import (  # noqa: E402
    REGIMES,
    QualityConfig,
    fmt,
    interval,
    load_log,
    load_results,
    per_user_metrics,
    split_users,
)
from benchmarks.quality.report import regime_table  # noqa: E402


CLASSIC = ("sasrec", "gru4rec", "bpr")
LLM_AND_SIMPLE = ("random", "popular", "zero-shot", "sft", "dpo", "dmpo-k4")
TABLE_ORDER = ("random", "popular", "sasrec", "gru4rec", "bpr", "zero-shot", "sft", "dpo", "dmpo-k4")
REFERENCE = "dmpo-k4"
METRICS = ("hit_ratio@1", "ndcg@5", "auc")
# Fixed before any run. Every setting not varied here is dmpo_trl.classic.DEFAULT_SETTINGS (Cornac's defaults
# otherwise), with SASRec's history capped at 20 items to keep its training to about a minute per epoch on one thread.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "popular": [{}],  # the few-shot protocol's own count (the full protocol takes the quality study's popular row)
    "bpr": [{"k": k, "max_iter": n} for k in (32, 64) for n in (100, 300)],
    "gru4rec": [{"layers": [100], "n_epochs": n} for n in (3, 8)],
    "sasrec": [{"embedding_dim": 64, "max_len": 20, "n_epochs": n} for n in (2, 4)],
}
SELECTION_RULE = "validation NDCG@5, mean of the two regimes, pooled over the seeds' validation users"


def setting_key(setting: dict[str, Any]) -> str:
    return "_".join(f"{k}{'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in setting.items())


def quality_config(quality_dir: Path) -> QualityConfig:
    saved = json.loads((quality_dir / "quality.json").read_text())["config"]
    cfg = QualityConfig(**{f.name: saved[f.name] for f in fields(QualityConfig) if f.name in saved})
    cfg.results_dir, cfg.report_only = str(quality_dir), True
    return cfg


def seed_data(cfg: QualityConfig, log, seed: int, protocol: str = "full") -> dict[str, Any]:
    """The seed's validation and test users, their candidates (test: the saved lists), and the training data: the
    whole log without the held-out targets (`full`), or the few-shot protocol's (`few_shot`)."""
    from dmpo_trl.classic import few_shot_sequences, training_sequences
    from dmpo_trl.data import candidate_sets

    split = split_users(cfg, log, seed)
    saved = json.loads((Path(cfg.results_dir) / "runs" / f"seed{seed}" / "candidates.json").read_text())
    for regime in REGIMES:
        fresh = candidate_sets(log, split.test, cfg.num_candidates, seed, regime)
        rows = saved[regime]
        if [(r["user"], r["target"], r["candidates"], r["target_index"]) for r in rows] != [
            (e.user, e.target, c, t) for e, (c, t) in zip(split.test, fresh)
        ]:
            raise ValueError(f"seed {seed} {regime}: saved candidates differ from the study's split; wrong config?")
    valid = {regime: candidate_sets(log, split.valid, cfg.num_candidates, seed, regime) for regime in REGIMES}
    return {
        "split": split,
        "candidates": {
            "test": {r: [(x["candidates"], x["target_index"]) for x in saved[r]] for r in REGIMES},
            "valid": valid,
        },
        "sequences": (
            few_shot_sequences(log, split.train, split.valid + split.test)
            if protocol == "few_shot"
            else training_sequences(log, split.valid + split.test)
        ),
    }


class Popularity:
    """Most popular, counted on the training data given (the few-shot protocol's own popular row)."""

    def __init__(self, sequences: dict[str, list[str]]):
        from collections import Counter

        self.counts = Counter(item for items in sequences.values() for item in items)
        self.settings, self.num_interactions = {}, sum(self.counts.values())

    def score(self, user: str, candidates: list[str]) -> list[float]:
        return [float(self.counts.get(c, 0)) for c in candidates]

    def unknown_items(self, items: list[str]) -> list[str]:
        return [i for i in items if i not in self.counts]


def run_setting(name: str, setting: dict[str, Any], seed: int, data: dict[str, Any]) -> dict[str, Any]:
    from dmpo_trl.classic import ClassicRecommender

    started = time.perf_counter()
    if name == "popular":
        model = Popularity(data["sequences"])
    else:
        model = ClassicRecommender(name, seed=seed, **setting).fit(data["sequences"])
    trained = time.perf_counter() - started
    split, out = data["split"], {}
    for part, examples in (("valid", split.valid), ("test", split.test)):
        out[part] = {}
        for regime in REGIMES:
            sets = data["candidates"][part][regime]
            scores = [[round(v, 6) for v in model.score(e.user, c)] for e, (c, _) in zip(examples, sets)]
            unknown_targets = sum(bool(model.unknown_items([c[t]])) for c, t in sets)
            out[part][regime] = {"score": scores, "unknown_targets": unknown_targets}
    return {
        "method": name,
        "seed": seed,
        "setting": setting,
        "all_settings": model.settings,
        "train_interactions": model.num_interactions,
        "train_seconds": round(trained, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": __import__("torch").get_num_threads(),
        **out,
    }


def run(args, cfg: QualityConfig) -> None:
    import torch

    torch.set_num_threads(args.threads)
    log = load_log(cfg)
    for seed in args.seeds:
        data = seed_data(cfg, log, seed, args.protocol)
        folder = Path(args.out_dir) / "runs" / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in (*args.methods, "popular") if args.protocol == "few_shot" else args.methods:
            for setting in GRIDS[name]:
                path = folder / f"{name}__{setting_key(setting)}.json"
                if path.is_file():
                    print(f"seed {seed} {name} {setting}: done already", flush=True)
                    continue
                result = run_setting(name, setting, seed, data)
                path.write_text(json.dumps(result) + "\n")
                print(f"seed {seed} {name} {setting}: {result['wall_seconds']} s -> {path}", flush=True)


# --- report -----------------------------------------------------------------------------------------------------


def as_run(result: dict[str, Any], part: str) -> dict[str, Any]:
    """A classic result in the form `quality.per_user_metrics` reads."""
    return {"seed": result["seed"], "scores": {r: {"score": result[part][r]["score"]} for r in REGIMES}}


def per_user_auc(runs: list[dict], candidates: dict[int, dict], regime: str) -> np.ndarray:
    """Per user (pooled over seeds in seed order): the fraction of negatives the target outscores, ties 1/2."""
    from dmpo_trl.metrics import pairwise_auc

    out = []
    for run_ in runs:
        key = "score" if "score" in run_["scores"][regime] else "sum"
        for row, scores in zip(candidates[run_["seed"]][regime], run_["scores"][regime][key]):
            t = row["target_index"]
            out.append(pairwise_auc(scores[t], [s for k, s in enumerate(scores) if k != t]))
    return np.asarray(out)


def per_user(runs: list[dict], candidates: dict[int, dict]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for regime in REGIMES:
        values = per_user_metrics(runs, candidates, regime, "sum")
        out[regime] = {**values, "auc": per_user_auc(runs, candidates, regime)}
    return out


def classic_results(out_dir: Path, seeds: list[int]) -> dict[str, dict[str, list[dict]]]:
    """{baseline: {setting_key: [result per seed]}} for settings finished on every seed."""
    found: dict[str, dict[str, list[dict]]] = {}
    for name in (*CLASSIC, "popular"):
        for setting in GRIDS[name]:
            key = setting_key(setting)
            paths = [out_dir / "runs" / f"seed{s}" / f"{name}__{key}.json" for s in seeds]
            if all(p.is_file() for p in paths):
                found.setdefault(name, {})[key] = [json.loads(p.read_text()) for p in paths]
    return found


def validation_candidates(results: list[dict], cfg: QualityConfig, log) -> dict[int, dict]:
    from dmpo_trl.data import candidate_sets

    out = {}
    for result in results:
        seed = result["seed"]
        users = split_users(cfg, log, seed).valid
        out[seed] = {
            r: [
                {"user": e.user, "target": e.target, "candidates": c, "target_index": t}
                for e, (c, t) in zip(users, candidate_sets(log, users, cfg.num_candidates, seed, r))
            ]
            for r in REGIMES
        }
    return out


def summarize(args, cfg: QualityConfig) -> dict[str, Any]:
    log = load_log(cfg)
    # few-shot: popular counts the few-shot data (its own run), not the whole log as the quality study's row does
    cfg.methods = [m for m in LLM_AND_SIMPLE if not (args.protocol == "few_shot" and m == "popular")]
    llm_runs, candidates = load_results(cfg)
    seeds = sorted(candidates)
    methods: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    for name, by_setting in classic_results(Path(args.out_dir), seeds).items():
        valid_candidates = validation_candidates(next(iter(by_setting.values())), cfg, log)
        table = {}
        for key, results in by_setting.items():
            values = per_user([as_run(r, "valid") for r in results], valid_candidates)
            table[key] = {
                "setting": results[0]["setting"],
                "valid_ndcg@5": {r: float(values[r]["ndcg@5"].mean()) for r in REGIMES},
                "valid_users": len(values[REGIMES[0]]["ndcg@5"]),
                "train_seconds": sum(r["train_seconds"] for r in results),
            }
            table[key]["valid_ndcg@5_mean"] = float(np.mean(list(table[key]["valid_ndcg@5"].values())))
        order = [setting_key(s) for s in GRIDS[name] if setting_key(s) in table]
        chosen = max(order, key=lambda k: (table[k]["valid_ndcg@5_mean"], -order.index(k)))
        complete = len(order) == len(GRIDS[name])
        selection[name] = {"chosen": table[chosen]["setting"], "grid_complete": complete, "grid": table}
        results = by_setting[chosen]
        methods[name] = {
            "per_user": per_user([as_run(r, "test") for r in results], candidates),
            "setting": results[0]["all_settings"],
            "train_interactions": [r["train_interactions"] for r in results],
            "unknown_test_targets": {reg: sum(r["test"][reg]["unknown_targets"] for r in results) for reg in REGIMES},
            "train_seconds": sum(r["train_seconds"] for r in results),
        }
    for name, runs in llm_runs.items():
        if len(runs) == len(seeds):
            methods[name] = {"per_user": per_user(runs, candidates)}
    summary = {"seeds": seeds, "methods": {}, "differences": {}, "selection": selection}
    for name in [m for m in TABLE_ORDER if m in methods]:
        entry = methods[name]
        summary["methods"][name] = {
            **{k: v for k, v in entry.items() if k != "per_user"},
            "num_users": len(entry["per_user"][REGIMES[0]]["auc"]),
            **{r: {m: interval(entry["per_user"][r][m]) for m in METRICS} for r in REGIMES},
        }
        if REFERENCE in methods and name != REFERENCE:
            ref = methods[REFERENCE]["per_user"]
            summary["differences"][name] = {
                r: {m: interval(ref[r][m] - entry["per_user"][r][m]) for m in METRICS} for r in REGIMES
            }
    return summary


TRAINING = {
    "full": "trained on the whole log minus the validation and test users' targets",
    "few_shot": (
        "trained only on the seed's 100 training users' interactions (up to their targets) and the held-out users' "
        "shown histories (the few-shot protocol: the data DMPO learns from), scoring from the shown history"
    ),
}


def markdown(summary: dict[str, Any], cfg: QualityConfig, protocol: str = "full") -> str:
    methods = summary["methods"]
    users = methods[REFERENCE]["num_users"] if REFERENCE in methods else "?"
    lines = [
        "# Classic recommenders beside the fine-tuned LLM: MovieLens-100K, the quality study's test users",
        "",
        f"Seeds {summary['seeds']}, {users} test users (pooled), {cfg.num_candidates} candidates each: the lists the "
        "LLM ranked in `quality-tuned`. LLM rows: SmolLM2-135M-Instruct + LoRA, the tuned settings, summed "
        f"log-likelihood (from the saved runs). SASRec / GRU4Rec / BPR: Cornac, {TRAINING[protocol]}, setting "
        f"chosen by {SELECTION_RULE}. Means with 95% bootstrap "
        "intervals; AUC: target against each negative, ties 1/2.",
        "",
    ]
    for regime in REGIMES:
        rows = ([name, *(fmt(*entry[regime][m]) for m in METRICS)] for name, entry in methods.items())
        lines += regime_table(regime, ["method", "HR@1", "NDCG@5", "AUC"], rows)
    lines += [
        f"## Paired differences: {REFERENCE} minus each method (positive: {REFERENCE} better)",
        "",
        "Same users and candidates; 95% paired bootstrap intervals of the per-user difference.",
        "",
        "| regime | method | HR@1 diff | NDCG@5 diff | AUC diff |",
        "|---|---|---|---|---|",
    ]
    for regime in REGIMES:
        for name, diff in summary["differences"].items():
            lines.append(f"| {regime} | {name} | " + " | ".join(fmt(*diff[regime][m]) for m in METRICS) + " |")
    lines += ["", "## Settings chosen on validation users", ""]
    lines += ["| baseline | setting | validation NDCG@5 (uniform, pop.-matched, mean) | train s (all seeds) |"]
    lines += ["|---|---|---|---|"]
    for name, sel in summary["selection"].items():
        for row in sel["grid"].values():
            mark = " **chosen**" if row["setting"] == sel["chosen"] else ""
            v = row["valid_ndcg@5"]
            cells = f"{v[REGIMES[0]]:.3f}, {v[REGIMES[1]]:.3f}, {row['valid_ndcg@5_mean']:.3f}"
            lines.append(f"| {name} | `{json.dumps(row['setting'])}`{mark} | {cells} | {row['train_seconds']:.0f} |")
    unfinished = [name for name, sel in summary["selection"].items() if not sel["grid_complete"]]
    if unfinished:
        lines += ["", f"Grid not finished (chosen among the settings run so far): {', '.join(unfinished)}."]
    unknown = {n: e["unknown_test_targets"] for n, e in methods.items() if "unknown_test_targets" in e}
    if unknown:
        counts = ", ".join(f"{n} ({r})" for r, n in next(iter(unknown.values())).items())
        lines += ["", f"Test targets never seen in training (scored below every known item): {counts}.", ""]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cornac_settings(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument the Cornac model ran with: its defaults, overridden by `given`."""
    import inspect

    import cornac

    model_class = {"sasrec": cornac.models.SASRec, "gru4rec": cornac.models.GRU4Rec, "bpr": cornac.models.BPR}[name]
    defaults = {
        k: p.default
        for k, p in inspect.signature(model_class.__init__).parameters.items()
        if k not in ("self", "seed")
    }
    fixed = {"num_threads": 1} if name == "bpr" else {}  # as dmpo_trl.classic runs it
    return {**defaults, **given, **fixed, "seed": "the data seed (0 or 1)"}


def report(args, cfg: QualityConfig) -> str:
    summary = summarize(args, cfg)
    out = Path(args.out_dir)
    text = markdown(summary, cfg, args.protocol)
    (out / "classic.md").write_text(text)
    payload = {
        "versions": {p: version(p) for p in ("cornac", "torch", "numpy", "dmpo-trl")},
        "git_commit": git_commit(),
        "quality_dir": str(args.quality_dir),
        "quality_config": {f.name: getattr(cfg, f.name) for f in fields(QualityConfig)},
        "protocol": args.protocol,
        "grids": GRIDS,
        "selection_rule": SELECTION_RULE,
        "cornac_settings": {
            n: cornac_settings(n, m["setting"]) for n, m in summary["methods"].items() if n in CLASSIC
        },
        "reference": REFERENCE,
        **summary,
    }
    (out / "classic.json").write_text(json.dumps(payload, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality_dir", default="benchmarks/results/quality/tuned")
    parser.add_argument("--out_dir", default=None, help="Default: classic/tuned (full) or classic/few-shot.")
    parser.add_argument("--protocol", default="full", choices=["full", "few_shot"], help="What the models learn from.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Default: the quality run's seeds.")
    parser.add_argument("--methods", nargs="+", default=["bpr", "gru4rec", "sasrec"], choices=CLASSIC)
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--report", default="true", choices=["true", "false"])
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    args.out_dir = args.out_dir or f"benchmarks/results/classic/{'tuned' if args.protocol == 'full' else 'few-shot'}"
    cfg = quality_config(Path(args.quality_dir))
    args.seeds = args.seeds or list(cfg.seeds)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run(args, cfg)
    if args.report == "true" or args.report_only:
        print(report(args, cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
