"""The main comparison broken down by how many interactions each test user had before the target.

Reads the saved runs of the quality study's main folder (`--quality_dir`, default `benchmarks/results/quality/tuned`)
and of the classic baselines beside it (`--classic_dir`, default `benchmarks/results/classic/tuned`); nothing is
retrained or rescored. Per test user (the rows of the seeds pooled in seed order, as `quality.md` pools them) it takes
HitRatio@1 and NDCG@5 of every method in both candidate regimes, the LLM rows by summed log-likelihood, and the
user's history length: the target's position in the user's sequence of the log (its last index there), i.e. the
number of interactions before it. `dmpo_trl.cold_start.breakdown` then averages each method within each group, with
95% bootstrap intervals, over `HISTORY_GROUPS` (1-2, 3-5, 6-10, 11+) and over `LONG_GROUPS`, 1-10 and then the
doubling continued above 10 (11-20, 21-40, 41-80, 81-160, 161+), since the main comparison's users all had long
histories.

The classic rows are taken only where their saved scores match the main folder's users and candidates: the classic
report's recorded study settings equal the main folder's, each seed has one score list per candidate list, and the
per-user metrics recomputed here give the classic report's own figures (its classic and LLM rows). Otherwise they are
left out and the report says why.

    python -m benchmarks.quality.by_history     # writes by_history.md and by_history.json into --quality_dir
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmpo_trl.cold_start import HISTORY_GROUPS, breakdown, format_breakdown, history_group
from dmpo_trl.metrics import paired_difference

from .config import REGIMES
from .summarize import fmt, per_user_metrics


LONG_GROUPS: tuple[tuple[int, int | None], ...] = ((1, 10), (11, 20), (21, 40), (41, 80), (81, 160), (161, None))
GROUPINGS: dict[str, tuple[tuple[int, int | None], ...]] = {"history_groups": HISTORY_GROUPS, "long": LONG_GROUPS}
METRICS = {"hit_ratio@1": "HR@1", "ndcg@5": "NDCG@5"}
CLASSIC = ("sasrec", "gru4rec", "bpr")
REFERENCE = "dmpo-k4"
VERSUS = ("popular", "sasrec")
# the settings that fix the users and candidates: the classic report must have read a study with these values
SAME_STUDY = (
    "seeds",
    "dataset_name",
    "interactions",
    "items",
    "num_train_users",
    "num_test_users",
    "more_test_users",
    "num_valid_users",
    "evaluate_on",
    "num_candidates",
    "max_history",
)


def history_lengths(sequences: Mapping[str, Sequence[str]], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Per row (`{"user": ..., "target": ...}`), the number of the user's interactions before the target: the target's
    last index in the user's sequence of `sequences`.

    Example:
    ```python
    >>> history_lengths({"u": ["a", "b", "a", "c"]}, [{"user": "u", "target": "a"}, {"user": "u", "target": "c"}])
    [2, 3]
    ```
    """
    out = []
    for k, row in enumerate(rows):
        for field in ("user", "target"):
            if field not in row:
                raise ValueError(f"row {k}: no {field!r} field")
        user, target = row["user"], row["target"]
        if user not in sequences:
            raise ValueError(f"row {k}: user {user!r} (field 'user') is not in the log")
        sequence = list(sequences[user])
        if target not in sequence:
            raise ValueError(f"row {k}: target {target!r} (field 'target') is not in user {user!r}'s sequence")
        out.append(len(sequence) - 1 - sequence[::-1].index(target))
    return out


