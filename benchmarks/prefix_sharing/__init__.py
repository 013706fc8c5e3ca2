"""Prefix sharing vs the unshared forward vs TRL's DPOTrainer on exploded pairs: step time, peak memory, tokens.

SmolLM2-135M-Instruct (the embedded default) + LoRA r=8 on all linear layers, MovieLens-100K rows from the data
builder with the 20-candidate prompt, one row (K+1 responses) per optimizer step, the same rows for every method:

- `shared`: DMPOTrainer with `prefix_sharing=True`
- `naive`: DMPOTrainer with `prefix_sharing=False`
- `trl_pairs`: TRL's DPOTrainer on the row exploded into K (chosen, rejected_k) pairs, all K in one step

Each (method, K) runs in a fresh process so that peak memory is its own: the figure is the resident-set high-water
mark during training minus the resident set once the model and trainer are built (Linux /proc). Step time is the
median over `--steps` optimizer steps after `--warmup`. Evaluation throughput compares ranking 20 candidates per user
with the prompt run once (`shared`) against the prompt repeated per candidate (`naive`).

    python -m benchmarks.prefix_sharing                     # K = 1 2 4 8 16, all methods, + evaluation
    python -m benchmarks.prefix_sharing --k 8 --json        # one JSON line per configuration
    python -m benchmarks.prefix_sharing --check             # exactness on SmolLM2: shared vs unshared log-probs/grads

The sharing policy (`prefix_sharing="auto"`, `dmpo_trl.collator.shares_prompt`) is measured in one process, one
model, the variants interleaved step by step (shared, unshared, auto, shared, ...) on the same rows so that a busy
machine slows them alike; a step is `DMPOTrainer.training_step` (policy and reference forwards, backward, with
gradient checkpointing) plus the optimizer update, one row per step, `max_length=1024`; figures are medians over
`--rounds` rounds, each round on its own row:

    python -m benchmarks.prefix_sharing --policy            # MovieLens K=8, UltraFeedback-shaped, short prompt/long
    python -m benchmarks.prefix_sharing --policy --quick    # one round, MovieLens at K=4
    python -m benchmarks.prefix_sharing --sweep             # step time of each layout against its token counts
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()

from .policy import (  # noqa: E402
    ARM_NAMES,
    ARMS,
    POLICY_SHAPES,
    SWEEP_SHAPES,
    build_step_trainer,
    fit_sweep,
    long_response_rows,
    policy_worker,
    print_policy_table,
    sweep_worker,
    synthetic_row,
    timed_step,
)
from .workers import (  # noqa: E402
    PROGRESS,
    StepTimer,
    check_worker,
    eval_worker,
    lora_config,
    movielens_rows,
    progress,
    reset_peak_rss,
    rss_mb,
    train_worker,
)


__all__ = [
    "ARMS",
    "ARM_NAMES",
    "MARKER",
    "METHODS",
    "POLICY_SHAPES",
    "PROGRESS",
    "SWEEP_SHAPES",
    "StepTimer",
    "build_step_trainer",
    "check_worker",
    "environment",
    "eval_worker",
    "fit_sweep",
    "long_response_rows",
    "lora_config",
    "main",
    "movielens_rows",
    "policy_worker",
    "print_policy_table",
    "print_table",
    "progress",
    "reset_peak_rss",
    "rss_mb",
    "run_in_subprocess",
    "sweep_worker",
    "synthetic_row",
    "timed_step",
    "train_worker",
]

METHODS = ("shared", "naive", "trl_pairs")
MARKER = "RESULT "
ROOT = Path(__file__).resolve().parents[2]


def environment() -> dict:
    """Library versions, git commit and machine, printed with the figures."""
    from importlib.metadata import version

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return result.stdout.strip()

    return {
        "method": "environment",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "-uno") else ""),
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("torch", "transformers", "trl", "peft", "datasets")},
        "cpus": os.cpu_count(),
        "threads": int(os.environ.get("BENCH_THREADS", os.cpu_count())),
        "load_average": os.getloadavg(),
    }


def run_in_subprocess(*worker_args: str) -> list[dict]:
    command = [sys.executable, "-m", "benchmarks.prefix_sharing", "--worker", *worker_args]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # from any folder
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": path}
        )
        stderr = collections.deque(maxlen=100)
        for line in process.stderr:
            if line.startswith(PROGRESS):
                print(line[len(PROGRESS) :].rstrip(), flush=True)
            else:
                stderr.append(line)
        process.wait()
        stdout.seek(0)
        output = stdout.read()
    if process.returncode != 0:
        print("".join(stderr)[-3000:], file=sys.stderr)
        last = stderr[-1].strip() if stderr else f"exit status {process.returncode}"
        return [{"method": worker_args[0], "k": worker_args[1], "error": last}]
    return [json.loads(line[len(MARKER) :]) for line in output.splitlines() if line.startswith(MARKER)]


def print_table(records: list[dict]) -> None:
    train = [r for r in records if r["method"] in METHODS and "step_s" in r]
    if train:
        print(f"\n{'K':>3} {'method':>10} {'step s':>8} {'cpu s':>8} {'peak MB':>8} {'tokens':>7} {'s/shared':>9}")
        for k in sorted({r["k"] for r in train}):
            rows = {r["method"]: r for r in train if r["k"] == k}
            base = rows.get("shared", {}).get("step_s")
            for method in METHODS:
                if method in rows:
                    r = rows[method]
                    ratio = f"{r['step_s'] / base:.2f}x" if base else "-"
                    print(
                        f"{k:>3} {method:>10} {r['step_s']:>8.2f} {r['cpu_s']:>8.2f} {r['peak_mb']:>8.0f} "
                        f"{r['tokens']:>7} {ratio:>9}"
                    )
    for r in records:
        if r["method"].startswith("eval") or r["method"] == "check" or "error" in r:
            print(r)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prefix_sharing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=5, help="users for the evaluation throughput (0: skip)")
    parser.add_argument("--check", action="store_true", help="only the exactness check on SmolLM2")
    parser.add_argument("--json", action="store_true", help="print one JSON line per configuration")
    parser.add_argument("--output", help="also append each configuration's JSON line to this file")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: all cores)")
    parser.add_argument("--policy", action="store_true", help="only shared vs unshared vs auto, interleaved")
    parser.add_argument("--shapes", nargs="+", default=list(POLICY_SHAPES), choices=list(POLICY_SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="--policy/--sweep: interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="--policy: one round, MovieLens at K=4")
    parser.add_argument("--sweep", action="store_true", help="only the step time of each layout against tokens")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "eval":
            records = eval_worker(int(rest[0]))
        elif kind == "check":
            records = [check_worker()]
        elif kind == "policy":
            records = policy_worker(rest[2:], int(rest[0]), int(rest[1]) or None)
        elif kind == "sweep":
            records = sweep_worker(int(rest[0]))
            records.append(fit_sweep(records))
        else:
            records = [train_worker(kind, int(rest[0]), int(rest[1]), int(rest[2]))]
        for record in records:
            print(MARKER + json.dumps(record))  # the Trainer prints its own dicts to stdout too
        return

    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)
    records = []
    if args.policy or args.sweep:
        records.append(environment())
        print(json.dumps(records[-1]), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(records[-1]) + "\n")
    jobs = [("check",)] if args.check else []
    if args.policy:
        rounds, movielens_k = (1, 4) if args.quick else (args.rounds, 0)
        jobs = [("policy", str(rounds), str(movielens_k), *args.shapes)]
    elif args.sweep:
        jobs = [("sweep", str(args.rounds))]
    elif not args.check:
        jobs += [(m, str(k), str(args.steps), str(args.warmup)) for k in args.k for m in args.methods]
        if args.eval_users:
            jobs.append(("eval", str(args.eval_users)))
    for job in jobs:
        for record in run_in_subprocess(*job):
            records.append(record)
            print(json.dumps(record) if args.json else f"done: {record}", flush=True)
            if args.output:
                from dmpo_trl.models import DEFAULT_MODEL
                from dmpo_trl.provenance import provenance

                with open(args.output, "a") as f:
                    f.write(json.dumps({**record, "provenance": provenance(DEFAULT_MODEL)}) + "\n")
    print_table(records)
    print_policy_table(records)
