"""Large logs: seconds and peak memory to load, split and build preference rows for a MovieLens-25M-shaped log.

Writes a synthetic log (`dmpo_trl.data.synthetic`: seeded numpy, Zipf-like item popularity, long-tailed user counts
of at least 20 events) in GroupLens layout, then times each stage in a fresh process, so the peak resident memory
(VmHWM from /proc, see `peak_gb`) is that of the stages alone, not of writing the file:

- load: `load_grouplens(folder, engine=...)` (ratings file -> `InteractionLog`, every check included),
- split: `leave_last_out(log)` (the library default: history of up to 10 items),
- build: `build_preference_dataset(log, splits["train"], num_negatives=4)`: one row per user, the leave-last-out
  train target, K=4 uniform negatives, the history prompt (library defaults), rendered and stored in a
  `datasets.Dataset`.

Shapes: MovieLens-25M (162,541 users, 59,047 items, 25,000,095 events; `ratings.csv` + `movies.csv`) and
MovieLens-1M (6,040 users, 3,706 items, 1,000,209 events; `ratings.dat` + `movies.dat` with "::"). Engines: "arrow"
(the default path) and "pandas" (the plain path); the pandas engine runs at the 1M shape and, with
`--pandas_at_25m`, at 25M too. Generating the files is timed apart and counted in no stage.

    python -m benchmarks.large_log                   # both shapes; results in benchmarks/results/large_log/synthetic/
    python -m benchmarks.large_log --pandas_at_25m   # also the plain path at 25M (minutes, ~9 GB)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

SHAPES = {
    "movielens-25m": dict(num_users=162_541, num_items=59_047, num_events=25_000_095, layout="25m"),
    "movielens-1m": dict(num_users=6_040, num_items=3_706, num_events=1_000_209, layout="1m"),
}
TARGET_SECONDS, TARGET_GB = 180.0, 8.0  # for the 25M shape: load + split + build
STAGES = ("load", "split", "build")


def peak_gb() -> float:
    """This process's peak resident memory in GB: VmHWM, which starts afresh at exec (Linux's `ru_maxrss` keeps the
    parent's resident memory at fork as a floor); `ru_maxrss` where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def measure(folder: str, engine: str, num_negatives: int) -> dict:
    """Run the three stages in this process; seconds and peak memory after each."""
    import datasets

    from dmpo_trl.data import build_preference_dataset, leave_last_out, load_grouplens

    datasets.disable_progress_bars()
    result = {"engine": engine, "peak_gb_after_imports": peak_gb(), "seconds": {}, "peak_gb_after": {}}
    start = time.perf_counter()
    log = load_grouplens(folder, engine=engine)
    result["seconds"]["load"] = time.perf_counter() - start
    result["peak_gb_after"]["load"] = peak_gb()
    start = time.perf_counter()
    splits = leave_last_out(log)
    result["seconds"]["split"] = time.perf_counter() - start
    result["peak_gb_after"]["split"] = peak_gb()
    start = time.perf_counter()
    rows = build_preference_dataset(log, splits["train"], num_negatives=num_negatives)
    result["seconds"]["build"] = time.perf_counter() - start
    result["peak_gb_after"]["build"] = peak_gb()
    result["total_seconds"] = sum(result["seconds"].values())
    result["peak_gb"] = peak_gb()
    lengths = [len(s) for s in log.sequences.values()]
    # digests of the whole log and of every row, to compare the engines (computed after the timed stages)
    text = "\n".join(f"{user}:{' '.join(items)}" for user, items in log.sequences.items())
    result["log"] = {"users": log.num_users, "items": log.num_items, "events": sum(lengths), "sha256": sha(text)}
    result["rows"] = len(rows)
    result["rows_sha256"] = sha(json.dumps(rows.select_columns(["prompt", "chosen", "rejected", "user"]).to_dict()))
    # the first 1000 rows' negatives: K distinct titles, none of an item the user touched (the target included)
    for row in rows.select(range(min(1000, len(rows)))):
        rejected = {completion[1:] for completion in row["rejected"]}  # completions are " <title>"
        touched = {log.titles[item] for item in log.sequences[row["user"]]}
        if len(rejected) != num_negatives or rejected & touched:
            raise RuntimeError(f"invalid negatives for user {row['user']!r}: {row['rejected']}")
    result["checked_rows"] = min(1000, len(rows))
    return result


