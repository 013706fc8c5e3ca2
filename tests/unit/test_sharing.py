import logging

import pytest
import torch
from datasets import Dataset
from tiny_models import build_model

from dmpo_trl import DataCollatorForMultiPreference, DMPOConfig, DMPOTrainer
from dmpo_trl.scoring import score_completions_shared
from dmpo_trl.sharing import block_attention_mask, pack_row


ROWS = [
    {"prompt": "The user watched Heat, Fargo. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Heat"]},
    {"prompt": "The user watched Babe. Next:", "chosen": " Star Wars (1977)", "rejected": [" Titanic"]},
    {"prompt": "Toy Story. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless (1995)"]},
]


def test_pack_row_layout():
    row = pack_row([5, 6, 7], [[8], [9, 10]])
    assert row["input_ids"] == [5, 6, 7, 8, 7, 9, 10]
    assert row["position_ids"] == [0, 1, 2, 3, 2, 3, 4]
    assert row["block_ids"] == [0, 0, 1, 1, 2, 2, 2]
    assert row["labels"] == [-100, -100, 8, -100, 9, 10, -100]
    assert row["owner"] == [-1, -1, 0, -1, 1, 1, -1]
    # max_length cuts each completion so that prompt + completion fits, as the unshared collator does
    assert pack_row([5, 6, 7], [[8, 9, 10]], max_length=4)["labels"] == [-100, -100, 8, -100]


def test_block_attention_mask():
    mask = block_attention_mask(torch.tensor([[0, 0, 1, 1, 2, 2, -1]]))[0, 0]
    assert mask[3].tolist() == [True, True, True, True, False, False, False]  # block 1 sees prompt + itself
    assert mask[5].tolist() == [True, True, False, False, True, True, False]  # block 2 does not see block 1
    assert mask[6].tolist() == [False] * 6 + [True]  # padding sees only itself
    additive = block_attention_mask(torch.tensor([[0, 1]]), dtype=torch.float32)[0, 0]
    assert additive[0, 1] == torch.finfo(torch.float32).min and additive[1, 0] == 0


