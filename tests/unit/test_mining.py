"""Negatives mined from the model (dmpo_trl.mining) on a tiny model and a synthetic log, and training in rounds."""

import random

import pytest
import torch
from peft import LoraConfig
from tiny_models import build_model

from dmpo_trl import DMPOConfig
from dmpo_trl.data import ANSWER_PREFIX, HISTORY_TEMPLATE, InteractionLog, few_shot_split, render_prompt
from dmpo_trl.mining import MinedNegativesTraining, NegativeMiner
from dmpo_trl.scoring import score_candidates


def synthetic_log(num_users=30, num_items=40, seed=0):
    rng = random.Random(seed)
    titles = {f"i{k}": f"Movie {k} ({1950 + k})" for k in range(num_items)}
    sequences = {f"u{u}": rng.sample(sorted(titles), 6 + u % 4) for u in range(num_users)}
    return InteractionLog(sequences, titles, name="synthetic")


@pytest.fixture(scope="module")
def log():
    return synthetic_log()


@pytest.fixture(scope="module")
def examples(log):
    return few_shot_split(log, num_train_users=8, num_valid_users=0, num_test_users=4, max_history=3, seed=1).train


def direct_scores(model, tokenizer, log, example, items):
    """Each item's summed log-likelihood after the history prompt, scored one row at a time."""
    prompt = render_prompt(HISTORY_TEMPLATE, [log.titles[i] for i in example.history]) + ANSWER_PREFIX
    return score_candidates(model, tokenizer, prompt, [f" {log.titles[i]}" for i in items]).tolist()


def test_mined_negatives_are_the_top_scored_wrong_items_of_the_pool(log, examples, tokenizer, tiny_model):
    miner = NegativeMiner(log, num_negatives=3, pool_size=10, seed=5)
    mined = miner.mine(tiny_model, tokenizer, examples)
    for example, negatives in zip(examples, mined):
        pool = miner.pool(example)
        touched = set(log.sequences[example.user])
        assert len(pool) == len(set(pool)) == 10 and not touched & set(pool) and example.target not in pool
        scores = dict(zip(pool, direct_scores(tiny_model, tokenizer, log, example, pool)))
        top = sorted(pool, key=lambda item: -scores[item])[:3]
        assert (
            negatives == top
            or min(scores[i] for i in negatives) >= max(scores[i] for i in pool if i not in negatives) - 1e-4
        )  # the same items (a near-tie may order them differently)
        assert [scores[i] for i in negatives] == sorted((scores[i] for i in negatives), reverse=True)
    rows = miner.rows(examples, mined)
    for example, negatives, row in zip(examples, mined, rows):
        assert row["rejected"] == [f" {log.titles[i]}" for i in negatives]
        assert row["chosen"] == f" {log.titles[example.target]}" and row["target"] == example.target


def test_the_mix_gives_the_requested_counts(log, examples, tokenizer, tiny_model):
    exclude = {"i0", "i1", "i2", "i3"}
    miner = NegativeMiner(log, num_negatives=4, model_fraction=0.5, pool_size=8, exclude=exclude)
    assert miner.num_from_model == 2
    pure = NegativeMiner(log, num_negatives=4, model_fraction=1.0, pool_size=8, exclude=exclude)
    mixed, hard = miner.mine(tiny_model, tokenizer, examples), pure.mine(tiny_model, tokenizer, examples)
    for example, negatives, all_hard in zip(examples, mixed, hard):
        assert len(negatives) == len(set(negatives)) == 4
        assert negatives[:2] == all_hard[:2]  # the same pool, so the same two best-scored items
        assert not set(negatives) & (set(log.sequences[example.user]) | exclude)
        assert not set(negatives[2:]) & set(negatives[:2])
    uniform = NegativeMiner(log, num_negatives=4, model_fraction=0.0)
    assert uniform.num_from_model == 0
    drawn = uniform.mine(None, None, examples)  # nothing is scored: no model needed
    assert all(len(set(n)) == 4 for n in drawn) and drawn != uniform.mine(None, None, examples, round_index=1)
    assert NegativeMiner(log, num_negatives=2, model_fraction=0.25).num_from_model == 1  # 0.5 rounds up
    assert NegativeMiner(log, num_negatives=8, model_fraction=0.3).num_from_model == 2


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(model_fraction=1.5), "model_fraction"),
        (dict(num_negatives=4, pool_size=3), "pool_size=3"),
        (dict(prompt_style="candidates"), "without a candidate list"),
        (dict(num_negatives=0), "num_negatives"),
    ],
)
def test_miner_refuses_bad_settings(log, settings, message):
    with pytest.raises(ValueError, match=message):
        NegativeMiner(log, **settings)


