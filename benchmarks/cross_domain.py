"""Cross-domain transfer: train DMPO on one domain's users and items, rank another domain's candidates.

The test rows are the same for every method: users of the target domain (none of whom trained anything), their
last target-domain item as the target, their target-domain history in the prompt, and `num_candidates` uniform
candidates drawn from the target domain alone. Methods:

- `random`, `popular` (target-domain counts, the evaluated targets left out), `zero-shot` (the untrained model);
- `dmpo-kK-cross`: DMPO with K negatives + LoRA, trained on source-domain rows of source-domain users;
- `dmpo-kK-in`: the same training on target-domain rows of other target-domain users (the in-domain reference).

Domains, one log with item labels (MovieLens-100K genres by default; an item with labels of both domains is left
out of both, with a warning that says how many):

    python -m benchmarks.cross_domain                                  # Action/Adventure/... -> Comedy/Romance/...
    python -m benchmarks.cross_domain --train_domain "Comedy,Romance" --test_domain "Action,Thriller"
    python -m benchmarks.cross_domain --interactions inter.csv --items items.csv --genre_col genres ...

or two logs (e.g. games -> movies), CSV/TSV/parquet as `dmpo-trl` reads them (user_id,item_id,timestamp and
item_id,title):

    python -m benchmarks.cross_domain --train_interactions games.csv --train_items games_items.csv \\
        --test_interactions movies.csv --test_items movie_items.csv

Each method's result is written as it finishes (`--results_dir/runs/<method>.json`; scoring journals each user,
training saves its adapter under `--work_dir`), so a rerun skips what is done. The report (HR@1, NDCG@5 with 95%
bootstrap intervals, paired bootstrap differences) is rebuilt from those files; `--report_only` does only that.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()
import numpy as np  # noqa: E402

from benchmarks.quality import (  # noqa: E402
    Method,
    common_training_args,
    conversational,
    fmt,
    interval,
    load_base,
    train_preference,
)
from benchmarks.quality.config import option  # noqa: E402


DEFAULT_METHODS = ["random", "popular", "zero-shot", "dmpo-k4-cross", "dmpo-k4-in"]
SOURCE_DOMAIN = "Action,Adventure,Sci-Fi,Thriller,War,Western,Crime"
TARGET_DOMAIN = "Comedy,Romance,Children's,Animation,Musical,Drama"


@dataclass
class CrossDomainConfig:
    """The study's settings. Defaults: the quality study's tuned DMPO setting, sized for 2 shared CPU cores."""

    methods: list[str] = option(DEFAULT_METHODS, "Methods to run.")
    seed: int = option(0, "User split, candidates, training seed.")
    model: str | None = option(None, "Model path or id (default: embedded SmolLM2-135M).")
    dataset_name: str = option("movielens-100k", "Registered dataset (one log, genres).")
    data_dir: str | None = option(None, "MovieLens folder (default: the copy in recbole).")
    interactions: str | None = option(None, "One log of your own, split by item labels.")
    items: str | None = option(None, "Its item file (item_id, title, --genre_col).")
    genre_col: str = option("genres", "Item-label column of --items.")
    genre_sep: str = option("|", "Separator of the labels in --genre_col.")
    train_domain: str = option(SOURCE_DOMAIN, "Comma-separated labels of the training domain.")
    test_domain: str = option(TARGET_DOMAIN, "Comma-separated labels of the test domain.")
    train_interactions: str | None = option(None, "Two logs: the training domain's log.")
    train_items: str | None = option(None, "Two logs: the training domain's item file.")
    test_interactions: str | None = option(None, "Two logs: the test domain's log.")
    test_items: str | None = option(None, "Two logs: the test domain's item file.")
    num_train_users: int = option(100, "Training users (one row each), per trained method.")
    num_test_users: int = option(150, "Test users of the test domain.")
    num_candidates: int = option(20, "Candidates per test user (target + negatives).")
    max_history: int = option(5, "History titles per prompt.")
    min_history: int = option(5, "Items a user needs in a domain before the target.")
    prompt_style: str = option("history", "'history', 'candidates' or a template.")
    train_negatives: str = option("uniform", "How training negatives are drawn.")
    learning_rate: float = option(1e-3, "Learning rate (LoRA).")
    num_train_epochs: float = option(2.0, "Passes over the training rows.")
    batch_size: int = option(4, "Rows per optimizer step.")
    beta: float = option(0.1, "DMPO beta.")
    lora_r: int = option(16, "LoRA rank (all linear layers, alpha = 2r).")
    results_dir: str = option("benchmarks/results/cross_domain/genres", "Results and report.")
    work_dir: str = option("outputs/cross-domain", "Trained adapters.")
    threads: int | None = option(None, "torch threads (default: torch's choice).")
    report_only: bool = option(False, "Only rebuild the report from saved results.")

    def __post_init__(self):
        for name in self.methods:
            parse_method(name)
        two_logs = [self.train_interactions, self.train_items, self.test_interactions, self.test_items]
        if any(two_logs) and not all(two_logs):
            raise ValueError(
                "two logs need all of --train_interactions, --train_items, --test_interactions, --test_items"
            )
        if any(two_logs) and self.interactions:
            raise ValueError("give either one log (--interactions/--items) or two (--train_*/--test_*), not both")
        if bool(self.interactions) != bool(self.items):
            raise ValueError("--interactions and --items go together")

    def training_settings(self, method: str) -> tuple[float, float]:
        """The learning rate and epochs every trained method uses (what `quality.common_training_args` reads)."""
        return self.learning_rate, self.num_train_epochs


def parse_method(name: str) -> Method:
    """`random`, `popular`, `zero-shot`, `dmpo-kK-cross` (trained on the source domain), `dmpo-kK-in` (target)."""
    if name in ("random", "popular"):
        return Method(name, "baseline")
    if name == "zero-shot":
        return Method(name, "zero-shot")
    parts = name.split("-")
    shape = len(parts) == 3 and parts[0] == "dmpo" and parts[1][:1] == "k" and parts[1][1:].isdigit()
    if shape and parts[2] in ("cross", "in") and int(parts[1][1:]) >= 1:
        return Method(name, parts[2], "dmpo", int(parts[1][1:]))
    raise ValueError(f"Unknown method {name!r}: use random, popular, zero-shot, dmpo-k<K>-cross, dmpo-k<K>-in")


# --- data -------------------------------------------------------------------------------------------------------


def load_split(cfg: CrossDomainConfig):
    """The `CrossDomainSplit` and a description of the domains (items per domain, items left out)."""
    from dmpo_trl.data import (
        cross_domain_split,
        item_labels_from_table,
        load_dataset_by_name,
        load_interactions,
        load_movielens_genres,
        parse_domain,
        restrict_log,
        split_catalogue,
    )

    if cfg.train_interactions:
        source = load_interactions(cfg.train_interactions, cfg.train_items)
        target = load_interactions(cfg.test_interactions, cfg.test_items)
        if source.name == target.name:
            source.name, target.name = f"{source.name}:train", f"{target.name}:test"
        domains = {"kind": "two logs", "source": cfg.train_interactions, "target": cfg.test_interactions}
    else:
        if cfg.interactions:
            log = load_interactions(cfg.interactions, cfg.items)
            labels = item_labels_from_table(cfg.items, label_col=cfg.genre_col, label_sep=cfg.genre_sep)
        else:
            kwargs = {"data_dir": cfg.data_dir} if cfg.data_dir else {}
            log = load_dataset_by_name(cfg.dataset_name, **kwargs)
            labels = load_movielens_genres(cfg.data_dir)
        catalogue = split_catalogue(labels, parse_domain(cfg.train_domain), parse_domain(cfg.test_domain))
        source = restrict_log(log, catalogue.source, name=f"{log.name}:train-domain")
        target = restrict_log(log, catalogue.target, name=f"{log.name}:test-domain")
        domains = {
            "kind": "one log, item labels",
            "log": log.name,
            "items": log.num_items,
            "source_items": len(catalogue.source),
            "target_items": len(catalogue.target),
            "items_in_both_left_out": len(catalogue.in_both),
            "items_in_neither": len(catalogue.in_neither),
        }
    domains.update(
        source_users=source.num_users,
        target_users=target.num_users,
        source_interactions=sum(map(len, source.sequences.values())),
        target_interactions=sum(map(len, target.sequences.values())),
    )
    split = cross_domain_split(
        source,
        target,
        num_train_users=cfg.num_train_users,
        num_test_users=cfg.num_test_users,
        num_target_train_users=cfg.num_train_users,  # always dealt, so the other groups do not depend on methods
        max_history=cfg.max_history,
        min_history=cfg.min_history,
        seed=cfg.seed,
    )
    return split, domains


# --- running ----------------------------------------------------------------------------------------------------


def trained_model(cfg: CrossDomainConfig, split, method: Method):
    """The DMPO-trained model: its saved adapter under `work_dir` when there is one, else trained and saved."""
    from dmpo_trl.models import RecModelConfig, load_adapter_model

    adapter = Path(cfg.work_dir) / f"seed{cfg.seed}" / method.name
    info_path = adapter / "train_info.json"
    if not info_path.is_file():
        log, examples = (
            (split.source_log, split.train) if method.kind == "cross" else (split.target_log, split.target_train)
        )
        model, tokenizer = load_base(cfg)
        study = SimpleNamespace(cfg=cfg, seed=cfg.seed, log=log, split=SimpleNamespace(train=examples))
        started = time.perf_counter()
        trainer, *_ = train_preference(study, method, model, tokenizer, adapter)
        trainer.save_model(str(adapter))
        info = {
            "domain": log.name,
            "users": [e.user for e in examples],
            "seconds": round(time.perf_counter() - started, 1),
            "rows": len(trainer.train_dataset),
            "steps": trainer.state.global_step,
            "log_history": trainer.state.log_history,
            "training_args": {k: v for k, v in common_training_args(cfg, cfg.seed, adapter, method.name).items()},
        }
        info_path.write_text(json.dumps(info, default=str) + "\n")
        print(f"{method.name}: trained on {info['rows']} rows of {log.name} in {info['seconds']} s", flush=True)
    model, tokenizer = load_adapter_model(
        adapter, RecModelConfig(model_name_or_path=cfg.model, use_peft=True), merge=True
    )
    return model, tokenizer, json.loads(info_path.read_text())


def run_method(cfg: CrossDomainConfig, split, method: Method, runs: Path) -> dict[str, Any]:
    import torch

    from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking
    from dmpo_trl.models import DEFAULT_MODEL

    torch.manual_seed(cfg.seed)
    ranking_path = runs / f"{method.name}.ranking.json"
    if method.kind == "baseline":
        result = evaluate_baseline(method.name, split.test, split.target_log, cfg.num_candidates, cfg.seed)
        return {"ranking": result}
    train_info = {}
    if method.kind == "zero-shot":
        model, tokenizer = load_base(cfg)
    else:
        model, tokenizer, train_info = trained_model(cfg, split, method)
    result = evaluate_ranking(
        model,
        tokenizer,
        split.test,
        split.target_log,
        cfg.num_candidates,
        cfg.seed,
        cfg.prompt_style,
        conversational(tokenizer),
        progress=False,
        model_name=method.name if method.kind != "zero-shot" else (cfg.model or DEFAULT_MODEL),
        output=ranking_path,
    )
    ranking_path.unlink(missing_ok=True)  # kept whole in the method's result file
    return {"ranking": result, "train": train_info}


def run(cfg: CrossDomainConfig) -> None:
    import torch

    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    split, domains = load_split(cfg)
    runs = Path(cfg.results_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    write_split(cfg, split, domains, runs / "split.json")
    for name in cfg.methods:
        path = runs / f"{name}.json"
        if path.is_file():
            print(f"{name}: done already ({path})", flush=True)
            continue
        method = parse_method(name)
        started = time.perf_counter()
        result = {"method": name, "config": asdict(cfg)}
        result.update(run_method(cfg, split, method, runs))
        result["provenance"] = provenance(None if method.kind == "baseline" else cfg.model or DEFAULT_MODEL)
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(result, default=str) + "\n")
        print(f"{name}: {result['wall_seconds']} s -> {path}", flush=True)


def write_split(cfg: CrossDomainConfig, split, domains: dict[str, Any], path: Path) -> None:
    """The users and examples of every side; refuses to mix results of another split into the same folder."""
    record = {
        "domains": domains,
        "train": [[e.user, list(e.history), e.target] for e in split.train],
        "target_train": [[e.user, list(e.history), e.target] for e in split.target_train],
        "test": [[e.user, list(e.history), e.target] for e in split.test],
    }
    text = json.dumps(record) + "\n"
    if path.is_file() and path.read_text() != text:
        raise ValueError(
            f"{path} holds another split than these settings make: the saved results come from another "
            "configuration. Use another --results_dir, or delete that folder to start over."
        )
    path.write_text(text)


# --- report -----------------------------------------------------------------------------------------------------


def per_user(result: dict[str, Any]) -> dict[str, np.ndarray]:
    from dmpo_trl.metrics import hits_at_k, ndcg_at_k

    ranks = [u["rank"] for u in result["ranking"]["per_user"]]
    return {"hit_ratio@1": hits_at_k(ranks, 1), "ndcg@5": ndcg_at_k(ranks, 5)}


def comparison_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The paired differences a - b to report: cross-domain against zero-shot, in-domain and popular; in-domain
    against zero-shot (those that ran)."""
    pairs = []
    for a in names:
        if a.endswith("-cross"):
            pairs += [(a, "zero-shot"), (a, a.removesuffix("-cross") + "-in"), (a, "popular")]
        if a.endswith("-in"):
            pairs.append((a, "zero-shot"))
    return [(a, b) for a, b in pairs if b in names]


