import json
import logging
import math

import pytest
import torch
from datasets import Dataset
from tiny_models import build_model, build_tokenizer
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl._trl_compat import trainer_metrics
from dmpo_trl.scoring import tokenize_for_scoring


ROWS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Fargo"]},
    {"prompt": "The user watched Fargo, Babe. Next:", "chosen": " Heat", "rejected": [" Titanic"]},
    {"prompt": "The user watched Toy Story. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless"]},
    {"prompt": "The user watched Casino. Next:", "chosen": " Heat", "rejected": [" Babe", " Toy Story"]},
]


def make_args(tmp_path, config_class=DMPOConfig, **overrides):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-3,
        beta=0.5,
        max_steps=2,
    )
    defaults.update(overrides)
    return config_class(**defaults)


def make_trainer(tokenizer, tmp_path, rows=ROWS, ref_seed=1, **overrides):
    return DMPOTrainer(
        build_model(tokenizer, seed=0),
        ref_model=build_model(tokenizer, seed=ref_seed),
        args=make_args(tmp_path, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def batch_of(trainer, indices=None, dataset=None):
    dataset = dataset or trainer.train_dataset
    indices = range(len(dataset)) if indices is None else indices
    return trainer.data_collator([dataset[i] for i in indices])


def sequence_logp(model, tokenizer, prompt, response):
    """Summed log-prob of `response + eos` after `prompt`, computed directly from the model's logits."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0, :-1]
    logps = logits.log_softmax(-1).gather(-1, torch.tensor(full_ids[1:]).unsqueeze(-1)).squeeze(-1)
    return logps[len(prompt_ids) - 1 :].sum().item()


@pytest.mark.parametrize("loss_type", ["dmpo", "sdpo", "sigmoid", "plackett_luce"])
def test_loss_matches_hand_computation(tokenizer, tmp_path, loss_type):
    """The loss equals the formula applied to log-probs computed independently from the raw models."""
    trainer = make_trainer(tokenizer, tmp_path, loss_type=[loss_type])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch_of(trainer, [0])).item()
    row, beta = ROWS[0], 0.5
    policy, ref = trainer.model, trainer.ref_model

    def reward(response):
        return beta * (
            sequence_logp(policy, tokenizer, row["prompt"], response)
            - sequence_logp(ref, tokenizer, row["prompt"], response)
        )

    chosen, rejected = reward(row["chosen"]), [reward(r) for r in row["rejected"]]
    if loss_type == "dmpo":
        expected = -math.log(torch.sigmoid(torch.tensor(chosen - sum(rejected) / len(rejected))).item())
    elif loss_type == "sdpo":
        expected = math.log1p(sum(math.exp(r - chosen) for r in rejected))
    elif loss_type == "plackett_luce":  # the ranking chosen > rejected[0] > rejected[1] > ..., one softmax per place
        ranking = [chosen, *rejected]
        expected = sum(
            math.log(sum(math.exp(later) for later in ranking[i:])) - ranking[i] for i in range(len(ranking) - 1)
        )
    else:
        expected = sum(-math.log(torch.sigmoid(torch.tensor(chosen - r)).item()) for r in rejected) / len(rejected)
    assert loss == pytest.approx(expected, abs=1e-5)
    # the trainer's own logged rewards agree with the independent computation
    metrics = {key: values[-1] for key, values in trainer_metrics(trainer, "eval").items()}
    assert metrics["rewards/chosen"] == pytest.approx(chosen, abs=1e-5)
    assert metrics["rewards/rejected"] == pytest.approx(sum(rejected) / 3, abs=1e-5)
    assert metrics["rewards/rejected_max"] == pytest.approx(max(rejected), abs=1e-5)
    assert metrics["rewards/accuracies"] == float(chosen > max(rejected))
    assert metrics["num_negatives"] == 3


@pytest.mark.parametrize("loss_type", ["dmpo", "sdpo", "sigmoid", "plackett_luce"])
def test_k1_equals_trl_dpo_loss_and_gradients(tokenizer, tmp_path, loss_type):
    pairs = [{**row, "rejected": row["rejected"][0]} for row in ROWS]
    ours = make_trainer(tokenizer, tmp_path / "ours", rows=pairs, loss_type=[loss_type])
    trl = DPOTrainer(
        build_model(tokenizer, seed=0),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path / "trl", config_class=DPOConfig),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    for key in ("prompt_ids", "chosen_ids"):
        assert ours.train_dataset[key] == trl.train_dataset[key]
    assert [ids[0] for ids in ours.train_dataset["rejected_ids"]] == trl.train_dataset["rejected_ids"]

    losses = []
    for trainer in (ours, trl):
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch_of(trainer))
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-5
    for (name, p_ours), (_, p_trl) in zip(ours.model.named_parameters(), trl.model.named_parameters()):
        torch.testing.assert_close(p_ours.grad, p_trl.grad, atol=1e-5, rtol=0, msg=name)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/rejected"):
        expected = trainer_metrics(trl, "train")[key][-1]
        assert trainer_metrics(ours, "train")[key][-1] == pytest.approx(expected, abs=1e-5), key


@pytest.mark.parametrize("loss_type", ["dmpo", "sdpo", "sigmoid", "plackett_luce"])
def test_mixed_k_batch_equals_rows_one_by_one(tokenizer, tmp_path, loss_type):
    trainer = make_trainer(tokenizer, tmp_path, loss_type=[loss_type])
    trainer.model.eval()
    with torch.no_grad():
        batch_loss = trainer.compute_loss(trainer.model, batch_of(trainer)).item()
        row_losses = [trainer.compute_loss(trainer.model, batch_of(trainer, [i])).item() for i in range(len(ROWS))]
    assert batch_loss == pytest.approx(sum(row_losses) / len(row_losses), abs=1e-5)


def test_sft_term_is_added(tokenizer, tmp_path):
    plain = make_trainer(tokenizer, tmp_path / "a", loss_type=["dmpo"])
    with_sft = make_trainer(tokenizer, tmp_path / "b", loss_type=["dmpo", "sft"], loss_weights=[1.0, 1.0])
    with torch.no_grad():
        batch = batch_of(plain)
        difference = with_sft.compute_loss(with_sft.model, batch) - plain.compute_loss(plain.model, batch)
    # the SFT term is the mean NLL per chosen token over the batch
    nll = -sum(sequence_logp(plain.model, tokenizer, row["prompt"], row["chosen"]) for row in ROWS)
    n_tokens = sum(len(ids) for ids in plain.train_dataset["chosen_ids"])
    assert difference.item() == pytest.approx(nll / n_tokens, abs=1e-5)


@pytest.mark.slow
def test_training_lowers_loss_and_raises_accuracy(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, ref_seed=0, max_steps=30, learning_rate=3e-3, beta=0.5)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    assert logs[0]["rewards/accuracies"] == 0.0  # policy == reference at the start
    assert logs[-1]["rewards/accuracies"] == 1.0
    assert logs[-1]["rewards/margins"] > 0


def test_lora_without_ref_model(tokenizer, tmp_path):
    from peft import LoraConfig

    trainer = DMPOTrainer(
        build_model(tokenizer),
        args=make_args(tmp_path, max_steps=10, learning_rate=1e-2),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs[0]["rewards/chosen"] == 0.0  # the reference is the base model: LoRA starts as a no-op
    assert logs[-1]["loss"] < logs[0]["loss"]
    for name, param in trainer.model.named_parameters():
        if "lora" not in name:
            assert torch.equal(param, base_before[name]), name


def test_precomputed_reference_matches_on_the_fly(tokenizer, tmp_path):
    live = make_trainer(tokenizer, tmp_path / "live")
    cached = make_trainer(tokenizer, tmp_path / "cached", precompute_ref_log_probs=True)
    assert len(cached.train_dataset["ref_rejected_logps"][0]) == 3  # padded to the largest K
    with torch.no_grad():
        a = live.compute_loss(live.model, batch_of(live))
        b = cached.compute_loss(cached.model, batch_of(cached))
    assert a.item() == pytest.approx(b.item(), abs=1e-5)
    cached.train()
    assert cached.state.global_step == 2


def test_evaluate_reports_eval_metrics(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path)
    metrics = trainer.evaluate(eval_dataset=Dataset.from_list(ROWS))
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/rejected_max", "eval_num_negatives"):
        assert key in metrics
    assert metrics["eval_num_negatives"] == pytest.approx(2.0)


def test_conversational_rows_with_k_negatives(tokenizer, tmp_path):
    def msg(role, text):
        return [{"role": role, "content": text}]

    rows = [
        {
            "prompt": msg("user", row["prompt"]),
            "chosen": msg("assistant", row["chosen"].strip()),
            "rejected": [msg("assistant", r.strip()) for r in row["rejected"]],
        }
        for row in ROWS
    ]
    trainer = make_trainer(tokenizer, tmp_path, rows=rows)
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["chosen_ids"]) == "Casino<|end|>"
    assert [tokenizer.decode(ids) for ids in first["rejected_ids"]] == [
        "Babe<|end|>",
        "Jumanji<|end|>",
        "Fargo<|end|>",
    ]
    trainer.train()
    assert trainer.state.global_step == 2


def test_prepare_dataset_equals_the_constructors(tokenizer, tmp_path):
    """The public preparation (the miner's, for each round's new rows) gives the rows the constructor gives, with
    their precomputed reference log-probs."""
    trainer = make_trainer(tokenizer, tmp_path, precompute_ref_log_probs=True)
    prepared = trainer.prepare_dataset(Dataset.from_list(ROWS), "train")
    assert prepared.to_list() == trainer.train_dataset.to_list()
    assert "ref_rejected_logps" in prepared.column_names


def test_trainer_and_scorer_tokenize_alike_with_tools_and_template_arguments(tmp_path):
    """One tokenization for training rows and scored candidates, `tools` and `chat_template_kwargs` included."""
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% if tools %}<|system|>{{ tools | length }} tools<|end|>{% endif %}"
        "{% if persona %}<|system|>{{ persona }}<|end|>{% endif %}" + tokenizer.chat_template
    )
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find a movie", "parameters": {}}}
    row = {
        "prompt": [{"role": "user", "content": "The user watched Heat. Next:"}],
        "chosen": [{"role": "assistant", "content": "Casino"}],
        "rejected": [[{"role": "assistant", "content": "Babe"}], [{"role": "assistant", "content": "Fargo"}]],
        "tools": json.dumps([tool]),
        "chat_template_kwargs": {"persona": "a critic"},
    }
    prepared = make_trainer(tokenizer, tmp_path, rows=[row]).train_dataset[0]
    prompt_ids, responses_ids = tokenize_for_scoring(
        tokenizer,
        row["prompt"],
        [row["chosen"], *row["rejected"]],
        tools=row["tools"],
        chat_template_kwargs=row["chat_template_kwargs"],
    )
    assert prepared["prompt_ids"] == prompt_ids
    assert [prepared["chosen_ids"], *prepared["rejected_ids"]] == responses_ids
    assert "1 tools" in tokenizer.decode(prompt_ids) and "a critic" in tokenizer.decode(prompt_ids)
    assert tokenize_for_scoring(tokenizer, row["prompt"], [row["chosen"]])[0] != prompt_ids


def test_max_negatives_subsamples_deterministically(tokenizer, tmp_path):
    a = make_trainer(tokenizer, tmp_path / "a", max_negatives=2)
    b = make_trainer(tokenizer, tmp_path / "b", max_negatives=2)
    assert [len(r) for r in a.train_dataset["rejected_ids"]] == [2, 1, 2, 2]
    assert a.train_dataset["rejected_ids"] == b.train_dataset["rejected_ids"]


def test_trl_pairwise_loss_types_still_work(tokenizer, tmp_path):
    pairs = [{**row, "rejected": row["rejected"][0]} for row in ROWS]
    trainer = make_trainer(tokenizer, tmp_path, rows=pairs, loss_type=["hinge"])
    trainer.train()
    assert trainer.state.global_step == 2
    expected = r"Row 0 of the train dataset has 3 rejected responses, but loss_type=\['hinge'\]"
    with pytest.raises(ValueError, match=expected):
        make_trainer(tokenizer, tmp_path, loss_type=["hinge"])


def test_plain_dpo_config_is_accepted(tokenizer, tmp_path):
    """A TRL script's DPOConfig works unchanged: TRL's sigmoid loss, here over K negatives."""
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path, config_class=DPOConfig),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2


BAD_ROWS = [
    ({"prompt": "p", "chosen": " a", "rejected": []}, r"Row {i}: `rejected` is an empty list"),
    ({"prompt": "p", "chosen": " a", "rejected": [" b", 3]}, r"Row {i}: `rejected\[1\]` must be a string"),
    ({"prompt": "p", "chosen": " a", "rejected": [" b", " a"]}, r"Row {i}: `rejected\[1\]` repeats the chosen"),
    (
        {"prompt": "p", "chosen": " a", "rejected": [[{"role": "assistant", "content": "b"}]]},
        r"Row {i}: plain text \(prompt, chosen\) mixed with conversational \(rejected\[0\]\)",
    ),
]


@pytest.mark.parametrize("bad_row, message", BAD_ROWS)
def test_bad_input_names_row_and_field(tokenizer, tmp_path, bad_row, message):
    from dmpo_trl.rows import check_row

    with pytest.raises(ValueError, match=message.format(i=1)):
        check_row(bad_row, index=1)
    try:  # through the trainer, as the second row of a dataset when Arrow can hold it beside a good row
        rows, index = [{"prompt": "q", "chosen": " x", "rejected": [" y"]}, bad_row], 1
        Dataset.from_list(rows)
    except Exception:
        rows, index = [bad_row], 0
    if bad_row["rejected"] and isinstance(bad_row["rejected"][-1], int):
        return  # Arrow itself refuses a column that mixes strings and integers
    with pytest.raises(ValueError, match=message.format(i=index)):
        make_trainer(tokenizer, tmp_path, rows=rows)


def test_rows_without_room_are_dropped_with_a_count(tokenizer, tmp_path, caplog):
    rows = ROWS + [{"prompt": "The user watched " + "Heat, " * 40 + "Next:", "chosen": " a", "rejected": [" b"]}]
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        trainer = make_trainer(tokenizer, tmp_path, rows=rows, max_length=40)
    assert len(trainer.train_dataset) == len(ROWS)
    assert "Dropped 1 of 5 rows from the train dataset" in caplog.text


def test_streamed_rows_without_room_are_dropped_and_reported(tokenizer, tmp_path, caplog):
    """A streamed dataset cannot be counted up front: rows are dropped, and named, as training reads them."""
    long_prompt = "The user watched " + "Heat, " * 40 + "Next:"
    rows = [
        ROWS[0],
        {"prompt": long_prompt, "chosen": " a", "rejected": [" b"]},
        {"prompt": "Next:", "chosen": " Heat", "rejected": [" Babe " * 30]},
        ROWS[1],
    ]
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path, max_length=40, max_steps=1),
        train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
        processing_class=tokenizer,
    )
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        kept = list(trainer.train_dataset)
    assert len(kept) == 3 and all(len(row["prompt_ids"]) < 40 for row in kept)
    assert [row["num_rejected"] for row in kept] == [3, 1, 1]
    assert "Dropped row 1 of the streamed train dataset" in caplog.text
    assert "1 row(s) dropped so far" in caplog.text
    assert "Row 2 of the streamed train dataset: a response runs past max_length=40" in caplog.text
    trainer.train()
    assert trainer.state.global_step == 1


def test_truncated_responses_are_counted(tokenizer, tmp_path, caplog):
    rows = [{"prompt": "Next:", "chosen": " Heat", "rejected": [" Babe " * 30, " Fargo"]}]
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        make_trainer(tokenizer, tmp_path, rows=rows, max_length=20)
    assert "1 of 1 rows in the train dataset have a response that runs past max_length=20" in caplog.text


@pytest.mark.parametrize("loss_type", ["dmpo", "plackett_luce"])
def test_length_normalized_rewards_match_hand_computation(tokenizer, tmp_path, loss_type):
    """length_normalize=True: rewards are beta times the mean per-token log-ratio (tokens of the response + EOS)."""
    from dmpo_trl.losses import PREFERENCE_LOSSES

    trainer = make_trainer(tokenizer, tmp_path, loss_type=[loss_type], length_normalize=True)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch_of(trainer, [0])).item()
    row = ROWS[0]
    prompt_len = len(tokenizer(row["prompt"])["input_ids"])

    def mean_logratio(response):
        length = len(tokenizer(row["prompt"] + response + tokenizer.eos_token)["input_ids"]) - prompt_len
        policy = sequence_logp(trainer.model, tokenizer, row["prompt"], response)
        ref = sequence_logp(trainer.ref_model, tokenizer, row["prompt"], response)
        return (policy - ref) / length

    chosen = torch.tensor([mean_logratio(row["chosen"])])
    rejected = torch.tensor([[mean_logratio(r) for r in row["rejected"]]])
    expected = PREFERENCE_LOSSES[loss_type](chosen, rejected, torch.ones_like(rejected, dtype=torch.bool), 0.5)
    assert loss == pytest.approx(expected.item(), abs=1e-5)
    assert trainer_metrics(trainer, "eval")["rewards/chosen"][-1] == pytest.approx(0.5 * chosen.item(), abs=1e-5)
    with pytest.raises(ValueError, match="length_normalize"):
        make_trainer(tokenizer, tmp_path, rows=[{**ROWS[1]}], loss_type=["hinge"], length_normalize=True)