def tables(
    per_user: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    lengths: Sequence[int],
    groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """`{regime: {metric: breakdown}}` from `per_user[regime][method][metric]` (one value per row of `lengths`):
    `dmpo_trl.cold_start.breakdown` of every method, one metric at a time.

    Example:
    ```python
    >>> out = tables({"uniform": {"m": {"hit_ratio@1": [1, 0, 1]}}}, [1, 4, 30])
    >>> out["uniform"]["hit_ratio@1"]["11+"]["num_users"], out["uniform"]["hit_ratio@1"]["11+"]["m"][0]
    (1, 1.0)
    ```
    """
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for regime, methods in per_user.items():
        metrics = list(dict.fromkeys(metric for values in methods.values() for metric in values))
        out[regime] = {
            metric: breakdown({name: values[metric] for name, values in methods.items()}, lengths, groups)
            for metric in metrics
        }
    return out


def differences(
    per_user: Mapping[str, Mapping[str, Sequence[float]]],
    lengths: Sequence[int],
    reference: str,
    others: Sequence[str],
    groups: Sequence[tuple[int, int | None]] = HISTORY_GROUPS,
) -> dict[str, dict[str, tuple[float, float, float] | None]]:
    """`{other: {group: (mean, low, high)}}`: the paired bootstrap interval of `reference - other` (per-user values
    `per_user[method]`, one per row of `lengths`) within each group; None for a group without users. An `other`
    missing from `per_user` is left out.

    Example:
    ```python
    >>> out = differences({"a": [1, 1, 0], "b": [0, 1, 0]}, [1, 2, 12], "a", ["b"])
    >>> out["b"]["1-2"][0], out["b"]["11+"][0], out["b"]["3-5"]
    (0.5, 0.0, None)
    ```
    """
    labels = [history_group(n, groups) for n in lengths]
    ref = np.asarray(per_user[reference], dtype=np.float64)
    out: dict[str, dict[str, tuple[float, float, float] | None]] = {}
    for other in others:
        if other not in per_user or other == reference:
            continue
        values = np.asarray(per_user[other], dtype=np.float64)
        if values.shape != ref.shape or ref.shape[0] != len(lengths):
            raise ValueError(f"{other}: {values.shape[0]} per-user values, {reference}: {ref.shape[0]}, rows: "
                             f"{len(lengths)}")  # fmt: skip
        out[other] = {}
        for low, _ in groups:
            label = history_group(low, groups)
            mask = np.array([lab == label for lab in labels], dtype=bool)
            out[other][label] = paired_difference(ref[mask], values[mask]) if mask.any() else None
    return out


# --- reading the saved runs -------------------------------------------------------------------------------------


def _rows(candidates: dict[int, dict]) -> list[dict]:
    """The ranked rows (user, target) of every seed, pooled in seed order as `per_user_metrics` pools them."""
    return [row for seed in sorted(candidates) for row in candidates[seed][REGIMES[0]]]


def classic_per_user(
    classic_dir: Path, quality: dict[str, Any], candidates: dict[int, dict], llm: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], str | None]:
    """`({method: {regime: {metric: per-user values}}}, None)` for the classic report's chosen settings, or
    `({}, why)` where its saved scores cannot be matched to the main folder's users and candidates."""
    from benchmarks.classic_baselines import as_run, setting_key

    path = classic_dir / "classic.json"
    if not path.is_file():
        return {}, f"`{path}` does not exist"
    saved = json.loads(path.read_text())
    differ = [k for k in SAME_STUDY if saved.get("quality_config", {}).get(k) != quality["config"].get(k)]
    if differ:
        return {}, f"its study settings differ from the main folder's: {', '.join(differ)}"
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name in CLASSIC:
        if name not in saved.get("selection", {}):
            continue
        key = setting_key(saved["selection"][name]["chosen"])
        runs = []
        for seed in sorted(candidates):
            run_path = classic_dir / "runs" / f"seed{seed}" / f"{name}__{key}.json"
            if not run_path.is_file():
                return {}, f"`{run_path}` (the chosen {name} setting) does not exist"
            run_ = as_run(json.loads(run_path.read_text()), "test")
            for regime in REGIMES:
                if len(run_["scores"][regime]["score"]) != len(candidates[seed][regime]):
                    return {}, f"{name} seed {seed} {regime}: other number of users than the main folder's"
            runs.append(run_)
        out[name] = {regime: per_user_metrics(runs, candidates, regime, "sum") for regime in REGIMES}
    # the classic report's own figures, recomputed from these scores and the main folder's candidates
    for name, entry in {**out, **llm}.items():
        figures = saved.get("methods", {}).get(name)
        if figures is None:
            continue
        for regime in REGIMES:
            for metric in METRICS:
                if not np.isclose(float(np.mean(entry[regime][metric])), figures[regime][metric][0], atol=1e-9):
                    return {}, f"{name} {regime} {metric}: the scores do not give the classic report's figure"
    return out, None


