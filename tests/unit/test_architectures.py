"""The packed layout on every decoder-only architecture it may meet: exact, or refused with a warning.

For each tiny architecture (sliding windows shorter than the prompts, learned positions, ALiBi, MoE with its router
loss), in fp32: shared and unshared log-probs, losses and gradients are equal within 1e-4 in training and in the
ranking evaluator; a model the layout cannot run exactly is refused with one warning naming the reason, and the run
goes on unshared. With K = 1 the loss equals TRL's `DPOTrainer`, the MoE auxiliary loss included.
"""

import logging
import warnings

import pytest
import torch
from datasets import Dataset
from tiny_models import ARCHITECTURES, build_architecture
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DataCollatorForMultiPreference, DMPOConfig, DMPOTrainer
from dmpo_trl._trl_compat import attention_implementation, prepare_inputs, trainer_metrics
from dmpo_trl.scoring import score_completions, tokenize_for_scoring
from dmpo_trl.sharing import unsupported_reason


# Prompts of 10-20 tokens and responses of 2-8: longer than the 4-token windows of the sliding-window configs.
ROWS = [
    {"prompt": "The user watched Heat, Fargo and Casino. Next:", "chosen": " Babe", "rejected": [" Jumanji", " Heat"]},
    {"prompt": "The user watched Babe. Next:", "chosen": " Star Wars (1977)", "rejected": [" Titanic"]},
    {"prompt": "Toy Story, Babe. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless (1995)", " Z"]},
]
REFUSED = {"bloom": "position_ids", "falcon-alibi": "ALiBi"}


def make_args(tmp_path, config_class=DMPOConfig, **overrides):
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(ROWS),
        per_device_eval_batch_size=len(ROWS),
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        beta=0.5,
    )
    return config_class(**{**settings, **overrides})


