"""The K sweep's workers, each run in a fresh process: a training step per method, ranking throughput, exactness."""

from __future__ import annotations

import os
import statistics
import sys
import time


PROGRESS = "PROGRESS "


def progress(message: str) -> None:
    """A line the parent process shows as it comes (worker stderr is otherwise kept for errors only)."""
    print(PROGRESS + message, file=sys.stderr, flush=True)


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set


def movielens_rows(num_rows: int, k: int, seed: int = 0):
    from dmpo_trl.data import build_preference_dataset, few_shot_split, load_movielens

    log = load_movielens("movielens-100k")
    split = few_shot_split(log, num_train_users=num_rows, num_valid_users=0, num_test_users=0, seed=seed)
    return build_preference_dataset(log, split.train, num_negatives=k, prompt_style="candidates", seed=seed)


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


class StepTimer:
    """Wall and process-CPU seconds of each optimizer step (CPU time is the steadier figure on a shared machine)."""

    def __init__(self):
        self.durations, self.cpu_durations = [], []

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class _Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.start, timer.cpu_start = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                timer.durations.append(time.perf_counter() - timer.start)
                timer.cpu_durations.append(time.process_time() - timer.cpu_start)

        return _Timer()


def train_worker(method: str, k: int, steps: int, warmup: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dmpo_trl import DMPOConfig, DMPOTrainer
    from dmpo_trl.models import resolve_model_path

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    path = resolve_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = movielens_rows(steps + warmup, k)
    common = dict(
        output_dir=f"/tmp/bench-{method}-{k}",
        per_device_train_batch_size=1,
        max_steps=steps + warmup,
        learning_rate=1e-5,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_length=1024,
    )
    timer = StepTimer()
    if method == "trl_pairs":
        pairs = [
            {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": rejected}
            for row in rows
            for rejected in row["rejected"]
        ]
        trainer = DPOTrainer(
            path,
            args=DPOConfig(**{**common, "per_device_train_batch_size": k}),
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
            peft_config=lora_config(),
            callbacks=[timer.callback()],
        )
    else:
        trainer = DMPOTrainer(
            path,
            args=DMPOConfig(**common, prefix_sharing=method == "shared"),
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=lora_config(),
            callbacks=[timer.callback()],
        )
    loader = trainer.get_train_dataloader()
    tokens = statistics.mean(int(batch["attention_mask"].sum()) for _, batch in zip(range(steps + warmup), loader))
    baseline = rss_mb()
    reset_peak_rss()
    trainer.train()
    peak = rss_mb("VmHWM") - baseline
    return {
        "method": method,
        "k": k,
        "step_s": round(statistics.median(timer.durations[warmup:]), 3),
        "cpu_s": round(statistics.median(timer.cpu_durations[warmup:]), 3),
        "peak_mb": round(peak, 1),
        "tokens": round(tokens),
    }


def eval_worker(num_users: int, num_candidates: int = 20) -> list[dict]:
    import torch

    from dmpo_trl.data import few_shot_split, load_movielens
    from dmpo_trl.evaluation import build_ranking_prompts
    from dmpo_trl.models import load_model_and_tokenizer
    from dmpo_trl.scoring import score_completions, score_completions_shared, tokenize_for_scoring

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    model, tokenizer = load_model_and_tokenizer()
    log = load_movielens("movielens-100k")
    split = few_shot_split(log, num_train_users=0, num_valid_users=0, num_test_users=num_users, seed=0)
    items = build_ranking_prompts(log, split.test, num_candidates=num_candidates, seed=0)
    tokenized = [tokenize_for_scoring(tokenizer, item.prompt, item.completions) for item in items]
    results, scores = [], {}
    for method in ("shared", "naive"):
        start = time.perf_counter()
        scores[method] = [
            score_completions_shared(model, p, c)
            if method == "shared"
            else score_completions(model, tokenizer, p, c, share_prompt=False)[0]
            for p, c in tokenized
        ]
        elapsed = time.perf_counter() - start
        results.append(
            {
                "method": f"eval_{method}",
                "k": num_candidates,
                "candidates_per_s": round(num_users * num_candidates / elapsed, 2),
                "seconds": round(elapsed, 2),
            }
        )
    difference = max((a - b).abs().max().item() for a, b in zip(scores["shared"], scores["naive"]))
    results.append({"method": "eval_max_abs_diff", "k": num_candidates, "value": difference})
    return results


def check_worker(k: int = 4) -> dict:
    """Shared vs unshared log-probs and LoRA gradients on SmolLM2 in fp32, two rows of K negatives."""
    import torch
    from transformers import AutoTokenizer

    from dmpo_trl import DataCollatorForMultiPreference, DMPOConfig, DMPOTrainer
    from dmpo_trl.models import resolve_model_path

    path = resolve_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = movielens_rows(2, k)
    trainer = DMPOTrainer(
        path,
        args=DMPOConfig("/tmp/bench-check", bf16=False, report_to=[], max_length=1024),
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    examples = [trainer.train_dataset[i] for i in range(2)]
    model = trainer.model
    model.train()
    out = {}
    for share in (True, False):
        batch = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=share)(examples)
        model.zero_grad()
        logps = trainer._sequence_logps(model, batch)[0]
        (logps * torch.linspace(-1, 2, logps.numel())).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[share] = (logps.detach(), grads)
    logp_diff = (out[True][0] - out[False][0]).abs().max().item()
    grad_diff = max((out[True][1][n] - out[False][1][n]).abs().max().item() for n in out[True][1])
    return {"method": "check", "k": k, "max_logp_diff": logp_diff, "max_grad_diff": grad_diff}