def summarize(quality_dir: Path, classic_dir: Path | None) -> dict[str, Any]:
    """Every figure of the report (the JSON), read from the saved runs."""
    from benchmarks.classic_baselines import quality_config

    from .data import load_log
    from .summarize import load_results

    quality_dir = Path(quality_dir)
    if not (quality_dir / "quality.json").is_file():
        raise ValueError(f"{quality_dir}: no quality.json (run `python -m benchmarks.quality --report_only` first)")
    quality = json.loads((quality_dir / "quality.json").read_text())
    cfg = quality_config(quality_dir)
    results, candidates = load_results(cfg)
    if not candidates:
        raise ValueError(f"{quality_dir}: no runs/seed*/candidates.json")
    complete = {name: runs for name, runs in results.items() if len(runs) == len(candidates)}
    llm = {name: {r: per_user_metrics(runs, candidates, r, "sum") for r in REGIMES} for name, runs in complete.items()}
    classic, why = ({}, "not asked for (`--classic_dir none`)")
    if classic_dir is not None:
        classic, why = classic_per_user(Path(classic_dir), quality, candidates, llm)
    order = [m for m in cfg.methods if m in ("random", "popular")] + [m for m in CLASSIC if m in classic]
    order += [m for m in cfg.methods if m not in order]
    methods = {**llm, **classic}
    order = [m for m in order if m in methods]

    rows = _rows(candidates)
    lengths = history_lengths(load_log(cfg).sequences, rows)
    per_regime = {r: {m: methods[m][r] for m in order} for r in REGIMES}
    summary: dict[str, Any] = {
        "quality_dir": quality_dir.as_posix(),
        "classic_dir": None if classic_dir is None else Path(classic_dir).as_posix(),
        "scoring": "sum",
        "seeds": sorted(candidates),
        "num_candidates": cfg.num_candidates,
        "rows": len(rows),
        "distinct_users": len({row["user"] for row in rows}),
        "history_length": {
            "min": int(min(lengths)),
            "median": float(np.median(lengths)),
            "max": int(max(lengths)),
        },
        "methods": order,
        "classic": {
            "included": [m for m in CLASSIC if m in classic],
            "left_out_because": why,
            "settings": {},
        },
        "groups": {name: [list(g) for g in groups] for name, groups in GROUPINGS.items()},
        "tables": {},
        "differences": {},
    }
    if classic_dir is not None and classic:
        saved = json.loads((Path(classic_dir) / "classic.json").read_text())
        summary["classic"]["settings"] = {m: saved["selection"][m]["chosen"] for m in classic}
    for grouping, groups in GROUPINGS.items():
        summary["tables"][grouping] = tables(per_regime, lengths, groups)
        summary["differences"][grouping] = {
            regime: differences(
                {m: per_regime[regime][m]["hit_ratio@1"] for m in order}, lengths, REFERENCE, VERSUS, groups
            )
            for regime in REGIMES
            if REFERENCE in order
        }
    return summary


# --- the report -------------------------------------------------------------------------------------------------


