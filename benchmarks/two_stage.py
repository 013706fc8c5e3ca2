"""Two-stage ranking on MovieLens-100K: SASRec proposes each user's top 20 unseen films of the whole catalogue, the
LLM reranks them; full-catalogue NDCG@10, Recall@10 and MRR against SASRec alone, for all test users and by history
length (cold start).

The models are what a user gets from the command line:

- DMPO K=4: `dmpo-trl train --use_peft --max_history 5 --split_seed 0 --popularity_prior 0 --loss_type dmpo --seed S`
  for each training seed S (SmolLM2-135M-Instruct + LoRA r 16, lr 1e-3 x 2 epochs, 100 training users), all seeds on
  one split, so their rows average over the same test users; zero-shot: the base model. Variants of it
  (`VARIANTS`): `dmpo-sft` adds the paper's SFT term on the chosen title (`--loss_type dmpo sft --loss_weights 1 1`,
  what `dmpo-trl train` now trains by default), `dmpo-retriever` trains on SASRec's top-20 wrong items as negatives
  (`--negative_strategy retriever`), the items the reranker faces, and `dpo` is DPO (DMPO at K=1, TRL's `sigmoid`
  loss, at its measured 3e-3 x 1 epoch).
- The retriever: SASRec (`dmpo_trl.retrieval`, Cornac, the classic baselines' default setting) fitted on the whole log
  minus the held-out targets and everything after them; popular as a second retriever row.
- Users: the split's 500 test users (their last film) and 50 validation users; and a cold-start set: 200 of the test
  users with the target drawn early in their sequence (`dmpo_trl.cold_start`: 1-2, 3-5, 6-10, 11-22 films before
  it), the retriever refitted without those targets and what follows them. Nobody here is a training user.
- Fusion: the LLM's log-likelihood plus w x SASRec's standardised score, w chosen per model and seed on the
  validation users by NDCG@10 (`dmpo_trl.two_stage.choose_fusion_weight`); w = 0 is the LLM's order alone.

Every step writes its file as it finishes under `--out_dir` (`runs/`: trained models, retrievals, each model's
scores); a rerun skips what is there, so a stopped run resumes.

    python -m benchmarks.two_stage --seeds 0 1 2          # train, retrieve, score, then the report
    python -m benchmarks.two_stage --variants dmpo        # only these models (default: dmpo, dmpo-retriever, dpo;
                                                          # --sampled_variants: dmpo, dmpo-sft)
    python -m benchmarks.two_stage --report_only
    python -m benchmarks.two_stage --sampled              # also: the same models on the 20 sampled candidates
    python -m benchmarks.two_stage --report_only --sampled
    python -m benchmarks.two_stage --sampled --cold       # and the cold-start users on 20 sampled candidates
                                                          # (--cold_variants: dmpo-sft, the default training)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from dmpo_trl.metrics import hits_at_k, interval, ndcg_at_k, paired_difference  # noqa: E402


OUT_DIR = Path("benchmarks/results/two_stage/ml100k")
TRAIN_FLAGS = (
    "--use_peft",
    "--max_history",
    "5",
    "--split_seed",
    "0",
    "--num_valid_users",
    "50",
    "--num_test_users",
    "500",
    "--popularity_prior",
    "0",
    "--no_evaluate_before",
    "--no_evaluate_after",
)
VARIANTS = {
    "dmpo": ("--loss_type", "dmpo"),
    "dmpo-sft": ("--loss_type", "dmpo", "sft", "--loss_weights", "1", "1"),
    "dmpo-retriever": ("--loss_type", "dmpo", "--negative_strategy", "retriever"),
    "dpo": ("--loss_type", "sigmoid", "--num_negatives", "1"),
}
"""The trained models: name -> `dmpo-trl train` flags added to `TRAIN_FLAGS`. (The runs kept in `runs/` were trained
before `dmpo-trl train` defaulted to `dmpo sft` on SmolLM2, without `--loss_type dmpo`, which then meant the same.)"""
LABELS = {
    "dmpo": "dmpo-k4",
    "dmpo-sft": "dmpo-k4 + sft",
    "dmpo-retriever": "dmpo-k4, sasrec negatives",
    "dpo": "dpo (dmpo k=1)",
}
TOP_M = 20
K = 10
COLD_USERS = 200
PARTS = ("valid", "test", "cold")


def train(variant: str, seed: int, folder: Path) -> None:
    """`dmpo-trl train` of one variant and training seed, unless its adapter is saved already (its printed output
    goes to `<folder>/train.log`); the logged training steps are kept as `<folder>.train.json`."""
    if not ((folder / "adapter_model.safetensors").is_file() and (folder / "ranker.json").is_file()):
        command = [sys.executable, "-m", "dmpo_trl.cli", "train", *TRAIN_FLAGS, *VARIANTS[variant]]
        command += ["--seed", str(seed), "--output_dir", str(folder)]
        print("$ " + " ".join(command[1:]), flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    curve = folder.with_name(folder.name + ".train.json")
    if not curve.is_file() and (folder / "train.log").is_file():
        lines = (folder / "train.log").read_text().splitlines()
        steps = [ast.literal_eval(line) for line in lines if line.startswith("{'loss'")]
        record = {"variant": variant, "seed": seed, "flags": [*TRAIN_FLAGS, *VARIANTS[variant]], "steps": steps}
        curve.write_text(json.dumps(record) + "\n")
    split = folder.parent / "split.json"  # the split every run shares (`--split_seed 0`), kept with the results
    if not split.is_file():
        split.write_text((folder / "split.json").read_text())


def users(runs: Path) -> dict[str, Any]:
    """The log and the valid, test and cold-start examples of the split the trained runs share (`runs/split.json`)."""
    from dmpo_trl.cold_start import cold_start_examples
    from dmpo_trl.data.splits import example_at
    from dmpo_trl.recipe import load_interaction_log, load_split, saved_test_users, split_data_arguments

    record = load_split(runs / "split.json")
    log = load_interaction_log(split_data_arguments(record))
    test, _ = saved_test_users(record, log, runs / "split.json")
    max_history = record["data"].get("max_history", 10)
    valid = [example_at(log, user, -1, max_history) for user in record["valid"]]
    cold = cold_start_examples(log, record["test"][:COLD_USERS], seed=0, max_history=max_history)
    return {"log": log, "valid": valid, "test": test, "cold": cold}


def retrieval(data: dict[str, Any], name: str, path: Path) -> dict[str, list]:
    """Each part's retrieved lists for retriever `name` (saved to `path`): valid and test from one fit without
    their targets, cold from a fit without the cold targets (and the validation targets)."""
    from dmpo_trl.retrieval import make_retriever, retrieve

    if path.is_file():
        saved = json.loads(path.read_text())
    else:
        saved = {}
        started = time.perf_counter()
        for parts, held_out in (
            (("valid", "test"), data["valid"] + data["test"]),
            (("cold",), data["valid"] + data["cold"]),
        ):
            fitted = make_retriever(name, seed=0).fit(data["log"], held_out)
            for part in parts:
                found = retrieve(fitted, data["log"], data[part], TOP_M, seed=0, fit=False)
                saved[part] = [{"user": r.example.user, "items": r.items, "scores": r.scores} for r in found]
        saved["seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(saved) + "\n")
    return saved


def as_retrieved(data: dict[str, Any], saved: dict[str, list], part: str) -> list:
    from dmpo_trl.retrieval import Retrieved

    out = []
    for example, row in zip(data[part], saved[part]):
        if row["user"] != example.user:
            raise ValueError(f"{part}: the saved retrieval lists other users; delete it and rerun")
        out.append(Retrieved(example, row["items"], row["scores"]))
    return out


def score(
    model_dir: Path | None, prompt, data: dict[str, Any], retrieved: dict[str, list], path: Path
) -> dict[str, Any]:
    """The LLM's scores of each part's retrieved lists that hold the target (saved to `path`)."""
    from dmpo_trl.evaluation import evaluate_ranking
    from dmpo_trl.models import load_adapter_model, load_model_and_tokenizer
    from dmpo_trl.settings import EvaluationSettings

    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    if model_dir is None:
        model, tokenizer = load_model_and_tokenizer()
    else:
        model, tokenizer = load_adapter_model(model_dir)
    out: dict[str, Any] = {}
    for part in PARTS:
        hits = [r for r in retrieved[part] if r.hit]
        result = evaluate_ranking(
            model,
            tokenizer,
            [r.example for r in hits],
            data["log"],
            settings=EvaluationSettings(seed=0, progress=False),
            prompt=prompt,
            candidates=[r.items for r in hits],
        )
        out[part] = {"per_user": [{k: row[k] for k in ("user", "candidates", "scores")} for row in result["per_user"]]}
    out["seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(out) + "\n")
    return out


# --- report -----------------------------------------------------------------------------------------------------


def two_stage(retrieved: list, llm: dict[str, Any], weight: float) -> dict[str, Any]:
    from dmpo_trl.two_stage import two_stage_result

    return two_stage_result(retrieved, llm, weight, K, seed=0)["metrics"]["full_catalogue"]


def per_user(metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    values = metrics["per_user"]
    return {
        f"ndcg@{K}": np.asarray(values[f"ndcg@{K}"]),
        "mrr": np.asarray(values["reciprocal_rank"]),
        f"recall@{K}": np.asarray([r < K for r in _ranks(values)], dtype=float),
    }


def _ranks(values: dict[str, list]) -> list[float]:
    """Each user's 0-based rank of the target (inf for a miss), from the reciprocal ranks."""
    return [1.0 / rr - 1.0 if rr > 0 else float("inf") for rr in values["reciprocal_rank"]]