def summarize(cfg: CrossDomainConfig) -> dict[str, Any]:
    runs = Path(cfg.results_dir) / "runs"
    results = {m: json.loads((runs / f"{m}.json").read_text()) for m in cfg.methods if (runs / f"{m}.json").is_file()}
    if not results:
        raise SystemExit(f"No results under {runs} for methods {cfg.methods}")
    reference = next(iter(results.values()))["ranking"]["per_user"]
    for name, result in results.items():  # every method ranked the same users and candidates
        rows = result["ranking"]["per_user"]
        same = [(u["user"], u["target"], u["candidates"]) for u in rows] == [
            (u["user"], u["target"], u["candidates"]) for u in reference
        ]
        if not same:
            raise ValueError(f"{name} ranked other users or candidates than {next(iter(results))}")
    test_users = {u["user"] for u in reference}
    for name, result in results.items():
        if test_users & set((result.get("train") or {}).get("users", ())):
            raise ValueError(f"{name} trained on test users")  # cross_domain_split never deals them out twice
    values = {name: per_user(result) for name, result in results.items()}
    methods = {}
    for name, result in results.items():
        train = result.get("train") or {}
        methods[name] = {
            **{metric: interval(v) for metric, v in values[name].items()},
            "num_users": len(values[name]["hit_ratio@1"]),
            "train_rows": train.get("rows"),
            "train_domain": train.get("domain"),
            "train_seconds": train.get("seconds"),
            "eval_seconds": result["ranking"].get("wall_time_s"),
            "wall_seconds": result["wall_seconds"],
        }
    comparisons = []
    for a, b in comparison_pairs(list(values)):
        if a in values and b in values:
            for metric in ("hit_ratio@1", "ndcg@5"):
                mean, low, high = interval(values[a][metric] - values[b][metric])
                verdict = "a wins" if low > 0 else "b wins" if high < 0 else "no clear difference"
                comparisons.append(
                    {"a": a, "b": b, "metric": metric, "diff": mean, "ci95": [low, high], "verdict": verdict}
                )
    split = json.loads((runs / "split.json").read_text())
    return {"methods": methods, "comparisons": comparisons, "domains": split["domains"]}


