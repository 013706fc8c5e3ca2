"""Paired differences between two rows of `ranking_results.json` files (what `dmpo-trl train`, `demo` and `evaluate`
save), on the same users and candidates.

Each argument is `FILE:ROW`, a results file and one of its rows (`"dmpo (lora)"`, `"zero-shot"`, ...). The two rows
must have ranked the same users' same candidate lists (checked). This prints and, with `--out`, writes as Markdown
and JSON: each row's HitRatio@1 and NDCG@5 with 95% bootstrap intervals, and A minus B per user with its paired
95% bootstrap interval (`dmpo_trl.metrics.paired_difference`).

    python -m benchmarks.paired_runs benchmarks/results/demo/loss/dmpo-sft.json:"dmpo+sft (lora)" \\
        benchmarks/results/demo/loss/dmpo.json:"dmpo (lora)" --out benchmarks/results/demo/loss/paired.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dmpo_trl.metrics import hits_at_k, interval, ndcg_at_k, paired_difference
from dmpo_trl.provenance import provenance


METRICS = {"hit_ratio@1": lambda ranks: hits_at_k(ranks, 1), "ndcg@5": lambda ranks: ndcg_at_k(ranks, 5)}


def load_row(spec: str) -> tuple[str, list[dict[str, Any]]]:
    """`FILE:ROW` -> (its label, the row's per-user records)."""
    path, _, row = spec.rpartition(":")
    results = json.loads(Path(path).read_text())["results"]
    if row not in results:
        raise SystemExit(f"paired_runs: {path} has no row {row!r}; its rows: {', '.join(results)}")
    return f"{Path(path).name}:{row}", results[row]["per_user"]


def compare(a: str, b: str) -> dict[str, Any]:
    """Both rows' metrics and the paired difference A - B per metric."""
    (label_a, users_a), (label_b, users_b) = load_row(a), load_row(b)
    key = [(u["user"], u["target"], u["candidates"]) for u in users_a]
    if key != [(u["user"], u["target"], u["candidates"]) for u in users_b]:
        raise SystemExit(f"paired_runs: {a} and {b} ranked other users or candidates")
    out: dict[str, Any] = {"a": label_a, "b": label_b, "users": len(key), "metrics": {}}
    for name, per_user in METRICS.items():
        values_a = per_user([u["rank"] for u in users_a])
        values_b = per_user([u["rank"] for u in users_b])
        out["metrics"][name] = {
            "a": interval(values_a),
            "b": interval(values_b),
            "a_minus_b": paired_difference(values_a, values_b),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# `{result['a']}` minus `{result['b']}`",
        "",
        f"{result['users']} users, the same candidates; 95% bootstrap intervals, paired for the difference.",
        "",
        "| metric | A | B | A - B |",
        "|---|---|---|---|",
    ]
    for name, row in result["metrics"].items():
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in (row["a"], row["b"], row["a_minus_b"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="FILE:ROW")
    parser.add_argument("b", help="FILE:ROW")
    parser.add_argument("--out", type=Path, default=None, help="a .md file; the .json goes beside it")
    args = parser.parse_args(argv)
    result = compare(args.a, args.b)
    text = markdown(result)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
        record = {**result, "command": [args.a, args.b], "provenance": provenance()}
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