def run_child(*arguments: str) -> dict:
    """Run this script with `arguments` in a fresh process; its last output line, as JSON."""
    command = [sys.executable, __file__, *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def generate(folder: str, shape: dict, seed: int) -> dict:
    from dmpo_trl.data.synthetic import write_grouplens

    start = time.perf_counter()
    write_grouplens(folder, seed=seed, **shape)
    return {"generate_seconds": time.perf_counter() - start, "generate_peak_gb": peak_gb()}


def markdown(records: list[dict], settings: dict) -> str:
    lines = [
        "# Large logs: load -> split -> build preference rows",
        "",
        f"Synthetic logs in GroupLens layout (`benchmarks/large_log.py`, seed {settings['seed']}); one row per user "
        f"(leave-last-out train target, history of up to 10 items, K={settings['num_negatives']} uniform negatives, "
        "history prompt), stored as a `datasets.Dataset`. Each engine ran in a fresh process; peak memory is that "
        f"process's peak resident memory (VmHWM). Machine: {settings['machine']}. Target for the 25M shape: under "
        f"{TARGET_SECONDS:.0f} s and {TARGET_GB:.0f} GB.",
        "",
        "| shape | engine | events | users | rows | generate (s, not counted) | load (s) | split (s) | build (s) | "
        "total (s) | peak memory (GB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        s = r["seconds"]
        lines.append(
            f"| {r['shape']} | {r['engine']} | {r['log']['events']:,} | {r['log']['users']:,} | {r['rows']:,} | "
            f"{r['generate_seconds']:.1f} | {s['load']:.1f} | {s['split']:.1f} | {s['build']:.1f} | "
            f"{r['total_seconds']:.1f} | {r['peak_gb']:.2f} |"
        )
    for shape in dict.fromkeys(r["shape"] for r in records):
        by_engine = {r["engine"]: r for r in records if r["shape"] == shape}
        if {"arrow", "pandas"} <= set(by_engine):
            a, p = by_engine["arrow"], by_engine["pandas"]
            lines += [
                "",
                f"{shape}: the arrow engine takes {a['total_seconds'] / p['total_seconds']:.2f}x the pandas engine's "
                f"time (load alone {a['seconds']['load'] / p['seconds']['load']:.2f}x) and "
                f"{a['peak_gb'] / p['peak_gb']:.2f}x its peak memory. Same log (sha256 of every sequence): "
                f"{'yes' if a['log'] == p['log'] else 'NO'}; same rows (sha256 of every prompt, chosen and rejected): "
                f"{'yes' if a['rows_sha256'] == p['rows_sha256'] else 'NO'}.",
            ]
    big = [r for r in records if r["shape"] == "movielens-25m" and r["engine"] == "arrow"]
    if big:
        ok = big[0]["total_seconds"] < TARGET_SECONDS and big[0]["peak_gb"] < TARGET_GB
        lines += ["", f"25M target ({TARGET_SECONDS:.0f} s, {TARGET_GB:.0f} GB) met by the arrow engine: "
                  f"{'yes' if ok else 'no'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--num_users", type=int, help="override the first shape's users (with --num_items, ...)")
    parser.add_argument("--num_items", type=int)
    parser.add_argument("--num_events", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_negatives", type=int, default=4)
    parser.add_argument("--pandas_at_25m", action="store_true", help="also time the plain path at the 25M shape")
    parser.add_argument("--work_dir", help="where the files are written (default: a temporary folder)")
    parser.add_argument("--out_dir", default="benchmarks/results/large_log/synthetic")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="arrow", help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.engine, args.num_negatives)))
        return
    if args.generate:
        print(json.dumps(generate(args.generate, json.loads(args.shape), args.seed)))
        return

    from dmpo_trl.provenance import library_versions, provenance

    k = args.num_negatives
    made_by = provenance()  # the commit measured: recorded before anything runs
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="large_log_"))
    records = []
    for index, shape_name in enumerate(args.shapes):
        shape = dict(SHAPES[shape_name])
        if index == 0:
            shape.update({k: getattr(args, k) for k in ("num_users", "num_items", "num_events") if getattr(args, k)})
        folder = work / shape_name
        generated = run_child("--generate", str(folder), "--shape", json.dumps(shape), "--seed", str(args.seed))
        seconds = generated["generate_seconds"]
        print(f"{shape_name}: wrote {shape['num_events']:,} events to {folder} in {seconds:.1f} s", flush=True)
        engines = ["arrow", "pandas"] if shape_name != "movielens-25m" or args.pandas_at_25m else ["arrow"]
        for engine in engines:
            record = {"shape": shape_name, **shape, **generated}
            record.update(run_child("--measure", str(folder), "--engine", engine, "--num_negatives", str(k)))
            records.append(record)
            s = record["seconds"]
            print(
                f"  {engine:6s} load {s['load']:6.1f} s  split {s['split']:5.1f} s  build {s['build']:5.1f} s  "
                f"total {record['total_seconds']:6.1f} s  peak {record['peak_gb']:.2f} GB  rows {record['rows']:,}",
                flush=True,
            )
    settings = {
        "seed": args.seed,
        "num_negatives": args.num_negatives,
        "shapes": {name: SHAPES[name] for name in args.shapes},
        "split": "leave_last_out(log) defaults (max_history=10, min_history=1); rows from splits['train']",
        "build": "build_preference_dataset defaults (prompt_style=None: history, negative_strategy='uniform')",
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}",
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(records, settings)
    (out / "large_log.md").write_text(text)
    payload = {
        "provenance": made_by,
        "data_libraries": library_versions(("numpy", "pandas", "pyarrow", "datasets")),
        "settings": settings,
        "target": {"seconds": TARGET_SECONDS, "peak_gb": TARGET_GB},
        "records": records,
    }
    (out / "large_log.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