def markdown(summary: dict[str, Any], cfg: CrossDomainConfig) -> str:
    d = summary["domains"]
    if d["kind"] == "two logs":
        where = f"trained on `{d['source']}`, tested on `{d['target']}`"
    else:
        where = (
            f"{d['log']}, training domain {{{cfg.train_domain}}} ({d['source_items']} items), test domain "
            f"{{{cfg.test_domain}}} ({d['target_items']} items); {d['items_in_both_left_out']} items with genres of "
            f"both domains left out of both, {d['items_in_neither']} items in neither"
        )
    num_users = next(iter(summary["methods"].values()))["num_users"]
    lines = [
        "# Cross-domain transfer: SmolLM2-135M-Instruct + DMPO K=4 + LoRA",
        "",
        f"{where}. {num_users} test users of the test domain (none trains anything), each ranking its last "
        f"test-domain item among {cfg.num_candidates} uniform test-domain candidates after its last "
        f"{cfg.max_history} test-domain titles (prompt `{cfg.prompt_style}`); every method ranks the same users "
        f"and candidates. Trained methods: {cfg.num_train_users} rows (one per user), {cfg.num_train_epochs:g} "
        f"epochs, batch {cfg.batch_size}, lr {cfg.learning_rate:g}, LoRA r={cfg.lora_r}, beta {cfg.beta:g}, seed "
        f"{cfg.seed}; `cross` on training-domain users and items, `in` on test-domain rows of other users. "
        "Means with 95% bootstrap intervals.",
        "",
        "| method | trained on | users | HR@1 | NDCG@5 | train s | eval s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in summary["methods"].items():
        trained = f"{e['train_rows']} rows of {e['train_domain']}" if e["train_rows"] else ""
        cells = [
            name,
            trained,
            str(e["num_users"]),
            fmt(*e["hit_ratio@1"]),
            fmt(*e["ndcg@5"]),
            f"{e['train_seconds']:.0f}" if e["train_seconds"] else "",
            f"{e['eval_seconds']:.0f}" if e["eval_seconds"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Paired differences (same users and candidates; bootstrap over users)",
        "",
        "| a | b | metric | a - b [95% CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in summary["comparisons"]:
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {fmt(c['diff'], *c['ci95'])} | {c['verdict']} |")
    lines.append("")
    return "\n".join(lines)


def report(cfg: CrossDomainConfig) -> str:
    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    summary = summarize(cfg)
    out = Path(cfg.results_dir)
    text = markdown(summary, cfg)
    (out / "cross_domain.md").write_text(text)
    payload = {"config": asdict(cfg), "provenance": provenance(cfg.model or DEFAULT_MODEL), **summary}
    (out / "cross_domain.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    try:
        (cfg,) = HfArgumentParser(CrossDomainConfig).parse_args_into_dataclasses(args=argv)
        if not cfg.report_only:
            load_split(cfg)  # bad files, labels or user counts: one line, before any model loads
    except (ValueError, FileNotFoundError) as error:
        print(f"cross_domain.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not cfg.report_only:
        run(cfg)
    print(report(cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
