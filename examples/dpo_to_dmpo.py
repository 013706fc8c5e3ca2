# From TRL's DPO to DMPO: the same script, with a different trainer class and K rejected titles per row.
# Plain-script version of dpo_to_dmpo.ipynb (built from this file by examples/build_notebooks.py).
#
#     python examples/dpo_to_dmpo.py                          # SmolLM2-135M on CPU, a few minutes
#     DMPO_EXAMPLES_SMOKE=1 python examples/dpo_to_dmpo.py    # seconds-scale settings (the test suite)

# %% [markdown]
# # From a TRL DPO script to DMPO
#
# `DMPOTrainer` is TRL's `DPOTrainer` with one generalisation: a row's `rejected` may be a **list of K responses**,
# all contrasted with the chosen one in one loss. Moving a DPO script over takes two changes:
#
# 1. the classes: `DPOConfig` / `DPOTrainer` become `DMPOConfig` / `DMPOTrainer`;
# 2. the data: `rejected` becomes a list of K negatives (pairwise rows still work and give exactly TRL's DPO loss).
#
# We train both on the same MovieLens users and rank the same test users' candidates.

# %%
import os

from peft import LoraConfig

from dmpo_trl.data import build_preference_dataset, few_shot_split, load_movielens
from dmpo_trl.evaluation import evaluate_ranking
from dmpo_trl.models import load_model_and_tokenizer
from dmpo_trl.recipe import smoke_mode, summary_table


SMOKE = smoke_mode()  # DMPO_EXAMPLES_SMOKE=1: seconds-scale settings
MODEL = os.environ.get("DMPO_EXAMPLES_MODEL")  # None: the embedded SmolLM2-135M-Instruct
NUM_TRAIN, NUM_TEST, CANDIDATES, K, STEPS = (8, 6, 5, 2, 2) if SMOKE else (32, 50, 10, 4, 8)

log = load_movielens("movielens-100k")
split = few_shot_split(log, num_train_users=NUM_TRAIN, num_valid_users=0, num_test_users=NUM_TEST, max_history=5)

# %% [markdown]
# ## 1. The TRL DPO script
#
# One rejected title per row: the plain TRL recipe.

# %%
from trl import DPOConfig, DPOTrainer


model, tokenizer = load_model_and_tokenizer(MODEL)
pairs = build_preference_dataset(log, split.train, num_negatives=1, num_candidates=CANDIDATES, conversational=True)
pairs = pairs.map(lambda row: {"rejected": row["rejected"][0]})  # TRL's pairwise format: one rejected response
print(pairs[0]["chosen"], "vs", pairs[0]["rejected"])

dpo_args = DPOConfig(
    "outputs/dpo",
    bf16=False,  # float32: this notebook runs on CPU (TRL defaults to bf16)
    learning_rate=5e-4,
    max_steps=STEPS,
    per_device_train_batch_size=4,
    beta=0.1,
    activation_checkpointing=False,
    dataloader_pin_memory=False,  # on CPU: pinned memory only speeds up copies to a GPU
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=SMOKE,
)
dpo = DPOTrainer(
    model,
    args=dpo_args,
    train_dataset=pairs,
    processing_class=tokenizer,
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
)
dpo.train()

# %% [markdown]
# ## 2. The DMPO version
#
# The diff: import `DMPOConfig` / `DMPOTrainer` instead, and build K negatives per row.

# %%
from dmpo_trl import DMPOConfig, DMPOTrainer


model, tokenizer = load_model_and_tokenizer(MODEL)
rows = build_preference_dataset(log, split.train, num_negatives=K, num_candidates=CANDIDATES, conversational=True)
print(rows[0]["chosen"], "vs", rows[0]["rejected"])

dmpo_args = DMPOConfig(
    "outputs/dmpo",
    bf16=False,
    learning_rate=5e-4,
    max_steps=STEPS,
    per_device_train_batch_size=4,
    beta=0.1,
    activation_checkpointing=False,
    dataloader_pin_memory=False,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=SMOKE,
    loss_type=["dmpo"],  # the default; "sdpo" (softmax DPO), "sigmoid" (mean of K DPO pairs), + "sft" also work
)
dmpo = DMPOTrainer(
    model,
    args=dmpo_args,
    train_dataset=rows,
    processing_class=tokenizer,
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
)
dmpo.train()

# %% [markdown]
# ## 3. Rank the same candidates with both
#
# Every test user gets the same `CANDIDATES` titles for both models (the lists depend only on the user and the seed).

# %%
results = {
    name: evaluate_ranking(
        trainer.model, tokenizer, split.test, log, num_candidates=CANDIDATES, conversational=True, progress=not SMOKE
    )
    for name, trainer in (("dpo (K=1)", dpo), (f"dmpo (K={K})", dmpo))
}
print(summary_table(results, ("hit_ratio@1", "ndcg@5", "mrr")))