def prepared_rows(tokenizer, tmp_path, rows=ROWS):
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=DMPOConfig(str(tmp_path), bf16=False, report_to=[], gradient_checkpointing=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer, [trainer.train_dataset[i] for i in range(len(rows))]


def logps_and_grads(trainer, model, batch):
    model.zero_grad()
    seq_logps = trainer._sequence_logps(model, batch)[0]
    weights = torch.linspace(-1.0, 2.0, seq_logps.numel())  # any fixed combination exercises every sequence's grad
    (seq_logps * weights).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return seq_logps.detach(), grads


def assert_shared_equals_unshared(trainer, model, rows, pad_token_id):
    shared = DataCollatorForMultiPreference(pad_token_id=pad_token_id, share_prompt=True)(rows)
    unshared = DataCollatorForMultiPreference(pad_token_id=pad_token_id)(rows)
    assert shared["input_ids"].numel() < unshared["input_ids"].numel()
    logps_shared, grads_shared = logps_and_grads(trainer, model, shared)
    logps_unshared, grads_unshared = logps_and_grads(trainer, model, unshared)
    assert logps_shared.shape == (len(rows) + sum(len(r["rejected_ids"]) for r in rows),)
    torch.testing.assert_close(logps_shared, logps_unshared, atol=1e-4, rtol=0)
    assert grads_shared.keys() == grads_unshared.keys() and grads_shared
    for name in grads_shared:
        torch.testing.assert_close(grads_shared[name], grads_unshared[name], atol=1e-4, rtol=0, msg=name)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_logps_and_grads_equal_unshared(tokenizer, tmp_path, arch, attn):
    trainer, rows = prepared_rows(tokenizer, tmp_path)
    model = build_model(tokenizer, arch=arch, seed=3)
    model.set_attn_implementation(attn)
    from trl.trainer import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    assert_shared_equals_unshared(trainer, model, rows, tokenizer.pad_token_id)


def test_shared_equals_unshared_with_lora_and_gradient_checkpointing(tokenizer, tmp_path):
    from peft import LoraConfig

    trainer = DMPOTrainer(
        build_model(tokenizer),
        args=DMPOConfig(str(tmp_path), bf16=False, report_to=[], gradient_checkpointing=True),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    trainer.model.train()
    trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    assert_shared_equals_unshared(trainer, trainer.model, rows, tokenizer.pad_token_id)


def test_shared_equals_unshared_with_4bit_qlora(tokenizer, tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    trainer = DMPOTrainer(
        str(tiny_model_dir),
        args=DMPOConfig(str(tmp_path), bf16=False, report_to=[], gradient_checkpointing=False),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        quantization_config=quantization,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    assert trainer.model.is_loaded_in_4bit
    # TRL keeps QLoRA adapters in bf16; compare in fp32 so the 1e-4 tolerance measures the layout, not bf16 rounding
    for param in trainer.model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    assert_shared_equals_unshared(trainer, trainer.model, rows, tokenizer.pad_token_id)


@pytest.mark.slow
def test_training_with_sharing_matches_without(tokenizer, tmp_path):
    losses = {}
    for sharing in (True, False):
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(
                str(tmp_path / str(sharing)),
                prefix_sharing=sharing,
                bf16=False,
                report_to=[],
                save_strategy="no",
                max_steps=3,
                logging_steps=1,
                learning_rate=1e-2,
                per_device_train_batch_size=3,
            ),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )
        assert trainer.data_collator.share_prompt is sharing
        trainer.train()
        losses[sharing] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


def test_unsupported_attention_falls_back_with_a_warning(tokenizer, tmp_path, caplog):
    model = build_model(tokenizer)
    model.config._attn_implementation = "flash_attention_2"  # what a model loaded for FlashAttention reports
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        trainer = DMPOTrainer(
            model,
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(str(tmp_path), bf16=False, report_to=[]),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )
    assert trainer.data_collator.share_prompt is False
    assert "Prefix sharing is off: the model's attention implementation 'flash_attention_2'" in caplog.text


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_score_completions_shared_matches_direct_computation(tokenizer, attn):
    model = build_model(tokenizer)
    model.set_attn_implementation(attn)
    prompt = tokenizer("The user watched Heat. Next:")["input_ids"]
    completions = [tokenizer(t + "<|end|>")["input_ids"] for t in [" Casino", " Star Wars (1977)", " Babe"]]
    scores = score_completions_shared(model, prompt, completions)
    for score, completion in zip(scores, completions):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(completion).unsqueeze(-1)).sum()
        assert score.item() == pytest.approx(expected.item(), abs=1e-4)


def test_prediction_step_gives_one_row_per_sequence_in_either_layout(tokenizer, tmp_path):
    seen = []

    def compute_metrics(prediction):
        seen.append(prediction.predictions.shape)
        return {"rows": float(prediction.predictions.shape[0])}

    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=DMPOConfig(str(tmp_path), bf16=False, report_to=[], per_device_eval_batch_size=len(ROWS)),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    rows = [trainer.eval_dataset[i] for i in range(len(ROWS))]
    results = {}
    for share in (True, False):
        batch = DataCollatorForMultiPreference(pad_token_id=tokenizer.pad_token_id, share_prompt=share)(rows)
        results[share] = trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    (loss_s, logits_s, labels_s), (loss_u, logits_u, labels_u) = results[True], results[False]
    num_sequences = len(ROWS) + sum(len(row["rejected_ids"]) for row in rows)
    assert logits_s.shape[0] == labels_s.shape[0] == num_sequences
    assert torch.equal(labels_s, labels_u)
    torch.testing.assert_close(logits_s, logits_u, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss_s, loss_u, atol=1e-4, rtol=0)
    assert trainer.evaluate()["eval_rows"] == num_sequences and seen
