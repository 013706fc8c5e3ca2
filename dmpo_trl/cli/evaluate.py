"""`dmpo-trl evaluate`: rank test users' candidates with a model or a baseline; print and save the metrics.

With a split file (`--split_file`, or the `split.json` in a trained `--model_name_or_path` folder) the users,
candidates, prompt and data are the split's; data flags that differ from it are refused. `--test_targets cold`
ranks an early item of each test user instead of the last (`dmpo_trl.cold_start.cold_start_examples`) and prints the
metrics per history-length group too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from ..cold_start import cold_start_examples
from ..data.splits import example_at
from ..distributed import process_rank
from ..evaluation import evaluate_baseline, evaluate_ranking, format_history_breakdown, format_table, save_result
from ..models import (
    DEFAULT_MODEL,
    ModelPackageMissing,
    RecModelConfig,
    load_adapter_model,
    load_model_and_tokenizer,
)
from ..ranker_file import RANKER_FILE, read_ranker_config
from ..recipe import (
    RecDataArguments,
    check_output_path,
    data_inputs,
    load_interaction_log,
    load_split,
    saved_test_users,
    split_data_arguments,
    split_users,
)
from ..settings import EvaluationSettings, PromptSettings
from .arguments import EvaluateArguments, command_parsers, parse_args, spelling
from .checks import check_adapter_weights, log_names, model_files
from .errors import UsageError, user_inputs
from .process import prepare_process


__all__ = ["main"]


def _split_for_evaluation(eval_args: EvaluateArguments) -> Path | None:
    if eval_args.split_file is not None:
        if eval_args.split_file.lower() == "none":
            return None
        path = Path(eval_args.split_file)  # a folder means its split.json
        return path / "split.json" if (path / "split.json").is_file() else path
    model = eval_args.model_name_or_path
    if eval_args.baseline is None and model and (Path(model) / "split.json").is_file():
        return Path(model) / "split.json"
    return None


def _saved_prior(eval_args: EvaluateArguments) -> float:
    """The popularity prior's weight a trained folder's ranker.json ranks with (0 without one)."""
    model = eval_args.model_name_or_path
    likelihood = eval_args.baseline is None and eval_args.ranking_mode == "likelihood"
    if likelihood and model and (Path(model) / RANKER_FILE).is_file():
        return float(read_ranker_config(model)["prompt"].get("popularity_prior") or 0.0)
    return 0.0


def _load_for_evaluation(eval_args: EvaluateArguments, device: str):
    model = eval_args.model_name_or_path
    if model and (Path(model) / "adapter_config.json").is_file():
        args = RecModelConfig(use_peft=True, dtype=eval_args.dtype)  # the base ranker.json records
        remote_code = {"trust_remote_code": True} if eval_args.trust_remote_code else {}
        loaded, tokenizer = load_adapter_model(model, args, **remote_code)
        return loaded.to(device), tokenizer
    return load_model_and_tokenizer(
        model, eval_args.gguf_file, dtype=eval_args.dtype, device=device, trust_remote_code=eval_args.trust_remote_code
    )


def _what_to_rank(eval_args, data_args, log, record, test, candidates, name: str, seed: int) -> tuple:
    """The `evaluate_ranking` settings and keywords of the test users' lists: with `--retriever`, each user's
    retrieved top items of the whole catalogue; else candidate lists (the split's, or drawn with `seed`), journalled
    beside the output file so that a killed run continues."""
    if eval_args.retriever:
        valid = [example_at(log, user, -1, data_args.max_history) for user in (record or {}).get("valid", [])]
        retrieved = {
            "retriever": eval_args.retriever,
            "retrieve_top": eval_args.retrieve_top,
            "fusion_weight": eval_args.fusion_weight,
            "held_out": test + valid,  # the validation users' targets stay out of the retriever's training too
        }
        return EvaluationSettings(seed=seed, progress=eval_args.show_progress), retrieved  # no list is drawn
    settings = EvaluationSettings.from_arguments(data_args, eval_args, seed, max_new_tokens=eval_args.max_new_tokens)
    return settings, {"candidates": candidates, "model_name": name, "output": eval_args.output_file or None}


def _report_two_stage(eval_args, data_args, result, test, log, name: str, device: str, started: float) -> int:
    """`--retriever`: print and save the full-catalogue metrics of the reranking beside the retriever's own."""
    if process_rank()[0] != 0:
        return 0
    two_stage, alone = result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]
    for metrics in (two_stage, alone):
        metrics.pop("per_user")
    result.update(
        model=name,
        users=[e.user for e in test],
        llm={"metrics": result["llm"].get("metrics"), "settings": result["llm"].get("settings")},
        wall_time_s=round(time.perf_counter() - started, 1),
    )
    result["settings"].update(
        model=name,
        dtype=eval_args.dtype,
        device=device,
        max_history=data_args.max_history,
        test_targets=eval_args.test_targets,
    )
    written = save_result(result, eval_args.output_file) if eval_args.output_file else None
    top = eval_args.retrieve_top
    print(f"| ranking | recall@10 | ndcg@10 | mrr | recall@{top} |")
    print("|---|---|---|---|---|")
    for label, metrics in ((f"{eval_args.retriever} alone", alone), (f"{eval_args.retriever} + {name}", two_stage)):
        print(
            f"| {label} | {metrics['recall@10']:.4f} | {metrics['ndcg@10']:.4f} | {metrics['mrr']:.4f} | "
            f"{metrics[f'recall@{top}']:.4f} |"
        )
    print(f"{len(test)} users, the whole catalogue ({len(log.titles)} items) less each user's seen items")
    if eval_args.test_targets == "cold":
        rows = ((f"{eval_args.retriever} alone", alone), (f"{eval_args.retriever} + {name}", two_stage))
        for label, metrics in rows:
            print(f"\n{label}, by interactions before the target:")
            print(format_history_breakdown(metrics))
    if written:
        print(f"Wrote {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl evaluate`: rank test users' candidates with a model or a baseline; print and save the metrics.

    With a split file (`--split_file`, or the `split.json` in a trained `--model_name_or_path` folder) the users,
    candidates, prompt and data are the split's; data flags that differ from it are refused.

    Example:
    ```python
    >>> main(["--model_name_or_path", "outputs/ml100k"])  # doctest: +SKIP
    0
    ```
    """
    prepare_process()
    parser = command_parsers()["evaluate"]()
    with user_inputs():
        data_args, eval_args = parse_args(parser, argv)
        if eval_args.baseline and (eval_args.model_name_or_path or eval_args.gguf_file):
            raise UsageError("--baseline and --model_name_or_path exclude each other: rank with one or the other")
        if eval_args.retriever and (eval_args.baseline or eval_args.ranking_mode != "likelihood"):
            raise UsageError(f"--retriever {eval_args.retriever}: a model reranks its items, in likelihood mode")
        if eval_args.retrieve_top < 1:
            raise UsageError(f"--retrieve_top {eval_args.retrieve_top}: the retriever proposes at least one item")
        if eval_args.baseline and eval_args.ranking_mode != "likelihood":
            raise UsageError(f"--baseline ranks candidates; --ranking_mode {eval_args.ranking_mode} needs a model")
        loaded = {} if eval_args.baseline else model_files(eval_args.model_name_or_path, eval_args.gguf_file)
        check_adapter_weights(eval_args.model_name_or_path)
        if eval_args.popularity_prior is None:
            eval_args.popularity_prior = _saved_prior(eval_args)
        prior = eval_args.popularity_prior
        if prior < 0 or (prior and (eval_args.baseline or eval_args.ranking_mode != "likelihood")):
            raise UsageError(f"--popularity_prior {prior}: a weight >= 0, for a model in likelihood mode")
        split_path = _split_for_evaluation(eval_args)
        if split_path is not None and eval_args.test_targets == "cold":
            raise UsageError(
                f"--test_targets cold: {split_path} saves candidates for each test user's last item; pass "
                "--split_file none (with the data flags the model was trained with) to draw early targets"
            )
        candidates, record = None, None
        if split_path is not None:
            record = load_split(split_path)
            defaults = parse_args(parser, [])[0]
            changed = [
                f.name
                for f in dataclasses.fields(RecDataArguments)
                if getattr(data_args, f.name) != getattr(defaults, f.name)
            ]
            if changed:
                raise UsageError(
                    f"{split_path} fixes the users, candidates and prompt; drop --{' --'.join(changed)}, "
                    "or pass --split_file none to draw users with them"
                )
            data_args = split_data_arguments(record)
            if data_args.conversational is None:
                data_args.conversational = record.get("conversational")
        else:
            data_args = data_args.for_mode(eval_args.ranking_mode)
            if not data_args.is_interaction_log:
                raise UsageError(
                    f"Unknown dataset {data_args.dataset_name!r}; evaluate ranks the users of {log_names()}"
                )
        if eval_args.output_file:  # never over a file this run reads
            inputs = {**({str(split_path): "the split file"} if split_path else {}), **data_inputs(data_args)}
            flag = spelling(parser, argv, "output_file")
            check_output_path(eval_args.output_file, {**inputs, **loaded}, flag)
        log = load_interaction_log(data_args)
        if record is not None:
            test, candidates = saved_test_users(record, log, split_path)
        else:
            # Only the test users: they are dealt first, so they are the ones prepare and train hold out for the seed
            test = split_users(dataclasses.replace(data_args, num_train_users=0, num_valid_users=0), log).test
        seed = data_args.split_seed or 0
        if eval_args.test_targets == "cold":  # the same users, each ranked at an early target
            test = cold_start_examples(log, [e.user for e in test], seed=seed, max_history=data_args.max_history)
    if eval_args.baseline:
        name = f"baseline:{eval_args.baseline}"
        result = evaluate_baseline(
            eval_args.baseline,
            test,
            log,
            data_args.num_candidates,
            seed,
            negative_strategy=data_args.candidate_strategy,
            candidates=candidates,
        )
    else:
        device = eval_args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        with user_inputs(OSError, ModelPackageMissing):
            model, tokenizer = _load_for_evaluation(eval_args, device)
        name = eval_args.model_name_or_path or DEFAULT_MODEL
        prompt = PromptSettings.from_arguments(
            data_args, eval_args, end_of_turn=eval_args.end_of_turn, popularity_prior=eval_args.popularity_prior
        )
        settings, lists = _what_to_rank(eval_args, data_args, log, record, test, candidates, name, seed)
        started = time.perf_counter()
        # the SASRec, GRU4Rec and BPR retrievers need the classic extra
        with user_inputs(ImportError) if eval_args.retriever else nullcontext():
            result = evaluate_ranking(model, tokenizer, test, log, settings=settings, prompt=prompt, **lists)
        if eval_args.retriever:
            return _report_two_stage(eval_args, data_args, result, test, log, name, device, started)
        result["settings"].update(dtype=eval_args.dtype, device=device)
    if process_rank()[0] != 0:  # under torchrun every process ranked its share; the first one reports
        return 0
    result["settings"].update(
        max_history=data_args.max_history,
        min_history=data_args.min_history,
        split_file=str(split_path) if split_path else None,
        test_targets=eval_args.test_targets,
    )
    written = save_result(result, eval_args.output_file) if eval_args.output_file else None
    print(format_table({name: result}))
    metrics = result["metrics"]
    for key, value in metrics.items():
        if key.endswith("_ci95"):
            print(f"{key[: -len('_ci95')]} 95% CI: [{value[0]:.4f}, {value[1]:.4f}]")
    where = f"the test users of {split_path}" if split_path else f"split seed {seed}"
    where += ", early targets" if eval_args.test_targets == "cold" else ""
    print(f"{metrics['num_users']} users ({where}), {data_args.num_candidates} candidates, {result['wall_time_s']}s")
    if eval_args.test_targets == "cold":
        print("\nBy interactions before the target:")
        print(format_history_breakdown(metrics))
    if written:
        print(f"Wrote {written}")
    return 0