def summarize(out_dir: Path, seeds: list[int], variants: list[str]) -> dict[str, Any]:
    from dmpo_trl.cold_start import breakdown, history_length
    from dmpo_trl.two_stage import choose_fusion_weight

    runs = out_dir / "runs"
    data = users(runs)
    rows: dict[str, dict[str, Any]] = {}
    for name in ("sasrec", "popular"):
        saved = json.loads((runs / f"retrieved-{name}.json").read_text())
        retrieved = {part: as_retrieved(data, saved, part) for part in PARTS}
        rows[f"{name} alone"] = {part: per_user(_alone(retrieved[part])) for part in ("test", "cold")}
        if name == "sasrec":
            sasrec = retrieved
    models = {"zero-shot": [runs / "zero-shot.json"]}
    models.update({LABELS[v]: [runs / f"{v}-seed{s}.json" for s in seeds] for v in variants})
    weights: dict[str, list[float]] = {}
    baseline_of: dict[str, str] = {}
    for model, paths in models.items():
        for fused in (False, True):
            label = f"sasrec + {model}" + (" (fused)" if fused else "")
            if model not in ("zero-shot", LABELS["dmpo"]):
                baseline_of[label] = f"sasrec + {LABELS['dmpo']}" + (" (fused)" if fused else "")
            parts: dict[str, list] = {"test": [], "cold": []}
            for path in paths:
                llm = json.loads(path.read_text())
                weight = 0.0
                if fused:
                    weight, _ = choose_fusion_weight(sasrec["valid"], llm["valid"], k=K, seed=0)
                    weights.setdefault(label, []).append(weight)
                for part in parts:
                    parts[part].append(per_user(two_stage(sasrec[part], llm[part], weight)))
            rows[label] = {
                part: {key: np.mean([run[key] for run in runs_], axis=0) for key in runs_[0]}
                for part, runs_ in parts.items()
            }
            rows[label]["seed_means"] = {
                part: [float(run[f"ndcg@{K}"].mean()) for run in runs_] for part, runs_ in parts.items()
            }
    lengths = [history_length(e) for e in data["cold"]]
    summary: dict[str, Any] = {"rows": {}, "weights": weights, "seeds": seeds, "cold_groups": {}}
    reference = rows["sasrec alone"]
    for label, row in rows.items():
        entry = {part: {key: interval(values) for key, values in row[part].items()} for part in ("test", "cold")}
        entry["minus_sasrec"] = {
            part: paired_difference(row[part][f"ndcg@{K}"], reference[part][f"ndcg@{K}"]) for part in ("test", "cold")
        }
        entry["seed_means"] = row.get("seed_means")
        if label in baseline_of and baseline_of[label] in rows:  # a variant against DMPO K=4 as trained by default
            base = rows[baseline_of[label]]
            entry["minus_dmpo_k4"] = {
                part: paired_difference(row[part][f"ndcg@{K}"], base[part][f"ndcg@{K}"]) for part in ("test", "cold")
            }
        summary["rows"][label] = entry
    summary["cold_groups"] = breakdown({label: row["cold"][f"ndcg@{K}"] for label, row in rows.items()}, lengths)
    reranked = [label for label in rows if "+" in label]
    summary["cold_groups_minus_sasrec"] = breakdown(
        {label: rows[label]["cold"][f"ndcg@{K}"] - reference["cold"][f"ndcg@{K}"] for label in reranked}, lengths
    )
    summary["recall@20"] = {part: float(np.mean([r.hit for r in sasrec[part]])) for part in PARTS}
    return summary


