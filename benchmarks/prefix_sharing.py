"""Prefix sharing vs the unshared forward vs TRL's DPOTrainer on exploded pairs: step time, peak memory, tokens.

SmolLM2-135M-Instruct (the embedded default) + LoRA r=8 on all linear layers, MovieLens-100K rows from the data
builder with the 20-candidate prompt, one row (K+1 responses) per optimizer step, the same rows for every method:

- `shared`: DMPOTrainer with `prefix_sharing=True`
- `naive`: DMPOTrainer with `prefix_sharing=False`
- `trl_pairs`: TRL's DPOTrainer on the row exploded into K (chosen, rejected_k) pairs, all K in one step

Each (method, K) runs in a fresh process so that peak memory is its own: the figure is the resident-set high-water
mark during training minus the resident set once the model and trainer are built (Linux /proc). Step time is the
median over `--steps` optimizer steps after `--warmup`. Evaluation throughput compares ranking 20 candidates per user
with the prompt run once (`shared`) against the prompt repeated per candidate (`naive`).

    python -m benchmarks.prefix_sharing                     # K = 1 2 4 8 16, all methods, + evaluation
    python -m benchmarks.prefix_sharing --k 8 --json        # one JSON line per configuration
    python -m benchmarks.prefix_sharing --check             # exactness on SmolLM2: shared vs unshared log-probs/grads

The sharing policy (`prefix_sharing="auto"`, `dmpo_trl.collator.shares_prompt`) is measured in one process, one
model, the variants interleaved step by step (shared, unshared, auto, shared, ...) on the same rows so that a busy
machine slows them alike; a step is `DMPOTrainer.training_step` (policy and reference forwards, backward, with
gradient checkpointing) plus the optimizer update, one row per step, `max_length=1024`; figures are medians over
`--rounds` rounds, each round on its own row:

    python -m benchmarks.prefix_sharing --policy            # MovieLens K=8, UltraFeedback-shaped, short prompt/long
    python -m benchmarks.prefix_sharing --policy --quick    # one round, MovieLens at K=4
    python -m benchmarks.prefix_sharing --sweep             # step time of each layout against its token counts
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow a shared machine several-fold

METHODS = ("shared", "naive", "trl_pairs")
MARKER = "RESULT "
PROGRESS = "PROGRESS "


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


WORDS = (  # noqa: SIM905
    "the a model answer question because which river light city history people water small great between often "
    "during energy system example number important simple language different music science explain without "
    "several first would could should might every another through against around before after under world"
).split()


def text_of(num_words: int, rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(num_words))


def long_response_rows(num_rows: int, k: int, prompt_words: int, response_words: int, seed: int = 0) -> list[dict]:
    """Rows shaped like UltraFeedback (or a short question with long answers): `prompt_words` then K+1 responses."""
    import random

    rng = random.Random(seed)
    return [
        {
            "prompt": text_of(prompt_words, rng) + "\nAnswer:",
            "chosen": " " + text_of(response_words, rng),
            "rejected": [" " + text_of(response_words, rng) for _ in range(k)],
        }
        for _ in range(num_rows)
    ]


#: name -> (description, K, rows builder(num_rows, k))
POLICY_SHAPES = {
    "movielens": ("MovieLens candidates prompt, title responses", 8, lambda n, k: list(movielens_rows(n, k))),
    "ultrafeedback": ("prompt ~160 words, responses ~160 words", 4, lambda n, k: long_response_rows(n, k, 160, 160)),
    "short_prompt": ("prompt ~20 words, responses ~300 words", 4, lambda n, k: long_response_rows(n, k, 20, 300)),
}
ARMS = (True, False, "auto")
ARM_NAMES = {True: "shared", False: "unshared", "auto": "auto"}


def build_step_trainer(rows: list[dict]):
    """A DMPOTrainer on SmolLM2 + LoRA, fp32, the settings of `train_worker`, with its optimizer built."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from dmpo_trl import DMPOConfig, DMPOTrainer
    from dmpo_trl.models import resolve_model_path

    path = resolve_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    args = DMPOConfig(
        "/tmp/bench-policy", learning_rate=1e-5, bf16=False, report_to=[], save_strategy="no", max_length=1024
    )
    trainer = DMPOTrainer(
        path,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by `train()`, read by `training_step`
    return trainer


def timed_step(trainer, batch) -> float:
    """Seconds of one optimizer step on `batch`: policy and reference forwards, backward, optimizer update."""
    start = time.perf_counter()
    trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return time.perf_counter() - start


def policy_worker(shapes: list[str], rounds: int, movielens_k: int | None) -> list[dict]:
    """Per shape, `rounds` rounds of (shared, unshared, auto) steps; each round on its own row, the same for all."""
    import torch

    from dmpo_trl import DataCollatorForMultiPreference
    from dmpo_trl.collator import layout_lengths

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    rows, spans = [], {}
    for name in shapes:
        _, k, builder = POLICY_SHAPES[name]
        k = movielens_k if name == "movielens" and movielens_k else k
        spans[name] = (len(rows), k)
        rows += [{**row, "rejected": list(row["rejected"])} for row in builder(rounds, k)]
    trainer = build_step_trainer(rows)
    collators = {
        arm: DataCollatorForMultiPreference(trainer.processing_class.pad_token_id, max_length=1024, share_prompt=arm)
        for arm in ARMS
    }
    timed_step(trainer, collators[True]([trainer.train_dataset[0]]))  # warm-up: first-step allocations
    results = []
    for name in shapes:
        start, k = spans[name]
        times = {arm: [] for arm in ARMS}
        for index in range(start, start + rounds):
            example = trainer.train_dataset[index]
            for arm in ARMS:
                times[arm].append(timed_step(trainer, collators[arm]([example])))
                progress(f"{name} round {index - start + 1} {ARM_NAMES[arm]}: {times[arm][-1]:.2f} s")
        examples = [trainer.train_dataset[i] for i in range(start, start + rounds)]
        lengths = [layout_lengths([e], 1024) for e in examples]
        results.append(
            {
                "method": "policy",
                "shape": name,
                "k": k,
                "rounds": rounds,
                "prompt_tokens": round(statistics.median(len(e["prompt_ids"]) for e in examples)),
                "response_tokens": round(statistics.median(len(e["chosen_ids"]) for e in examples)),
                "shared_length": round(statistics.median(length["shared"][1] for length in lengths)),
                "unshared_tokens": round(
                    statistics.median(length["unshared"][0] * length["unshared"][1] for length in lengths)
                ),
                "auto_shares": sum(collators["auto"].uses_shared_layout([e]) for e in examples),
                **{f"{ARM_NAMES[arm]}_s": round(statistics.median(times[arm]), 2) for arm in ARMS},
                **{f"{ARM_NAMES[arm]}_all_s": [round(t, 2) for t in times[arm]] for arm in ARMS},
            }
        )
    return results


#: (prompt tokens, response tokens) at K=4 for `--sweep`: packed rows from 180 to ~2100 tokens
SWEEP_SHAPES = ((450, 8), (100, 50), (30, 150), (450, 100), (200, 200), (30, 400))


def sweep_worker(rounds: int, k: int = 4) -> list[dict]:
    """Step time of the shared and the unshared layout on synthetic token rows, interleaved, against token counts."""
    import random

    import torch

    from dmpo_trl import DataCollatorForMultiPreference
    from dmpo_trl.collator import layout_lengths

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    trainer = build_step_trainer(long_response_rows(1, 1, 5, 5))
    rng = random.Random(0)
    collators = {arm: DataCollatorForMultiPreference(0, share_prompt=arm) for arm in (True, False)}
    timed_step(trainer, collators[True]([synthetic_row(rng, 100, 10, k)]))  # warm-up
    results = []
    for prompt, response in SWEEP_SHAPES:
        times = {True: [], False: []}
        for _ in range(rounds):
            row = synthetic_row(rng, prompt, response, k)
            for arm in (True, False):
                times[arm].append(timed_step(trainer, collators[arm]([row])))
                progress(f"P={prompt} C={response} {ARM_NAMES[arm]}: {times[arm][-1]:.2f} s")
        lengths = layout_lengths([row])
        for arm in (True, False):
            sequences, length = lengths["shared" if arm else "unshared"]
            results.append(
                {
                    "method": "sweep",
                    "layout": ARM_NAMES[arm],
                    "k": k,
                    "prompt_tokens": prompt,
                    "response_tokens": response,
                    "sequences": sequences,
                    "length": length,
                    "step_s": round(statistics.median(times[arm]), 3),
                }
            )
    return results


def synthetic_row(rng, prompt: int, response: int, k: int) -> dict:
    ids = lambda n: [rng.randrange(1000, 40000) for _ in range(n)]  # noqa: E731
    return {"prompt_ids": ids(prompt), "chosen_ids": ids(response), "rejected_ids": [ids(response) for _ in range(k)]}


def fit_sweep(records: list[dict]) -> dict:
    """The `ATTENTION_LENGTH` of `dmpo_trl.collator` that best predicts each shape's shared/unshared time ratio.

    Cost model: sequences x (length + length^2 / attention_length) per layout. The fit is on ratios (least squares
    of log ratios) because each shape's two layouts ran side by side, so a busy machine's slowdown cancels in the
    ratio and not in the absolute times.
    """
    import math

    pairs = {}
    for r in records:
        if r["method"] == "sweep" and "step_s" in r:
            pairs.setdefault((r["prompt_tokens"], r["response_tokens"]), {})[r["layout"]] = r

    def predicted(pair, attention_length):
        cost = {name: r["sequences"] * (r["length"] + r["length"] ** 2 / attention_length) for name, r in pair.items()}
        return cost["shared"] / cost["unshared"]

    def measured(pair):
        return pair["shared"]["step_s"] / pair["unshared"]["step_s"]

    def error(attention_length):
        return sum(math.log(predicted(pair, attention_length) / measured(pair)) ** 2 for pair in pairs.values())

    best = min(range(200, 20001, 100), key=error)
    return {
        "method": "fit",
        "attention_length": best,
        "ratios": {
            f"P={p} C={c}": {"measured": round(measured(pair), 2), "predicted": round(predicted(pair, best), 2)}
            for (p, c), pair in pairs.items()
        },
    }


def print_policy_table(records: list[dict]) -> None:
    policy = [r for r in records if r["method"] == "policy" and "shared_s" in r]
    if policy:
        print(
            f"\n{'rows':>13} {'K':>2} {'P':>4} {'C':>4} {'packed':>6} {'unsh.tok':>8} "
            f"{'shared s':>9} {'unshared s':>10} {'auto s':>7} {'auto shares':>11} "
            f"{'unsh/sh':>8} {'auto/best':>9} {'paired unsh/sh':>14} {'paired auto/best':>16}"
        )
        for r in policy:
            best = min(r["shared_s"], r["unshared_s"])
            rounds = list(zip(r["shared_all_s"], r["unshared_all_s"], r["auto_all_s"], strict=True))
            paired_unshared = statistics.median(unshared / shared for shared, unshared, _ in rounds)
            paired_auto = statistics.median(auto / min(shared, unshared) for shared, unshared, auto in rounds)
            print(
                f"{r['shape']:>13} {r['k']:>2} {r['prompt_tokens']:>4} {r['response_tokens']:>4} "
                f"{r['shared_length']:>6} {r['unshared_tokens']:>8} {r['shared_s']:>9.2f} {r['unshared_s']:>10.2f} "
                f"{r['auto_s']:>7.2f} {str(r['auto_shares']) + '/' + str(r['rounds']):>11} "
                f"{r['unshared_s'] / r['shared_s']:>7.2f}x {r['auto_s'] / best:>8.2f}x "
                f"{paired_unshared:>13.2f}x {paired_auto:>15.2f}x"
            )
        print("paired: the median over rounds of each round's own ratio (steps run back to back)")
    sweep = [r for r in records if r["method"] == "sweep" and "step_s" in r]
    if sweep:
        print(f"\n{'P':>4} {'C':>4} {'layout':>9} {'seqs':>4} {'length':>6} {'tokens':>6} {'step s':>7}")
        for r in sweep:
            print(
                f"{r['prompt_tokens']:>4} {r['response_tokens']:>4} {r['layout']:>9} {r['sequences']:>4} "
                f"{r['length']:>6} {r['sequences'] * r['length']:>6} {r['step_s']:>7.2f}"
            )
    for r in records:
        if r["method"] in ("fit", "environment"):
            print(r)


def environment() -> dict:
    """Library versions, git commit and machine, printed with the figures."""
    from importlib.metadata import version

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return result.stdout.strip()

    return {
        "method": "environment",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "-uno") else ""),
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("torch", "transformers", "trl", "peft", "datasets")},
        "cpus": os.cpu_count(),
        "threads": int(os.environ.get("BENCH_THREADS", os.cpu_count())),
        "load_average": os.getloadavg(),
    }


