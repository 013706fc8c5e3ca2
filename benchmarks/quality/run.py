"""Running the quality study: every (seed, method) trained, scored and saved under `--results_dir/runs/seed<S>/` as it
finishes (a stopped run resumes), then the report; `main` is `python -m benchmarks.quality`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from .config import Method, QualityConfig, parse_method
from .data import Study
from .report import report
from .score import explain, generate, run_baseline, score_users
from .train import train


def run_method(study: Study, method: Method) -> dict[str, Any]:
    import torch

    torch.manual_seed(study.seed)
    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    result: dict[str, Any] = {"method": method.name, "seed": study.seed, "config": asdict(study.cfg)}
    result["provenance"] = provenance(None if method.kind == "baseline" else study.cfg.model or DEFAULT_MODEL)
    if method.kind == "baseline":
        result.update(run_baseline(study, method))
        return result
    model, tokenizer, result["train"] = train(study, method)
    model.eval()
    started = time.perf_counter()
    result.update(score_users(study, model, tokenizer))
    result["eval_seconds"] = round(time.perf_counter() - started, 1)
    if method.name in study.cfg.generation_methods:
        started = time.perf_counter()
        result.update(generate(study, model, tokenizer))
        result["generation_seconds"] = round(time.perf_counter() - started, 1)
    result["explanations"] = explain(study, model, tokenizer, result["scores"])
    return result


def run(cfg: QualityConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for seed in cfg.seeds:
        study = Study(cfg, seed)
        for name in cfg.methods:
            path = study.path(name)
            if path.is_file():
                print(f"seed {seed} {name}: done already ({path})", flush=True)
                continue
            started = time.perf_counter()
            result = run_method(study, parse_method(name))
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(result, default=str) + "\n")
            print(f"seed {seed} {name}: {result['wall_seconds']} s -> {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(QualityConfig).parse_args_into_dataclasses(args=argv)
    if not cfg.report_only:
        run(cfg)
    if cfg.report or cfg.report_only:
        print(report(cfg))
