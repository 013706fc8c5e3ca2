"""Several rows per packed sequence (`pack_rows`) against one row per sequence (today's packed layout), side by side.

SmolLM2-135M-Instruct (the embedded default) + LoRA r=8 on all linear layers, fp32, gradient checkpointing (TRL's
default), MovieLens-100K rows with K=4 rejected titles, `max_length=1024`, in one process on one model. For each row
shape and batch size, every round takes its own batch of rows and runs a training step (`DMPOTrainer.training_step`:
policy and reference forwards, backward, optimizer update) in each layout back to back:

- `one_row`: the prefix-shared layout of today, one packed row per sequence, padded to the longest
  (`prefix_sharing="auto"` shares every batch here; the figure `auto_shares` says so)
- `pack`: `pack_rows=True`, rows grouped for the fewest padded tokens, up to 4096 tokens per sequence
- `auto`: `pack_rows="auto"`, rows grouped for the lowest `layout_cost` (timed only where its layout differs from
  both others; otherwise the record names the arm whose layout it is)

Row shapes: `history` is the library's default prompt (the user's history, ~200-250 tokens per packed row),
`mixed` alternates history rows with candidate-list rows (~500 tokens), so a batch pads its short rows a lot.
Tokens per step are counted in the policy forward: `real` (attention_mask) and `padded` (the batch tensor).

    python -m benchmarks.row_packing                      # batch 4 and 8, both shapes, 2 rounds
    python -m benchmarks.row_packing --rounds 1 --batch-sizes 4 --shapes history
    python -m benchmarks.row_packing --output benchmarks/results/row_packing/cpu/row_packing.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks.prefix_sharing import build_step_trainer, timed_step  # (sets the offline/OpenMP defaults)


ARMS = {"one_row": False, "pack": True, "auto": "auto"}
SHAPES = ("history", "mixed")


def movielens_rows(num_users: int, k: int, prompt_style: str | None, seed: int = 0) -> list[dict]:
    from dmpo_trl.data import build_preference_dataset, few_shot_split, load_movielens

    log = load_movielens("movielens-100k")
    split = few_shot_split(log, num_train_users=num_users, num_valid_users=0, num_test_users=0, seed=seed)
    rows = build_preference_dataset(log, split.train, num_negatives=k, prompt_style=prompt_style, seed=seed)
    return [{**row, "rejected": list(row["rejected"])} for row in rows]


def shape_rows(shape: str, count: int, k: int) -> list[dict]:
    history = movielens_rows(count, k, None)
    if shape == "history":
        return history
    candidates = movielens_rows(count, k, "candidates")
    return [history[i] if i % 2 == 0 else candidates[i] for i in range(count)]


def run(shapes: list[str], batch_sizes: list[int], rounds: int, k: int) -> list[dict]:
    import torch

    from dmpo_trl import DataCollatorForMultiPreference

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    per_shape = rounds * sum(batch_sizes)
    rows = [row for shape in shapes for row in shape_rows(shape, per_shape, k)]
    trainer = build_step_trainer(rows)
    pad = trainer.processing_class.pad_token_id
    collators = {
        name: DataCollatorForMultiPreference(pad, max_length=1024, share_prompt=True, pack_rows=pack)
        for name, pack in ARMS.items()
    }
    today = DataCollatorForMultiPreference(pad, max_length=1024, share_prompt="auto")
    dataset = trainer.train_dataset
    assert len(dataset) == len(rows), "rows were dropped"
    for name in ("one_row", "pack"):  # warm-up: first-step allocations of each layout
        timed_step(trainer, collators[name]([dataset[0], dataset[1]]))
    results, start = [], 0
    for shape in shapes:
        for batch_size in batch_sizes:
            times = {name: [] for name in ARMS}
            tokens = {name: [] for name in ARMS}
            auto_same_as, auto_shares = [], 0
            for round_index in range(rounds):
                examples = [dataset[i] for i in range(start, start + batch_size)]
                start += batch_size
                auto_shares += today.uses_shared_layout(examples)
                batches = {name: collator(examples) for name, collator in collators.items()}
                same = [
                    name
                    for name in ("one_row", "pack")
                    if batches["auto"]["input_ids"].equal(batches[name]["input_ids"])
                ]
                auto_same_as.append(same[0] if same else None)
                for name, batch in batches.items():
                    tokens[name].append(
                        (int(batch["attention_mask"].sum()), batch["input_ids"].numel(), *batch["input_ids"].shape)
                    )
                    if name == "auto" and same:
                        continue
                    times[name].append(timed_step(trainer, batch))
                    progress(f"{shape} batch {batch_size} round {round_index + 1} {name}: {times[name][-1]:.1f} s")
            record = {
                "shape": shape,
                "batch_size": batch_size,
                "k": k,
                "rounds": rounds,
                "auto_shares": f"{auto_shares}/{rounds}",
                "auto_layout_same_as": auto_same_as,
            }
            for name in ARMS:
                real, padded, sequences, length = (statistics.median(values) for values in zip(*tokens[name]))
                record[f"{name}_real_tokens"], record[f"{name}_padded_tokens"] = round(real), round(padded)
                record[f"{name}_sequences"], record[f"{name}_length"] = sequences, round(length)
                if times[name]:
                    record[f"{name}_step_s"] = round(statistics.median(times[name]), 2)
                    record[f"{name}_all_s"] = [round(t, 2) for t in times[name]]
            record["pack_over_one_row_padded_tokens"] = round(
                record["pack_padded_tokens"] / record["one_row_padded_tokens"], 3
            )
            record["pack_over_one_row_step"] = round(
                statistics.median(p / o for p, o in zip(times["pack"], times["one_row"])), 3
            )
            results.append(record)
    return results


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_table(records: list[dict]) -> None:
    print(
        f"\n{'shape':>8} {'B':>2} {'layout':>8} {'seqs':>4} {'length':>6} {'real tok':>8} {'padded tok':>10} "
        f"{'step s':>7} {'x one_row (paired)':>18}"
    )
    for r in records:
        for name in ARMS:
            step = r.get(f"{name}_step_s")
            if name == "pack":
                ratio = f"{r['pack_over_one_row_step']:.2f}x"
            elif name == "auto" and step and r.get("one_row_step_s"):
                ratio = f"{step / r['one_row_step_s']:.2f}x"
            else:
                ratio = "-" if name == "auto" else "1.00x"
            step_text = f"{step:.1f}" if step else f"={r['auto_layout_same_as']}"
            print(
                f"{r['shape']:>8} {r['batch_size']:>2} {name:>8} {r[f'{name}_sequences']:>4} {r[f'{name}_length']:>6} "
                f"{r[f'{name}_real_tokens']:>8} {r[f'{name}_padded_tokens']:>10} {step_text:>7} {ratio:>18}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="batches per (shape, batch size), arms interleaved")
    parser.add_argument("--k", type=int, default=4, help="rejected responses per row")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--output", help="append one JSON line per (shape, batch size) to this file")
    args = parser.parse_args()
    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)

    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    settings = {key: value for key, value in vars(args).items() if key != "output"}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    records = run(args.shapes, args.batch_sizes, args.rounds, args.k)
    context = {
        "benchmark": "row_packing",
        "date": started,
        "settings": {**settings, "threads": int(os.environ.get("BENCH_THREADS", os.cpu_count()))},
        "load_average": os.getloadavg(),
        "provenance": provenance(DEFAULT_MODEL),
    }
    for record in records:
        print(json.dumps(record), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps({**record, **context}) + "\n")
    print_table(records)
    print(json.dumps(context["settings"]), context["date"], "load", context["load_average"])


if __name__ == "__main__":
    main()
