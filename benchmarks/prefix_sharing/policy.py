"""The sharing policy (`prefix_sharing="auto"`): shared, unshared and auto steps interleaved on the same rows, the
sweep of step time against token counts that sets `dmpo_trl.collator.ATTENTION_LENGTH`, and their table."""

from __future__ import annotations

import os
import statistics
import time

from .workers import lora_config, movielens_rows, progress


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
