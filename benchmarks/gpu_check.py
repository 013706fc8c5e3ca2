"""GPU check: does a 7B model train with DMPO in 4-bit QLoRA within a 24 GB consumer card, and how fast is sharing?

A model of Llama-7B's shape (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocabulary 32000) with random
weights, loaded in 4-bit NF4 with double quantisation through `dmpo_trl.models.load_model_for_training` (the recipe's
QLoRA path: `BitsAndBytesConfig`, `prepare_model_for_kbit_training`, LoRA r=16 on every linear layer), trained for
one `DMPOTrainer` step on one row with K=4 negatives where prompt + response is 512 tokens, batch size 1, gradient
checkpointing, prefix sharing on (the default). Prints `torch.cuda.max_memory_allocated()` and whether it is under
22 GiB (room for the CUDA context and the allocator's slack on a 24 GB card).

The random checkpoint is never materialised in float32 on the CPU: each tensor is drawn on the GPU in bfloat16 and
written to disk one layer shard at a time (about 13.5 GB in a temporary folder), then transformers loads the shards and
quantizes them on the GPU, as it would a downloaded checkpoint. On one H100 the whole check takes 2-4 minutes.

Then the throughput table: a Llama-3.2-1B-shaped model (random weights, bf16, LoRA r=16 on every linear layer,
gradient checkpointing off) trains on MovieLens-shaped rows (a 448-token prompt, K=8 negatives of 12 tokens, batch 4)
with each layout side by side: `shared` (prefix sharing, dense mask, sdpa), `shared_flex` (prefix sharing,
FlexAttention block mask; GPU only: torch has no FlexAttention backward on CPU), `auto` (the default per-batch rule),
`unshared` (one sequence per response) and `trl_pairs` (TRL's `DPOTrainer` on each row exploded into K pairs, 4K
pairs per step so every step sees the same rows). For each: median step seconds after a warm-up step, preference
rows and policy tokens per second, peak GPU memory, and the ratios to `shared`. The whole script is sized to finish
in under 8 minutes on one H100/H200.

    python -m benchmarks.gpu_check                 # needs CUDA; refuses with a message on a CPU-only machine
    python -m benchmarks.gpu_check --tiny          # the same code paths on tiny Llamas, on CPU or GPU (seconds)
    python -m benchmarks.gpu_check --json          # also print one JSON line with the numbers
    python -m benchmarks.gpu_check --skip-7b       # the throughput table only (or --skip-throughput)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GIB = 1024**3
BUDGET_GIB = 22.0


def llama_shape(
    hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int, positions: int = 4096
) -> dict:
    """The `LlamaConfig` arguments of a Llama with these sizes."""
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=positions,
    )


LLAMA_7B = llama_shape(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000)
LLAMA_1B = llama_shape(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256)
TINY = llama_shape(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=1000, positions=1024)


def checkpointing_argument(config_class, enabled: bool) -> dict:
    """`activation_checkpointing` where transformers has it, else its older name `gradient_checkpointing`."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def build_tokenizer(vocab_size: int, directory: Path):
    """A word-level tokenizer over "w0" ... "w{n}" (plus pad/eos), so that N words are exactly N tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>")
    tokenizer.save_pretrained(directory)
    return tokenizer


def write_random_checkpoint(shape: dict, directory: Path, device: str, seed: int = 0) -> float:
    """Save a random Llama of `shape` as bfloat16 safetensors shards (one per layer), drawing each tensor on `device`.

    The model is built on the meta device only to list parameter names and shapes; no full copy of the weights ever
    exists in host memory. Returns the size written in GiB.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, bos_token_id=None, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    shards: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, param in skeleton.state_dict().items():
        part = name.split(".")
        key = f"layer{int(part[2]):03d}" if part[:2] == ["model", "layers"] else "other"
        shards.setdefault(key, []).append((name, tuple(param.shape)))
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_map, total = {}, 0
    for index, (_key, entries) in enumerate(sorted(shards.items())):
        tensors = {}
        for name, shape_ in entries:
            if name.endswith("norm.weight"):
                tensor = torch.ones(shape_, dtype=torch.bfloat16, device=device)
            else:
                tensor = torch.empty(shape_, dtype=torch.bfloat16, device=device).normal_(0, 0.02, generator=generator)
            tensors[name] = tensor.cpu()
            total += tensor.numel() * 2
        filename = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(directory / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, filename))
        del tensors
    index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=1))
    config.dtype = "bfloat16"
    config.save_pretrained(directory)
    return total / GIB


