"""The quality study's report: `quality.md` (tables), `quality.png` (plot) and `quality.json` (the same figures, the
`config` and `provenance`), written into `--results_dir` from the saved runs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import _DMPO_K, MIN_HISTORY, REGIMES, QualityConfig, parse_method
from .summarize import fmt, summarize


def train_rows(cfg: QualityConfig) -> str:
    per_user = "every item" if cfg.targets_per_user == 0 else f"their last {cfg.targets_per_user} item(s)"
    rows = f", at most {cfg.num_train_rows} rows" if cfg.num_train_rows is not None else ""
    return f"targets: {per_user} with {MIN_HISTORY}+ items before{rows}"


def ranked_count(cfg: QualityConfig) -> str:
    if cfg.evaluate_on == "valid":
        return f"{cfg.num_valid_users} validation users ranked (evaluate_on=valid)"
    return f"{cfg.num_test_users + cfg.more_test_users} test users"


def normalized_beta(methods, cfg: QualityConfig) -> str:
    """The header's note on the beta of length-normalised (`-ln`) methods, if any ran."""
    if any(parse_method(name).length_normalize for name in methods):
        return f" (length-normalised `-ln` methods: per-token rewards, beta {cfg.length_normalized_beta:g})"
    return ""


def regime_table(regime: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    r"""The markdown lines of one candidate regime's section: its heading, a table of `rows` under `columns` and a
    blank line (the quality study's and the classic baselines' reports).

    Example:
    ```python
    >>> print("\n".join(regime_table("uniform", ["method", "HR@1"], [["dpo", "0.25"]])))
    ## Candidates: uniform
    <BLANKLINE>
    | method | HR@1 |
    |---|---|
    | dpo | 0.25 |
    <BLANKLINE>
    ```
    """
    header = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return [f"## Candidates: {regime}", "", *header, *("| " + " | ".join(cells) + " |" for cells in rows), ""]


RANKING_COLUMNS = (
    "method",
    "users",
    "HR@1 (sum)",
    "NDCG@5 (sum)",
    "HR@1 (mean)",
    "NDCG@5 (mean)",
    "generation HR@1",
    "valid",
)


def ranking_cells(name: str, entry: dict[str, Any], regime: str) -> list[str]:
    """One method's row of a regime's table: users, HR@1 and NDCG@5 by summed and per-token likelihood, generation."""
    summed = entry[f"{regime}/sum"]
    mean = entry.get(f"{regime}/mean")
    gen = entry.get(f"{regime}/generation")
    return [
        name,
        str(entry["num_users"]),
        fmt(*summed["hit_ratio@1"]),
        fmt(*summed["ndcg@5"]),
        fmt(*mean["hit_ratio@1"]) if mean else "",
        fmt(*mean["ndcg@5"]) if mean else "",
        fmt(*gen["hit_ratio@1"]) if gen else "",
        f"{gen['valid_ratio']:.3f}" if gen else "",
    ]


def markdown(summary: dict[str, Any], cfg: QualityConfig) -> str:
    from dmpo_trl.models import DEFAULT_MODEL

    methods = summary["methods"]
    lines = [
        f"# Quality study: MovieLens-100K, {cfg.model or DEFAULT_MODEL} + LoRA",
        "",
        f"Seeds {summary['seeds']}; per seed {cfg.num_train_users} train users ({train_rows(cfg)}), "
        f"{ranked_count(cfg)}, "
        f"{cfg.num_candidates} candidates, prompt `{cfg.prompt_style}`, history {cfg.max_history}, training negatives "
        f"`{cfg.train_negatives}`; every method {cfg.num_train_epochs:g} epoch(s), batch {cfg.batch_size}, lr "
        f"{cfg.learning_rate:g}, LoRA r={cfg.lora_r}, beta {cfg.beta:g}{normalized_beta(methods, cfg)}. Means over "
        "the pooled test users with 95% "
        "bootstrap intervals. `sum`: titles ranked by summed log-likelihood; `mean`: per token.",
        "",
    ]
    if cfg.method_settings:
        chosen = ", ".join(
            f"{name} lr {lr:g}, {epochs:g} epoch(s)" for name, (lr, epochs) in cfg.settings_by_method().items()
        )
        note = "`--method_settings`; the README says which were chosen on validation users"
        lines += [f"Except, per method ({note}): {chosen}.", ""]
    for regime in REGIMES:
        rows = (ranking_cells(name, entry, regime) for name, entry in methods.items())
        lines += regime_table(regime, RANKING_COLUMNS, rows)
    lines += [
        "## HitRatio@1 differences (paired bootstrap, summed log-likelihood)",
        "",
        "Same users and candidates, so the interval of the per-user difference decides (a win: it excludes 0).",
        "",
    ]
    if sum(bool(_DMPO_K.match(name)) for name in methods) > 1:
        lines[-2] += (
            " The DMPO row compared is the best K on these test users: a selected maximum, so read its wins as "
            "optimistic; `dmpo-k4 vs dpo` is listed as well."
        )
    lines += ["| regime | method | vs | difference [95% CI] | verdict |", "|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        lines.append(f"| {c['regime']} | {c['a']} | {c['b']} | {fmt(c['diff'], *c['ci95'])} | {c['verdict']} |")
    lines += ["", "## Diagnostics (uniform candidates) and time", ""]
    keys = sorted({k for e in methods.values() for k in e["diagnostics"]})
    lines += ["| method | " + " | ".join(keys) + " | train s | eval s | wall s |", "|---" * (len(keys) + 4) + "|"]
    for name, entry in methods.items():
        d = entry["diagnostics"]
        cells = [f"{d[k]:.3f}" if k in d else "" for k in keys]
        times = [f"{entry['train_seconds']:.0f}", f"{entry['eval_seconds']:.0f}", f"{entry['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join([name, *cells, *times]) + " |")
    total = sum(e["wall_seconds"] for e in methods.values())
    lines += ["", f"Summed wall time of all methods and seeds: {total / 60:.1f} min.", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    names = list(methods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for offset, regime in zip((-0.15, 0.15), REGIMES):
        points = [methods[n][f"{regime}/sum"]["hit_ratio@1"] for n in names]
        xs = np.arange(len(names)) + offset
        means = np.array([p[0] for p in points])
        errors = np.array([[p[0] - p[1], p[2] - p[0]] for p in points]).T
        left.errorbar(xs, means, yerr=errors, fmt="o", capsize=3, label=regime)
    left.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    left.set_ylabel("HitRatio@1 (95% CI)")
    left.set_title("Per method")
    left.legend()
    for regime in REGIMES:
        ks, points = [], []
        if "dpo" in methods:
            ks.append(1)
            points.append(methods["dpo"][f"{regime}/sum"]["hit_ratio@1"])
        for name in sorted((n for n in names if _DMPO_K.match(n)), key=lambda n: int(n[6:])):
            ks.append(int(name[6:]))
            points.append(methods[name][f"{regime}/sum"]["hit_ratio@1"])
        if ks:
            means = np.array([p[0] for p in points])
            errors = np.array([[p[0] - p[1], p[2] - p[0]] for p in points]).T
            right.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=f"DMPO, {regime}")
    for baseline, style in (("popular", "--"), ("random", ":")):
        if baseline in methods:
            right.axhline(
                methods[baseline]["uniform/sum"]["hit_ratio@1"][0], ls=style, c="gray", label=f"{baseline}, uniform"
            )
    right.set_xscale("log", base=2)
    ticks = sorted({1, *(int(n[6:]) for n in names if _DMPO_K.match(n))})
    right.set_xticks(ticks, [str(k) for k in ticks])
    right.set_xlabel("K negatives (K=1: DPO)")
    right.set_title("HitRatio@1 against K")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(cfg: QualityConfig) -> str:
    summary = summarize(cfg)
    if not summary["methods"]:
        raise SystemExit(f"No complete results under {cfg.results_dir}/runs for seeds {cfg.seeds}")
    out = Path(cfg.results_dir)
    text = markdown(summary, cfg)
    (out / "quality.md").write_text(text)
    plot(summary, out / "quality.png")
    public = {
        name: {k: v for k, v in entry.items() if not k.endswith("/per_user")}
        for name, entry in summary["methods"].items()
    }
    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    payload = {
        "config": asdict(cfg),
        "provenance": provenance(cfg.model or DEFAULT_MODEL),
        "methods": public,
        "comparisons": summary["comparisons"],
    }
    (out / "quality.json").write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
    return text


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value))