def markdown(summary: dict[str, Any]) -> str:
    """`by_history.md` from `summarize(...)`."""
    h, order = summary["history_length"], summary["methods"]
    classic = summary["classic"]
    if classic["included"]:
        chosen = "; ".join(f"{m} `{json.dumps(s)}`" for m, s in classic["settings"].items())
        classic_text = (
            f"{', '.join(classic['included'])}: the settings `{summary['classic_dir']}` chose ({chosen}), their saved "
            "scores of the same candidate lists (matched: the classic report's study settings equal this folder's, "
            "and its HR@1 and NDCG@5 of every row are recomputed here from these scores and this folder's candidates)."
        )
    else:
        classic_text = f"The classic rows are left out: {classic['left_out_because']}."
    lines = [
        "# The main comparison by history length before the target",
        "",
        f"The {summary['rows']} test rows of `{summary['quality_dir']}` (seeds {summary['seeds']}, pooled as "
        f"`quality.md` pools them: {summary['distinct_users']} distinct users, a user drawn by both seeds counted "
        f"once per seed), {summary['num_candidates']} candidates, both regimes. LLM rows ranked by summed "
        "log-likelihood (the `sum` columns of "
        f"`quality.md`). {classic_text} History length: the user's interactions before the target in the "
        "MovieLens-100K log (the target's last position in the user's sequence). Means with 95% bootstrap "
        "intervals; differences with 95% paired bootstrap intervals (same users and candidates).",
        "",
        "The test targets are each user's last item, and the split keeps only targets with at least 5 interactions "
        "before them (`min_history`); every MovieLens-100K user has at least 20 ratings, so these users had "
        f"{h['min']} to {h['max']} interactions before the target (median {h['median']:g}). The 1-2, 3-5 and 6-10 "
        "groups of `dmpo_trl.cold_start.HISTORY_GROUPS` are therefore empty here and the 11+ row is the main table; "
        "the second part splits it further, doubling the bounds (1-10 as one group, empty here, then 11-20, ..., "
        "161+). The LLM's prompt shows the last 5 titles whatever the history length, while SASRec reads the last 20 "
        "items and BPR the whole history. "
        "The cold-start users (targets drawn early, so that every group of `HISTORY_GROUPS` has users) are measured "
        "in `benchmarks/results/two_stage/ml100k` (`sampled/cold` and the two-stage cold set) and "
        "`benchmarks/results/classic/few-shot/cold_start.md`.",
        "",
    ]
    titles = {
        "history_groups": "`HISTORY_GROUPS` (1-2, 3-5, 6-10, 11+)",
        "long": "11+ split further (1-10, 11-20, 21-40, 41-80, 81-160, 161+)",
    }
    for grouping, by_regime in summary["tables"].items():
        lines += [f"## {titles.get(grouping, grouping)}", ""]
        for regime, by_metric in by_regime.items():
            for metric, table in by_metric.items():
                lines += [f"### {METRICS.get(metric, metric)}, candidates: {regime}", ""]
                lines += [format_breakdown(table, order), ""]
        diffs = summary["differences"].get(grouping, {})
        if any(diffs.values()):
            lines += [f"### HR@1 differences: {REFERENCE} minus each (paired, per group)", ""]
            groups = list(next(iter(by_regime.values()))["hit_ratio@1"])
            lines += ["| regime | minus | " + " | ".join(groups) + " |", "|---" * (len(groups) + 2) + "|"]
            for regime, by_other in diffs.items():
                for other, by_group in by_other.items():
                    cells = [fmt(*by_group[g]) if by_group[g] is not None else "-" for g in groups]
                    lines.append(f"| {regime} | {other} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += [
        "Made by `python -m benchmarks.quality.by_history` from the saved runs (nothing retrained or rescored).",
        "",
    ]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality.by_history", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quality_dir", type=Path, default=Path("benchmarks/results/quality/tuned"))
    parser.add_argument(
        "--classic_dir",
        default="benchmarks/results/classic/tuned",
        help="The classic baselines' folder on the same users and candidates ('none': LLM and simple rows only).",
    )
    parser.add_argument("--out_dir", type=Path, default=None, help="Default: --quality_dir.")
    args = parser.parse_args(argv)
    classic_dir = None if args.classic_dir == "none" else Path(args.classic_dir)
    try:
        summary = summarize(args.quality_dir, classic_dir)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    out = args.out_dir or args.quality_dir
    text = markdown(summary)
    (out / "by_history.md").write_text(text)
    (out / "by_history.json").write_text(json.dumps(_jsonable(summary), indent=1) + "\n")
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