def preference_row(num_negatives: int, sequence_tokens: int, response_tokens: int, vocab_size: int, seed: int = 0):
    """One row whose prompt + each response is `sequence_tokens` tokens (response: `response_tokens` incl. EOS)."""
    import random

    rng = random.Random(seed)
    words = lambda n: " ".join(f"w{rng.randrange(vocab_size - 2)}" for _ in range(n))  # noqa: E731
    prompt_tokens = sequence_tokens - response_tokens
    responses = [" " + words(response_tokens - 1) for _ in range(num_negatives + 1)]  # the trainer appends EOS
    return {"prompt": words(prompt_tokens), "chosen": responses[0], "rejected": responses[1:]}


def run_check(
    tiny: bool = False,
    num_negatives: int = 4,
    sequence_tokens: int = 512,
    response_tokens: int = 32,
    lora_r: int = 16,
    prefix_sharing: bool = True,
    gradient_checkpointing: bool = True,
    workdir: str | None = None,
) -> dict:
    """Build the random 4-bit model, run one DMPO step, and return memory and timing figures."""
    import torch
    from datasets import Dataset

    from dmpo_trl import DMPOConfig, DMPOTrainer
    from dmpo_trl.models import RecModelConfig, adapters_to_dtype, load_model_for_training

    cuda = torch.cuda.is_available()
    if not cuda and not tiny:
        raise SystemExit(
            "gpu_check needs a CUDA GPU for the 7B model (bitsandbytes 4-bit, ~6 GB of weights). On this machine run "
            "`python -m benchmarks.gpu_check --tiny`, which exercises the same code path on a tiny Llama."
        )
    shape = TINY if tiny else LLAMA_7B
    device = "cuda" if cuda else "cpu"
    if tiny:
        sequence_tokens, response_tokens = min(sequence_tokens, 128), min(response_tokens, 8)
    root = Path(workdir or tempfile.mkdtemp(prefix="dmpo-gpu-check-"))
    checkpoint = root / "random-llama"
    checkpoint.mkdir(parents=True, exist_ok=True)
    timings = {}
    try:
        started = time.perf_counter()
        size_gib = write_random_checkpoint(shape, checkpoint, device)
        build_tokenizer(shape["vocab_size"], checkpoint)
        timings["write_checkpoint_s"] = time.perf_counter() - started

        started = time.perf_counter()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        model_args = RecModelConfig(model_name_or_path=str(checkpoint), load_in_4bit=True, lora_r=lora_r)
        model, tokenizer, peft_config = load_model_for_training(model_args, gradient_checkpointing)
        timings["load_4bit_s"] = time.perf_counter() - started
        weights_gib = torch.cuda.memory_allocated() / GIB if cuda else None

        row = preference_row(num_negatives, sequence_tokens, response_tokens, shape["vocab_size"])
        args = DMPOConfig(
            str(root / "out"),
            max_steps=1,
            per_device_train_batch_size=1,
            learning_rate=1e-4,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            **checkpointing_argument(DMPOConfig, gradient_checkpointing),
            prefix_sharing=prefix_sharing,
            max_length=sequence_tokens + 8,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        )
        trainer = DMPOTrainer(
            model,
            args=args,
            train_dataset=Dataset.from_list([row]),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        compute_dtype = model.config.quantization_config.bnb_4bit_compute_dtype
        if compute_dtype != torch.bfloat16:
            adapters_to_dtype(trainer.model, torch.float32)
        prepared = trainer.train_dataset[0]
        tokens = {
            "prompt": len(prepared["prompt_ids"]),
            "responses": [len(prepared["chosen_ids"])] + [len(r) for r in prepared["rejected_ids"]],
        }
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        started = time.perf_counter()
        trainer.train()
        timings["train_step_s"] = time.perf_counter() - started
        loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
        peak_gib = torch.cuda.max_memory_allocated() / GIB if cuda else None
        return {
            "model": "llama-7b-shape" if not tiny else "tiny-llama",
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "checkpoint_gib_bf16": round(size_gib, 2),
            "weights_4bit_gib": round(weights_gib, 2) if cuda else None,
            "max_memory_allocated_gib": round(peak_gib, 2) if cuda else None,
            "under_22_gib": bool(peak_gib < BUDGET_GIB) if cuda else None,
            "num_negatives": num_negatives,
            "tokens": tokens,
            "prefix_sharing": prefix_sharing,
            "gradient_checkpointing": gradient_checkpointing,
            "trainable_params": trainable,
            "loss": loss,
            "timings_s": {key: round(value, 1) for key, value in timings.items()},
        }
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


THROUGHPUT_LAYOUTS = ("shared", "shared_flex", "auto", "unshared", "trl_pairs")


def run_throughput(
    tiny: bool = False,
    num_negatives: int = 8,
    prompt_tokens: int = 448,
    response_tokens: int = 12,
    batch_size: int = 4,
    steps: int = 3,
    layouts: tuple[str, ...] = THROUGHPUT_LAYOUTS,
) -> list[dict]:
    """Train steps of every layout on the same rows; return one figure dict per layout (see the module docstring)."""
    import statistics

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from dmpo_trl import DMPOConfig, DMPOTrainer

    cuda = torch.cuda.is_available()
    if not cuda and not tiny:
        raise SystemExit("The throughput table needs a CUDA GPU; `--tiny` runs the same code paths on CPU.")
    shape = TINY if tiny else LLAMA_1B
    if tiny:
        prompt_tokens, response_tokens, steps = min(prompt_tokens, 48), min(response_tokens, 4), min(steps, 2)
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    device = "cuda" if cuda else "cpu"
    root = Path(tempfile.mkdtemp(prefix="dmpo-throughput-"))
    tokenizer = build_tokenizer(shape["vocab_size"], root / "tokenizer")
    rows = [
        preference_row(num_negatives, prompt_tokens + response_tokens, response_tokens, shape["vocab_size"], seed=i)
        for i in range(batch_size * (steps + 1))
    ]
    pairs = [{**row, "rejected": rejected} for row in rows for rejected in row["rejected"]]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.started = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.started)

    results = []
    try:
        for layout in layouts:
            if layout == "shared_flex" and not cuda:
                continue
            torch.manual_seed(0)
            attention = "flex_attention" if layout == "shared_flex" else "sdpa"
            config = LlamaConfig(**shape, bos_token_id=None, pad_token_id=0, eos_token_id=1)
            model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
            model.set_attn_implementation(attention)
            common = dict(
                output_dir=str(root / layout),
                max_steps=steps + 1,
                learning_rate=1e-4,
                bf16=dtype == torch.bfloat16,
                **checkpointing_argument(DPOConfig, False),
                report_to=[],
                save_strategy="no",
                logging_steps=1,
                disable_tqdm=True,
                use_cpu=not cuda,
            )
            lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
            if layout == "trl_pairs":
                trainer_class, data = DPOTrainer, pairs
                args = DPOConfig(per_device_train_batch_size=batch_size * num_negatives, **common)
            else:
                trainer_class, data = DMPOTrainer, rows
                sharing = {"shared": True, "shared_flex": True, "auto": "auto", "unshared": False}[layout]
                args = DMPOConfig(per_device_train_batch_size=batch_size, prefix_sharing=sharing, **common)
            trainer = trainer_class(
                model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer, peft_config=lora
            )
            first = trainer.data_collator([trainer.train_dataset[i] for i in range(args.per_device_train_batch_size)])
            tokens = int(first["attention_mask"].sum())
            timer = StepTimer()
            trainer.add_callback(timer)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            trainer.train()
            step_s = statistics.median(timer.times[1:])  # after the warm-up step
            results.append(
                {
                    "layout": layout,
                    "attention": attention,
                    "packed": "block_ids" in first,
                    "step_s": step_s,
                    "rows_per_s": batch_size / step_s,
                    "tokens_per_step": tokens,
                    "tokens_per_s": tokens / step_s,
                    "peak_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
                }
            )
            del trainer, model
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def throughput_table(results: list[dict]) -> str:
    """Markdown table of `run_throughput`'s figures with ratios to the `shared` layout."""
    base = next(r for r in results if r["layout"] == "shared")
    lines = [
        "| layout | attention | step (s) | x shared | rows/s | tokens/step | tokens/s | peak GiB | x shared |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a"
        peak_ratio = f"{r['peak_gib'] / base['peak_gib']:.2f}x" if r["peak_gib"] and base["peak_gib"] else "n/a"
        lines.append(
            f"| {r['layout']} | {r['attention']} | {r['step_s']:.3f} | {r['step_s'] / base['step_s']:.2f}x | "
            f"{r['rows_per_s']:.2f} | {r['tokens_per_step']} | {r['tokens_per_s']:.0f} | {peak} | {peak_ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama instead of the 7B shape (runs on CPU)")
    parser.add_argument("--k", type=int, default=4, help="negatives per row (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=512, help="prompt + response tokens (default: %(default)s)")
    parser.add_argument("--response-tokens", type=int, default=32, help="tokens per response (default: %(default)s)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default: %(default)s)")
    parser.add_argument("--no-prefix-sharing", dest="prefix_sharing", action="store_false")
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--workdir", help="keep the random checkpoint there (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    parser.add_argument("--skip-7b", action="store_true", help="only the throughput table")
    parser.add_argument("--skip-throughput", action="store_true", help="only the 7B 4-bit memory check")
    args = parser.parse_args(argv)
    status = 0
    if not args.skip_7b:
        status = memory_check(args)
    if not args.skip_throughput:
        import torch

        results = run_throughput(tiny=args.tiny)
        shape = "tiny Llama" if args.tiny else "Llama-3.2-1B shape"
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"\nthroughput: {shape} on {device}, LoRA r=16, K=8 MovieLens-shaped rows, batch 4")
        print(throughput_table(results))
        if args.json:
            print(json.dumps({"throughput": results}))
    return status


def memory_check(args) -> int:
    """The 7B 4-bit QLoRA step: print its figures; 1 when the peak is over the budget."""
    result = run_check(
        tiny=args.tiny,
        num_negatives=args.k,
        sequence_tokens=args.tokens,
        response_tokens=args.response_tokens,
        lora_r=args.lora_r,
        prefix_sharing=args.prefix_sharing,
        gradient_checkpointing=args.gradient_checkpointing,
        workdir=args.workdir,
    )
    tokens = result["tokens"]
    print(f"model: {result['model']} on {result['device']}, 4-bit NF4 + double quant, LoRA r={args.lora_r}")
    print(
        f"row: prompt {tokens['prompt']} tokens, {len(tokens['responses'])} responses of {tokens['responses'][0]} "
        f"tokens (K={result['num_negatives']}), prefix sharing {'on' if result['prefix_sharing'] else 'off'}, "
        f"gradient checkpointing {'on' if result['gradient_checkpointing'] else 'off'}"
    )
    print(f"one DMPOTrainer step: loss {result['loss']:.4f}, {result['trainable_params']:,} trainable parameters")
    print(f"timings: {result['timings_s']}")
    if result["under_22_gib"] is None:
        print("torch.cuda.max_memory_allocated(): n/a (no CUDA; the tiny path checks the code, not the memory)")
    else:
        verdict = "UNDER" if result["under_22_gib"] else "OVER"
        print(
            f"torch.cuda.max_memory_allocated(): {result['max_memory_allocated_gib']:.2f} GiB "
            f"(4-bit weights {result['weights_4bit_gib']:.2f} GiB) -> {verdict} the {BUDGET_GIB:.0f} GiB budget"
        )
    if args.json:
        from dmpo_trl.provenance import provenance

        print(json.dumps({**result, "provenance": provenance()}))  # random weights: no model origin to record
    return 0 if result["under_22_gib"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