def _alone(retrieved: list) -> dict[str, Any]:
    from dmpo_trl.retrieval import full_catalogue_metrics

    return full_catalogue_metrics([r.items for r in retrieved], [r.example.target for r in retrieved], K)


def fmt(values) -> str:
    mean, low, high = values
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def mark(values) -> str:
    return fmt(values) + (" win" if values[1] > 0 else " loss" if values[2] < 0 else "")


def markdown(summary: dict[str, Any]) -> str:
    from dmpo_trl.cold_start import format_breakdown

    lines = [
        "# Two-stage ranking: SASRec's top 20 of the catalogue, reranked by the LLM (MovieLens-100K)",
        "",
        f"Full-catalogue metrics over every film the user has not seen; a target outside SASRec's top 20 is a miss. "
        f"SASRec's Recall@20: test {summary['recall@20']['test']:.3f}, cold-start {summary['recall@20']['cold']:.3f}. "
        f"DMPO rows are the per-user mean over training seeds {summary['seeds']}; 95% bootstrap intervals; "
        "differences are paired (same users) against SASRec alone, and for a variant of DMPO K=4 against DMPO K=4 "
        "alone with uniform negatives, both with or both without fusion.",
        "",
        f"| ranking | NDCG@{K} | Recall@{K} | MRR | NDCG@{K} minus SASRec | minus DMPO K=4 (uniform negatives) | "
        f"per-seed NDCG@{K} |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, entry in summary["rows"].items():
        test = entry["test"]
        seeds = ", ".join(f"{v:.3f}" for v in (entry["seed_means"] or {}).get("test", []))
        variant = mark(entry["minus_dmpo_k4"]["test"]) if "minus_dmpo_k4" in entry else ""
        lines.append(
            f"| {label} | {fmt(test[f'ndcg@{K}'])} | {fmt(test[f'recall@{K}'])} | {fmt(test['mrr'])} | "
            f"{mark(entry['minus_sasrec']['test'])} | {variant} | {seeds} |"
        )
    lines += [
        "",
        "Fusion weights chosen on the validation users (per seed): "
        + "; ".join(f"{label}: {', '.join(str(w) for w in ws)}" for label, ws in summary["weights"].items()),
        "",
        f"## Cold start: NDCG@{K} by films before the target ({COLD_USERS} test users, early targets)",
        "",
    ]
    lines.append(format_breakdown(summary["cold_groups"], list(summary["rows"])))
    lines += ["", f"Paired, each reranking's NDCG@{K} minus SASRec alone's, by group:", ""]
    lines.append(
        format_breakdown(summary["cold_groups_minus_sasrec"], list(summary["cold_groups_minus_sasrec"]["1-2"])[1:])
    )
    lines += ["", f"| ranking | cold-start NDCG@{K} | minus SASRec |", "|---|---|---|"]
    for label, entry in summary["rows"].items():
        lines.append(f"| {label} | {fmt(entry['cold'][f'ndcg@{K}'])} | {mark(entry['minus_sasrec']['cold'])} |")
    return "\n".join(lines) + "\n"


def report(out_dir: Path, seeds: list[int], variants: list[str]) -> str:
    from dmpo_trl.provenance import provenance

    summary = summarize(out_dir, seeds, variants)
    text = markdown(summary)
    (out_dir / "two_stage.md").write_text(text)
    plain = json.loads(json.dumps(summary, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    record = {
        "summary": plain,
        "settings": {
            "train_flags": TRAIN_FLAGS,
            "variants": {v: VARIANTS[v] for v in variants},
            "top_m": TOP_M,
            "k": K,
            "cold_users": COLD_USERS,
            "seeds": seeds,
        },
        "provenance": provenance(),
    }
    (out_dir / "two_stage.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


# --- the same models on the sampled protocol (20 candidates): the seed-to-seed spread -----------------------------


def sampled(out_dir: Path, seeds: list[int], variants: list[str]) -> None:
    """`dmpo-trl evaluate` of zero-shot and each variant's model per seed on the split's 500 test users and their
    saved 20 candidates (uniform negatives), into `sampled/` (a file already there is kept)."""
    runs, folder = out_dir / "runs", out_dir / "sampled"
    folder.mkdir(exist_ok=True)
    jobs = [("zero-shot", ["--split_file", str(runs / "split.json")])]
    jobs += [(f"{v}-seed{s}", ["--model_name_or_path", str(runs / f"{v}-seed{s}")]) for v in variants for s in seeds]
    for name, flags in jobs:
        path = folder / f"{name}.json"
        if not path.is_file():
            command = [sys.executable, "-m", "dmpo_trl.cli", "evaluate", *flags, "--no_show_progress"]
            subprocess.run([*command, "--output_file", str(path)], check=True)


COLD_FLAGS = (
    "--test_targets", "cold", "--split_file", "none", "--split_seed", "0", "--num_test_users", str(COLD_USERS),
    "--num_valid_users", "50", "--max_history", "5", "--conversational",
)  # fmt: skip
"""`dmpo-trl evaluate` on the cold-start users: the split's first 200 test users (the test users are dealt first, so
the same users as the two-stage cold set), each at an early target, 20 uniform candidates."""
COLD_BASELINES = ("random", "popular", "sasrec", "gru4rec", "bpr")


def sampled_cold(out_dir: Path, seeds: list[int], variants: list[str]) -> None:
    """`dmpo-trl evaluate --test_targets cold` of zero-shot, each variant's model per seed and the baselines (the
    classic ones fitted on the whole log minus the cold targets and what follows them), into `sampled/cold/`."""
    runs, folder = out_dir / "runs", out_dir / "sampled" / "cold"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [("zero-shot", [])] + [(f"baseline-{b}", ["--baseline", b]) for b in COLD_BASELINES]
    jobs += [(f"{v}-seed{s}", ["--model_name_or_path", str(runs / f"{v}-seed{s}")]) for v in variants for s in seeds]
    for name, flags in jobs:
        path = folder / f"{name}.json"
        if not path.is_file():
            command = [sys.executable, "-m", "dmpo_trl.cli", "evaluate", *COLD_FLAGS, *flags, "--no_show_progress"]
            subprocess.run([*command, "--output_file", str(path)], check=True)


def sampled_cold_report(out_dir: Path, seeds: list[int], variants: list[str]) -> str:
    """HR@1 and NDCG@5 by history length on the cold-start users: each LLM row the per-user mean over seeds, paired
    against zero-shot and against SASRec in each group."""
    from dmpo_trl.cold_start import breakdown, format_breakdown

    folder = out_dir / "sampled" / "cold"
    zero = json.loads((folder / "zero-shot.json").read_text())
    users = [row["user"] for row in zero["per_user"]]
    lengths = [row["history_length"] for row in zero["per_user"]]

    def values(result: dict[str, Any], metric: str) -> np.ndarray:
        if [row["user"] for row in result["per_user"]] != users:
            raise ValueError("a cold-start result ranks other users than zero-shot's")
        ranks = [row["rank"] for row in result["per_user"]]
        return hits_at_k(ranks, 1) if metric == "hit_ratio@1" else ndcg_at_k(ranks, 5)

    results = {f"{b}": json.loads((folder / f"baseline-{b}.json").read_text()) for b in COLD_BASELINES}
    lines = [
        f"# Cold start on 20 sampled candidates: {len(users)} test users at an early target (MovieLens-100K)",
        "",
        "The split's first 200 test users, each ranked at a target drawn early in their sequence "
        "(`dmpo-trl evaluate --test_targets cold`: 1-2, 3-5, 6-10 or 11-22 films before it, 50 users each), 20 "
        "uniform candidates, the LLM shown the up to 5 films before the target. The classic baselines are fitted on "
        "the whole log minus these targets and what follows them (full data, not the few-shot protocol); LLM rows "
        f"are the per-user mean over training seeds {seeds}. 95% bootstrap intervals; paired differences.",
        "",
    ]
    for metric in ("hit_ratio@1", "ndcg@5"):
        table = {name: values(result, metric) for name, result in results.items()}
        table["zero-shot"] = values(zero, metric)
        for v in variants:
            runs = [json.loads((folder / f"{v}-seed{s}.json").read_text()) for s in seeds]
            table[LABELS[v]] = np.mean([values(r, metric) for r in runs], axis=0)
        lines += [
            f"## {metric} by films before the target",
            "",
            format_breakdown(breakdown(table, lengths), list(table)),
        ]
        llm = ["zero-shot", *(LABELS[v] for v in variants)]
        minus = {f"{name} minus sasrec": table[name] - table["sasrec"] for name in llm}
        minus.update({f"{LABELS[v]} minus zero-shot": table[LABELS[v]] - table["zero-shot"] for v in variants})
        lines += [
            "",
            f"Paired {metric} differences by group:",
            "",
            format_breakdown(breakdown(minus, lengths), list(minus)),
        ]
        lines.append("")
    text = "\n".join(lines)
    (folder / "cold_start.md").write_text(text)
    return text


def final_rewards(runs: Path, name: str) -> str:
    """The last logged `rewards/chosen` of a trained run (from `<name>.train.json`), or "" when not kept."""
    curve = runs / f"{name}.train.json"
    if not curve.is_file():
        return ""
    steps = json.loads(curve.read_text())["steps"]
    return f"{float(steps[-1]['rewards/chosen']):.2f}" if steps else ""


def sampled_report(out_dir: Path, seeds: list[int], variants: list[str]) -> str:
    """Per-seed HR@1 and NDCG@5 of each variant and its paired difference from zero-shot, and the mean over seeds."""
    folder = out_dir / "sampled"
    zero = json.loads((folder / "zero-shot.json").read_text())

    def values(result: dict[str, Any], metric: str) -> np.ndarray:
        ranks = [row["rank"] for row in result["per_user"]]
        return hits_at_k(ranks, 1) if metric == "hit_ratio@1" else ndcg_at_k(ranks, 5)

    lines = [
        "# DMPO K=4 across training seeds: 500 test users, 20 sampled candidates (MovieLens-100K)",
        "",
        f"The models of `runs/` (`TRAIN_FLAGS` plus each variant's flags, one split, training seeds "
        f"{seeds}) ranked by `dmpo-trl evaluate` on the split's saved candidates (uniform negatives), beside the "
        "untrained model; paired bootstrap intervals over the same users. A mean row averages each user's value over "
        "the seeds. `rewards/chosen` is the last logged value of training (how far the chosen titles' log-likelihood "
        "moved from the base model's, times beta): a run that pushes every title down ends far below 0.",
        "",
        "| model | HR@1 | NDCG@5 | HR@1 minus zero-shot | NDCG@5 minus zero-shot | rewards/chosen at the end |",
        "|---|---|---|---|---|---|",
    ]
    users = [row["user"] for row in zero["per_user"]]
    metrics = ("hit_ratio@1", "ndcg@5")
    table = [("zero-shot", {m: values(zero, m) for m in metrics}, "")]
    means: dict[str, dict[str, np.ndarray]] = {}
    for variant in variants:
        per_seed = {s: json.loads((folder / f"{variant}-seed{s}.json").read_text()) for s in seeds}
        for s, result in per_seed.items():
            if [row["user"] for row in result["per_user"]] != users:
                raise ValueError(f"{variant} seed {s}: other users than zero-shot's")
            rewards = final_rewards(out_dir / "runs", f"{variant}-seed{s}")
            table.append((f"{LABELS[variant]}, seed {s}", {m: values(result, m) for m in metrics}, rewards))
        mean = {m: np.mean([values(r, m) for r in per_seed.values()], axis=0) for m in metrics}
        table.append((f"**{LABELS[variant]}, mean of {len(seeds)}**", mean, ""))
        means[variant] = mean
    for label, by_metric, rewards in table:
        cells = [fmt(interval(by_metric[m])) for m in metrics]
        if label == "zero-shot":
            cells += ["", ""]
        else:
            cells += [mark(paired_difference(by_metric[m], values(zero, m))) for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {rewards} |")
    first, *others = variants
    for variant in others:  # the variants against the first, means over seeds, paired on the same users
        cells = [mark(paired_difference(means[variant][m], means[first][m])) for m in metrics]
        versus = f"{LABELS[variant]} minus {LABELS[first]} (means of {len(seeds)} seeds)"
        lines += ["", f"{versus}: HR@1 {cells[0]}, NDCG@5 {cells[1]}."]
    text = "\n".join(lines) + "\n"
    (folder / "seeds.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["dmpo", "dmpo-retriever", "dpo"])
    parser.add_argument("--out_dir", type=Path, default=OUT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--sampled", action="store_true", help="Also rank the models on the 20 sampled candidates.")
    parser.add_argument("--sampled_variants", nargs="+", choices=list(VARIANTS), default=["dmpo", "dmpo-sft"])
    parser.add_argument(
        "--cold", action="store_true", help="With --sampled: also rank the cold-start users (`sampled/cold/`)."
    )
    parser.add_argument("--cold_variants", nargs="+", choices=list(VARIANTS), default=["dmpo-sft"])
    args = parser.parse_args(argv)
    import torch

    from dmpo_trl.ranker_file import read_ranker_config
    from dmpo_trl.settings import PromptSettings

    torch.set_num_threads(args.threads)
    runs = args.out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        needed = [(v, s, runs / f"{v}-seed{s}.json") for v in args.variants for s in args.seeds]
        if args.sampled:
            folder = args.out_dir / "sampled"
            needed += [(v, s, folder / f"{v}-seed{s}.json") for v in args.sampled_variants for s in args.seeds]
        for variant, seed, scores in needed:  # a model is trained only while some of its scores are missing
            if not scores.is_file():
                train(variant, seed, runs / f"{variant}-seed{seed}")
        data = users(runs)
        saved = {name: retrieval(data, name, runs / f"retrieved-{name}.json") for name in ("sasrec", "popular")}
        retrieved = {part: as_retrieved(data, saved["sasrec"], part) for part in PARTS}
        for variant in args.variants:
            for seed in args.seeds:
                folder, scores = runs / f"{variant}-seed{seed}", runs / f"{variant}-seed{seed}.json"
                if scores.is_file():
                    continue
                prompt = PromptSettings(**read_ranker_config(folder)["prompt"])  # as the trained run ranks
                score(None, prompt, data, retrieved, runs / "zero-shot.json")  # the base model (once), same prompt
                score(folder, prompt, data, retrieved, scores)
    print(report(args.out_dir, args.seeds, args.variants))
    if args.sampled:
        if not args.report_only:
            sampled(args.out_dir, args.seeds, args.sampled_variants)
        print(sampled_report(args.out_dir, args.seeds, args.sampled_variants))
    if args.sampled and args.cold:
        if not args.report_only:
            sampled_cold(args.out_dir, args.seeds, args.cold_variants)
        print(sampled_cold_report(args.out_dir, args.seeds, args.cold_variants))


if __name__ == "__main__":
    main()