def test_refresh_follows_the_model(log, examples, tokenizer, tiny_model):
    miner = NegativeMiner(log, num_negatives=2, pool_size=12)
    first = miner.mine(tiny_model, tokenizer, examples)
    assert miner.mine(tiny_model, tokenizer, examples) == first  # same model, same round: same negatives
    other = build_model(tokenizer, seed=7)
    changed = miner.mine(other, tokenizer, examples)
    assert changed != first  # same pools, another model: other negatives
    assert [set(n) <= set(miner.pool(e)) for e, n in zip(examples, changed)] == [True] * len(examples)


def run_rounds(log, examples, tokenizer, output_dir, seed=0):
    torch.manual_seed(seed)
    model = build_model(tokenizer, seed=seed)
    args = DMPOConfig(
        output_dir=str(output_dir),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        activation_checkpointing=False,
        dataloader_pin_memory=False,
    )
    miner = NegativeMiner(log, num_negatives=2, model_fraction=0.5, pool_size=10, seed=seed)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    training = MinedNegativesTraining(
        model, miner, examples, args, processing_class=tokenizer, peft_config=peft_config
    )
    output = training.train()
    return training, output


@pytest.mark.slow
def test_two_rounds_train_end_to_end_and_are_deterministic(log, examples, tokenizer, tmp_path):
    training, output = run_rounds(log, examples, tokenizer, tmp_path / "a")
    assert training.num_rounds == 2 and len(training.negatives) == 2 and output.global_step == 4  # 8 rows, batch 4
    assert training.negatives[0] != training.negatives[1]  # refreshed for the second epoch
    steps = [entry for entry in training.log_history if "loss" in entry]
    assert [entry["mining_round"] for entry in steps] == [0, 0, 1, 1]
    rates = [entry["learning_rate"] for entry in steps]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 4  # one schedule over both rounds
    optimizer_steps = {int(state["step"]) for state in training.trainer.optimizer.state.values()}
    assert optimizer_steps == {4}  # the optimizer's moments carried over from round 1
    adapter = {n: p.detach().clone() for n, p in training.trainer.model.named_parameters() if "lora_B" in n}
    assert adapter and any(p.abs().sum() > 0 for p in adapter.values())  # trained (lora_B starts at zero)
    again, output_again = run_rounds(log, examples, tokenizer, tmp_path / "b")
    assert again.negatives == training.negatives and output_again.training_loss == output.training_loss
    for name, value in again.trainer.model.named_parameters():
        if "lora_B" in name:
            assert torch.equal(value, adapter[name])


def test_rounds_refuse_max_steps_and_fractional_epochs(log, examples, tokenizer, tmp_path):
    miner = NegativeMiner(log, num_negatives=2, model_fraction=0.0)
    for settings, message in ((dict(max_steps=3), "max_steps=3"), (dict(num_train_epochs=1.5), "whole number")):
        args = DMPOConfig(output_dir=str(tmp_path), report_to="none", **settings)
        with pytest.raises(ValueError, match=message):
            MinedNegativesTraining(build_model(tokenizer), miner, examples, args, processing_class=tokenizer)