def make_trainer(tokenizer, tmp_path, arch, rows=ROWS, model_config=None, **overrides):
    """Policy and reference of `arch` (`model_config` overrides their tiny config), `overrides` on the args."""
    model_config = model_config or {}
    return DMPOTrainer(
        build_architecture(tokenizer, arch, seed=0, **model_config),
        ref_model=build_architecture(tokenizer, arch, seed=1, **model_config),
        args=make_args(tmp_path, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def loss_logps_and_grads(trainer, batch):
    """Loss (MoE router loss included), per-sequence log-probs and parameter gradients of one step.

    In eval mode: dropout (OPT, GPT-2 and Bloom configs have it) would draw other masks in the two layouts.
    """
    model = trainer.model
    model.eval()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    with torch.no_grad():
        logps = trainer._sequence_logps(model, batch)[0]
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), logps, grads


def assert_same_step(first, second):
    (loss_a, logps_a, grads_a), (loss_b, logps_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, atol=1e-4, rtol=0)
    torch.testing.assert_close(logps_a, logps_b, atol=1e-4, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-4, rtol=0, msg=name)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_training_shared_equals_unshared_or_is_refused(tokenizer, tmp_path, arch, caplog):
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        trainer = make_trainer(tokenizer, tmp_path, arch, prefix_sharing=True)
    refusals = [r.getMessage() for r in caplog.records if "Prefix sharing is off" in r.getMessage()]
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    unshared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    if arch in REFUSED:
        assert len(refusals) == 1 and REFUSED[arch] in refusals[0], refusals
        assert trainer.data_collator.share_prompt is False
        assert "block_ids" not in trainer.data_collator(rows)
        return
    assert unsupported_reason(trainer.model) is None and not refusals
    shared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id, share_prompt=True)(rows)
    assert shared["input_ids"].numel() < unshared["input_ids"].numel()
    assert_same_step(loss_logps_and_grads(trainer, shared), loss_logps_and_grads(trainer, unshared))
    if trainer.aux_loss_enabled:  # the router loss is in the loss, and the same in both layouts
        aux_losses = trainer_metrics(trainer, "eval")["aux_loss"]
        assert len(aux_losses) == 2 and aux_losses[0] > 0
        assert aux_losses[0] == pytest.approx(aux_losses[1], abs=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_eval_loss_is_the_same_with_and_without_sharing(tokenizer, tmp_path, arch):
    losses = [
        make_trainer(tokenizer, tmp_path / str(share), arch, prefix_sharing=share).evaluate(Dataset.from_list(ROWS))
        for share in (True, False)
    ]
    assert losses[0]["eval_loss"] == pytest.approx(losses[1]["eval_loss"], abs=1e-4)


@pytest.mark.parametrize("arch", ["mistral", "gemma3"])
def test_eager_sliding_window_shared_equals_unshared(tokenizer, tmp_path, arch):
    trainer = make_trainer(tokenizer, tmp_path, arch, prefix_sharing=True)
    for model in (trainer.model, trainer.ref_model):
        model.set_attn_implementation("eager")
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    shared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id, share_prompt=True)(rows)
    unshared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    assert_same_step(loss_logps_and_grads(trainer, shared), loss_logps_and_grads(trainer, unshared))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_evaluator_scores_shared_equal_unshared_or_warn(tokenizer, arch):
    model = build_architecture(tokenizer, arch)
    prompt = [{"role": "user", "content": "The user watched Toy Story, Heat and Casino. Which movie is next?"}]
    titles = [[{"role": "assistant", "content": title}] for title in ("Star Wars", "Fargo (1996)", "Babe", "Heat")]
    prompt_ids, completions_ids = tokenize_for_scoring(tokenizer, prompt, titles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shared, counts = score_completions(model, tokenizer, prompt_ids, completions_ids, share_prompt=True)
    unshared, _ = score_completions(model, tokenizer, prompt_ids, completions_ids, share_prompt=False)
    refusals = [str(w.message) for w in caught if "without prefix sharing" in str(w.message)]
    if arch in REFUSED:
        assert refusals and REFUSED[arch] in refusals[0]
    else:
        assert not refusals
    assert (counts > 1).all()
    torch.testing.assert_close(shared, unshared, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_k1_equals_trl_dpo(tokenizer, tmp_path, arch, prefix_sharing):
    pairs = [{**row, "rejected": row["rejected"][0]} for row in ROWS]
    ours = make_trainer(tokenizer, tmp_path / "ours", arch, rows=pairs, prefix_sharing=prefix_sharing)
    trl = DPOTrainer(
        build_architecture(tokenizer, arch, seed=0),
        ref_model=build_architecture(tokenizer, arch, seed=1),
        args=make_args(tmp_path / "trl", config_class=DPOConfig),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    assert ours.aux_loss_enabled == trl.aux_loss_enabled == ("router_aux_loss_coef" in ARCHITECTURES[arch][1])
    steps = []
    for trainer in (ours, trl):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
        assert ("block_ids" in batch) == (trainer is ours and prefix_sharing and arch not in REFUSED)
        trainer.model.eval()  # no dropout
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        steps.append((loss.detach(), grads))
    torch.testing.assert_close(steps[0][0], steps[1][0], atol=1e-5, rtol=0)
    assert steps[0][1].keys() == steps[1][1].keys()
    for name in steps[0][1]:
        torch.testing.assert_close(steps[0][1][name], steps[1][1][name], atol=1e-4, rtol=0, msg=name)
    if trl.aux_loss_enabled:
        assert trainer_metrics(ours, "eval")["aux_loss"][-1] == pytest.approx(
            trainer_metrics(trl, "eval")["aux_loss"][-1], abs=1e-6
        )


# Models with dropout, handed to the trainer in train mode: OPT's is functional (`config.dropout`, out of
# `disable_dropout`'s reach), GPT-2's is in `nn.Dropout` modules (reached by `disable_dropout`, so it is off here).
DROPOUT = {"opt": {}, "gpt2": {"disable_dropout": False}}


@pytest.mark.parametrize("arch", sorted(DROPOUT))
def test_dropout_reference_runs_in_eval_mode(tokenizer, tmp_path, arch):
    """The reference is a fixed policy: repeated `evaluate()` gives the same eval_loss, shared equals unshared, and
    the reference model keeps the mode it came in."""
    losses = {}
    for share in (True, False):
        reference = build_architecture(tokenizer, arch, seed=1).train()
        trainer = DMPOTrainer(
            build_architecture(tokenizer, arch, seed=0),
            ref_model=reference,
            args=make_args(tmp_path / str(share), prefix_sharing=share, **DROPOUT[arch]),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )
        assert trainer.model.config.dropout > 0 if arch == "opt" else trainer.model.config.resid_pdrop > 0
        losses[share] = [trainer.evaluate(Dataset.from_list(ROWS))["eval_loss"] for _ in range(3)]
        assert reference.training
    assert losses[True] == pytest.approx([losses[True][0]] * 3, abs=1e-6)
    assert losses[False] == pytest.approx([losses[False][0]] * 3, abs=1e-6)
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-4)


@pytest.mark.parametrize("options", [{}, {"use_weighting": True}], ids=["dmpo", "trl-loss"])
def test_adapter_disabled_reference_runs_in_eval_mode(tokenizer, tmp_path, options):
    """With a LoRA policy and no reference model the reference is the base model: its log-probs are those of eval
    mode even while the policy trains (in either loss path), and the policy stays in train mode."""
    from peft import LoraConfig

    trainer = DMPOTrainer(
        build_architecture(tokenizer, "opt", seed=0),
        args=make_args(tmp_path, **options),
        train_dataset=Dataset.from_list([{**row, "rejected": row["rejected"][0]} for row in ROWS]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    trainer.model.eval()
    expected = trainer.compute_ref_log_probs(trainer.model, batch)
    trainer.model.train()
    for _ in range(2):
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
        torch.testing.assert_close(chosen, expected[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(rejected, expected[1], atol=1e-6, rtol=0)
    assert trainer.model.training and all(module.training for module in trainer.model.modules())


# Full, sliding-window and mixed layers; each compiles flex_attention with inductor, ~15 s on this CPU
FLEX = ["llama", "mistral", "gemma3"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", FLEX)
def test_flex_attention_block_mask_equals_unshared(tokenizer, tmp_path, arch):
    """FlexAttention gets the block structure as a sparse BlockMask; its forward (no backward on CPU in torch) gives
    the log-probs of the unshared forward, in the trainer and in the evaluator."""
    torch._dynamo.reset()  # transformers compiles flex_attention; inductor's CPU build of a recompile can fail
    trainer = make_trainer(tokenizer, tmp_path, arch, prefix_sharing=True)
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    shared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id, share_prompt=True)(rows)
    unshared = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        expected = trainer._sequence_logps(trainer.model, unshared)[0]
        trainer.model.set_attn_implementation("flex_attention")
        assert attention_implementation(trainer.model) == "flex_attention"
        assert unsupported_reason(trainer.model) is None
        torch.testing.assert_close(trainer._sequence_logps(trainer.model, shared)[0], expected, atol=1e-4, rtol=0)

    prompt_ids, completions_ids = rows[2]["prompt_ids"], [rows[2]["chosen_ids"], *rows[2]["rejected_ids"]]
    flex_scores, _ = score_completions(trainer.model, tokenizer, prompt_ids, completions_ids, share_prompt=True)
    trainer.model.set_attn_implementation("sdpa" if arch != "gemma2" else "eager")
    plain_scores, _ = score_completions(trainer.model, tokenizer, prompt_ids, completions_ids, share_prompt=False)
    torch.testing.assert_close(flex_scores, plain_scores, atol=1e-4, rtol=0)


def flex_training_steps(tokenizer, tmp_path, arch, attention="flex_attention"):
    """One step's loss, log-probs and gradients: unshared with sdpa, then shared with `attention` (policy and
    reference), on the device the trainer chose."""
    torch._dynamo.reset()
    # heads of 16 dimensions: FlexAttention's GPU kernels need at least 16
    trainer = make_trainer(tokenizer, tmp_path, arch, model_config={"head_dim": 16}, prefix_sharing=True)
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    unshared, shared = (
        prepare_inputs(trainer, DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=share)(rows))
        for share in (False, True)
    )
    expected = loss_logps_and_grads(trainer, unshared)
    for model in (trainer.model, trainer.ref_model):
        model.set_attn_implementation(attention)
    assert unsupported_reason(trainer.model) is None
    return loss_logps_and_grads(trainer, shared), expected, trainer


def test_flex_training_steps_helper_on_this_device(tokenizer, tmp_path):
    """The GPU test's helper runs here with sdpa (FlexAttention's backward needs a GPU): equal steps."""
    shared, unshared, _ = flex_training_steps(tokenizer, tmp_path, "llama", attention="sdpa")
    assert_same_step(shared, unshared)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has FlexAttention's backward on GPUs only")
@pytest.mark.parametrize("arch", FLEX)
def test_flex_attention_training_equals_unshared_on_gpu(tokenizer, tmp_path, arch):
    """On a GPU FlexAttention's backward runs too: the shared layout under the sparse BlockMask gives the unshared
    step's loss, log-probs and gradients."""
    shared, unshared, trainer = flex_training_steps(tokenizer, tmp_path, arch)
    assert trainer.model.device.type == "cuda" and attention_implementation(trainer.model) == "flex_attention"
    assert_same_step(shared, unshared)