def progress(message: str) -> None:
    """A line the parent process shows as it comes (worker stderr is otherwise kept for errors only)."""
    print(PROGRESS + message, file=sys.stderr, flush=True)


def run_in_subprocess(*worker_args: str) -> list[dict]:
    command = [sys.executable, __file__, "--worker", *worker_args]
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
        stderr = collections.deque(maxlen=100)
        for line in process.stderr:
            if line.startswith(PROGRESS):
                print(line[len(PROGRESS) :].rstrip(), flush=True)
            else:
                stderr.append(line)
        process.wait()
        stdout.seek(0)
        output = stdout.read()
    if process.returncode != 0:
        print("".join(stderr)[-3000:], file=sys.stderr)
        last = stderr[-1].strip() if stderr else f"exit status {process.returncode}"
        return [{"method": worker_args[0], "k": worker_args[1], "error": last}]
    return [json.loads(line[len(MARKER) :]) for line in output.splitlines() if line.startswith(MARKER)]


def print_table(records: list[dict]) -> None:
    train = [r for r in records if r["method"] in METHODS and "step_s" in r]
    if train:
        print(f"\n{'K':>3} {'method':>10} {'step s':>8} {'cpu s':>8} {'peak MB':>8} {'tokens':>7} {'s/shared':>9}")
        for k in sorted({r["k"] for r in train}):
            rows = {r["method"]: r for r in train if r["k"] == k}
            base = rows.get("shared", {}).get("step_s")
            for method in METHODS:
                if method in rows:
                    r = rows[method]
                    ratio = f"{r['step_s'] / base:.2f}x" if base else "-"
                    print(
                        f"{k:>3} {method:>10} {r['step_s']:>8.2f} {r['cpu_s']:>8.2f} {r['peak_mb']:>8.0f} "
                        f"{r['tokens']:>7} {ratio:>9}"
                    )
    for r in records:
        if r["method"].startswith("eval") or r["method"] == "check" or "error" in r:
            print(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=5, help="users for the evaluation throughput (0: skip)")
    parser.add_argument("--check", action="store_true", help="only the exactness check on SmolLM2")
    parser.add_argument("--json", action="store_true", help="print one JSON line per configuration")
    parser.add_argument("--output", help="also append each configuration's JSON line to this file")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: all cores)")
    parser.add_argument("--policy", action="store_true", help="only shared vs unshared vs auto, interleaved")
    parser.add_argument("--shapes", nargs="+", default=list(POLICY_SHAPES), choices=list(POLICY_SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="--policy/--sweep: interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="--policy: one round, MovieLens at K=4")
    parser.add_argument("--sweep", action="store_true", help="only the step time of each layout against tokens")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "eval":
            records = eval_worker(int(rest[0]))
        elif kind == "check":
            records = [check_worker()]
        elif kind == "policy":
            records = policy_worker(rest[2:], int(rest[0]), int(rest[1]) or None)
        elif kind == "sweep":
            records = sweep_worker(int(rest[0]))
            records.append(fit_sweep(records))
        else:
            records = [train_worker(kind, int(rest[0]), int(rest[1]), int(rest[2]))]
        for record in records:
            print(MARKER + json.dumps(record))  # the Trainer prints its own dicts to stdout too
        return

    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)
    records = []
    if args.policy or args.sweep:
        records.append(environment())
        print(json.dumps(records[-1]), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(records[-1]) + "\n")
    jobs = [("check",)] if args.check else []
    if args.policy:
        rounds, movielens_k = (1, 4) if args.quick else (args.rounds, 0)
        jobs = [("policy", str(rounds), str(movielens_k), *args.shapes)]
    elif args.sweep:
        jobs = [("sweep", str(args.rounds))]
    elif not args.check:
        jobs += [(m, str(k), str(args.steps), str(args.warmup)) for k in args.k for m in args.methods]
        if args.eval_users:
            jobs.append(("eval", str(args.eval_users)))
    for job in jobs:
        for record in run_in_subprocess(*job):
            records.append(record)
            print(json.dumps(record) if args.json else f"done: {record}", flush=True)
            if args.output:
                from dmpo_trl.models import DEFAULT_MODEL
                from dmpo_trl.provenance import provenance

                with open(args.output, "a") as f:
                    f.write(json.dumps({**record, "provenance": provenance(DEFAULT_MODEL)}) + "\n")
    print_table(records)
    print_policy_table(records)


if __name__ == "__main__":
    main()
