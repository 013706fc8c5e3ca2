# A 7B recommender with DMPO on a 24 GB consumer GPU: 4-bit QLoRA, the memory arithmetic, and the recipe.
# Plain-script version of qlora_consumer_gpu.ipynb (built from this file by examples/build_notebooks.py).
#
#     python examples/qlora_consumer_gpu.py                          # GPU: a 7B model; CPU: SmolLM2-135M in 4-bit
#     DMPO_EXAMPLES_7B=/path/to/7b python examples/qlora_consumer_gpu.py
#     DMPO_EXAMPLES_SMOKE=1 python examples/qlora_consumer_gpu.py    # seconds-scale settings (the test suite)

# %% [markdown]
# # DMPO with 4-bit QLoRA: a 7B recommender on a 24 GB GPU
#
# *This notebook is stored without outputs: its figures come from a GPU, and none was at hand when the other
# notebooks were run and saved. Run it on a GPU (`DMPO_EXAMPLES_7B=/path/to/7b` for a 7B model), or on CPU, where
# the embedded SmolLM2-135M runs the same code in 4-bit.*
#
# Full finetuning of a 7B model needs about 16 bytes per parameter (weights, gradients, two Adam moments, float32
# master weights): over 100 GB. QLoRA stores the frozen base in 4-bit NF4 and trains small LoRA adapters on every
# linear layer. In this library it is one switch, `load_in_4bit=True` (`--load_in_4bit` on the command line):
# NF4 with double quantisation, compute in bfloat16 (float16 on GPUs without it, float32 on CPU),
# `prepare_model_for_kbit_training`, and LoRA r=16, alpha=32 on all linear layers.
#
# ## The memory arithmetic
#
# For a Llama-7B shape (hidden 4096, 32 layers, MLP 11008, vocabulary 32000), one DMPO row with K=4 negatives whose
# prompt + response is 512 tokens, batch size 1, gradient checkpointing and prefix sharing (the prompt runs once for
# all five responses):

# %%
from transformers import LlamaConfig


GIB = 1024**3
config = LlamaConfig(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, vocab_size=32000)
h, n_layers, mlp, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
linear_params = n_layers * (4 * h * h + 3 * h * mlp)  # q, k, v, o + gate, up, down
embedding_params = 2 * vocab * h  # input embeddings + output head (not quantized)
total_params = linear_params + embedding_params + (2 * n_layers + 1) * h
lora_r, num_negatives, prompt_tokens, response_tokens = 16, 4, 480, 32
lora_params = n_layers * lora_r * (4 * (h + h) + 2 * (h + mlp) + (mlp + h))
packed_tokens = prompt_tokens + (num_negatives + 1) * (response_tokens + 1)  # prefix sharing

estimate = {
    "full finetuning (16 B/param)": 16 * total_params,
    "bf16 weights alone (LoRA without quantization)": 2 * total_params,
    "4-bit NF4 linear weights + double-quantized constants": linear_params * (0.5 + 1 / 64 + 4 / (64 * 256)),
    "embeddings + head in float32 (prepare_model_for_kbit_training)": 4 * embedding_params,
    "LoRA adapters: weights + grads + Adam (16 B/param)": 16 * lora_params,
    "activations: checkpointed layer inputs (bf16)": 2 * packed_tokens * h * n_layers,
    "activations: one layer recomputed + logits (fp32, x3)": 2 * packed_tokens * 6 * mlp
    + 3 * 4 * packed_tokens * vocab,
}
for name, size in estimate.items():
    print(f"{name:<66} {size / GIB:7.2f} GiB")
qlora = sum(v for k, v in estimate.items() if not k.startswith(("full", "bf16")))
print(f"{'QLoRA total (before the CUDA context and allocator slack)':<66} {qlora / GIB:7.2f} GiB")
print(f"{total_params / 1e9:.2f}B parameters, {lora_params / 1e6:.1f}M trainable, {packed_tokens} packed tokens")

# %% [markdown]
# About 5 GiB, far under a 24 GB card; `benchmarks/gpu_check.py` measures it on a real GPU with a random
# Llama-7B-shaped model (`torch.cuda.max_memory_allocated()` after one DMPO step). Without prefix sharing the five
# sequences would hold 5 x 512 tokens, so activations and logits grow about fourfold.
#
# ## The recipe
#
# On a GPU this trains a 7B instruct model (set `DMPO_EXAMPLES_7B` to a hub id or local path). Without a GPU a tiny
# stand-in runs the very same code: the embedded SmolLM2-135M-Instruct, quantized to 4-bit on the CPU.

# %%
import os

import torch

from dmpo_trl.recipe import SMOKE_SETTINGS, demo_arguments, run_recipe, smoke_mode


SMOKE = smoke_mode()  # DMPO_EXAMPLES_SMOKE=1: seconds-scale settings
GPU = torch.cuda.is_available()
if GPU and not SMOKE:
    MODEL = os.environ.get("DMPO_EXAMPLES_7B", "Qwen/Qwen2.5-7B-Instruct")
    settings = dict(num_train_users=256, num_test_users=500, num_candidates=20, activation_checkpointing=True)
elif SMOKE:
    MODEL = os.environ.get("DMPO_EXAMPLES_MODEL")
    settings = dict(SMOKE_SETTINGS)
else:  # CPU stand-in
    MODEL = os.environ.get("DMPO_EXAMPLES_MODEL")
    settings = dict(num_train_users=16, num_test_users=30, max_steps=4, warmup_steps=0)

data_args, training_args, model_args, recipe_args = demo_arguments(
    model_name_or_path=MODEL, load_in_4bit=True, output_dir="outputs/qlora", **settings
)
print(model_args.load_in_4bit, model_args.use_peft, model_args.use_bnb_nested_quant, model_args.lora_target_modules)

# %%
if GPU:
    torch.cuda.reset_peak_memory_stats()
result = run_recipe(data_args, training_args, model_args, recipe_args)
print(result.table())
model = result.trainer.model
print("4-bit base:", model.base_model.model.is_loaded_in_4bit)
print(f"trainable parameters: {sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
if GPU:
    print(f"torch.cuda.max_memory_allocated(): {torch.cuda.max_memory_allocated() / GIB:.2f} GiB")

# %% [markdown]
# ## Save, reload, merge
#
# `run_recipe` saved the adapter (a few MB) to `output_dir`. Reload it on the 4-bit base to get the trained model back,
# or merge it: the 4-bit base is dequantized and the adapter folded in, giving an ordinary checkpoint that computes
# what the QLoRA model computed.

# %%
from dmpo_trl.models import load_adapter_model


inputs = result.trainer.processing_class("The user has watched Heat (1995).", return_tensors="pt").to(model.device)
reloaded, _ = load_adapter_model(training_args.output_dir, model_args)  # 4-bit base + adapter
merged, tokenizer = load_adapter_model(training_args.output_dir, model_args, merge=True)
with torch.no_grad():
    model.eval()
    logits = model(**inputs).logits.float()
    print("reloaded vs trained:", (reloaded(**inputs).logits.float() - logits).abs().max().item())
    print("merged vs trained:  ", (merged(**inputs).logits.float() - logits).abs().max().item())
merged.save_pretrained(os.path.join(training_args.output_dir, "merged"))
tokenizer.save_pretrained(os.path.join(training_args.output_dir, "merged"))
