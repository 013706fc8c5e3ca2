"""Ranking throughput: users per second for one process, two processes, and several users per forward.

The embedded SmolLM2-135M-Instruct ranks the same MovieLens-100K test users (20 candidates, history prompt, summed
log-likelihood, prefix sharing) in every configuration:

- `1 process`: `evaluate_ranking` with `--threads` torch threads;
- `2 processes`: the same call under `torchrun --nproc_per_node 2` (one thread each): the users are split across
  the processes and gathered;
- `1 process, U users/forward`: `users_per_forward=U`, one packed row per user in one padded batch.

Every configuration's ranks are checked against the first one's (the same users, candidates and scores), and the
table gives users per second and the speed-up over one process. Results go to `--output` (JSON with provenance).

    python -m benchmarks.ranking_throughput --num_users 24
    python -m benchmarks.ranking_throughput --num_users 8 --users_per_forward 4   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def rank(num_users: int, users_per_forward: int, threads: int, output: str | None) -> dict:
    """Rank `num_users` test users once (in this process, or in this torchrun worker); returns the result."""
    import torch

    torch.set_num_threads(threads)
    from dmpo_trl.data import few_shot_split, load_dataset_by_name
    from dmpo_trl.evaluation import evaluate_ranking
    from dmpo_trl.models import load_model_and_tokenizer

    log = load_dataset_by_name("movielens-100k")
    test = few_shot_split(log, num_train_users=0, num_valid_users=0, num_test_users=num_users, max_history=5).test
    model, tokenizer = load_model_and_tokenizer()
    started = time.perf_counter()
    result = evaluate_ranking(
        model, tokenizer, test, log, num_candidates=20, seed=0, progress=False,
        users_per_forward=users_per_forward, output=output,
    )  # fmt: skip
    result["ranking_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_users", type=int, default=24)
    parser.add_argument("--users_per_forward", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the one-process runs")
    parser.add_argument("--output", default=None, help="write the figures there as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a torchrun worker's result file
    args = parser.parse_args(argv)
    if args.worker:
        rank(args.num_users, 1, 1, args.worker)
        return 0

    rows = []

    def record(name: str, result: dict, wall_s: float) -> None:
        rows.append({"configuration": name, "users": result["metrics"]["num_users"], "ranking_s": wall_s})
        rows[-1]["ranks"] = [user["rank"] for user in result["per_user"]]
        print(f"{name}: {wall_s:.1f} s", flush=True)

    single = rank(args.num_users, 1, args.threads, None)
    record(f"1 process, {args.threads} threads", single, single["ranking_s"])

    folder = Path(tempfile.mkdtemp(prefix="dmpo-ranking-"))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29555", __file__]
    command += ["--num_users", str(args.num_users), "--worker", str(folder / "two.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    two = json.loads((folder / "two.json").read_text())
    # the workers' own ranking time (the launch and model loading are paid once per job, as in the 1-process run)
    record("2 processes, 1 thread each", two, two["wall_time_s"])
    shutil.rmtree(folder, ignore_errors=True)

    for users in args.users_per_forward:
        batched = rank(args.num_users, users, args.threads, None)
        record(f"1 process, {users} users/forward", batched, batched["ranking_s"])

    base = rows[0]["ranking_s"]
    print()
    print("| configuration | users | ranking (s) | users/s | x 1 process | same ranks |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        same, speed = row["ranks"] == rows[0]["ranks"], row["users"] / row["ranking_s"]
        print(
            f"| {row['configuration']} | {row['users']} | {row['ranking_s']:.1f} | {speed:.2f} "
            f"| {base / row['ranking_s']:.2f}x | {same} |"
        )
    if args.output:
        from dmpo_trl.journal import atomic_write_text
        from dmpo_trl.provenance import provenance

        record_ = {"settings": vars(args), "rows": rows, "provenance": provenance()}
        atomic_write_text(args.output, json.dumps(record_, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
