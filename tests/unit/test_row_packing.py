"""Several rows in one packed sequence (`pack_rows`): exact against one row per sequence, or off with a warning.

In fp32, eval mode (no dropout): per-sequence log-probs and the loss agree within 1e-5 and parameter gradients within
1e-4 between rows grouped several per sequence and the one-row-per-sequence packed layout, on full attention
(Llama), sliding windows (Mistral, Qwen2, Gemma 3's mixed layers), learned positions (GPT-2, OPT) and MoE with its
router loss (Mixtral, Qwen2-MoE); the evaluation loss and `prediction_step` agree too.
"""

import logging

import pytest
import torch
from datasets import Dataset
from test_architectures import ROWS, loss_logps_and_grads, make_trainer
from tiny_models import build_model

from dmpo_trl import DataCollatorForMultiPreference, DMPOConfig, DMPOTrainer
from dmpo_trl._trl_compat import trainer_metrics
from dmpo_trl.collator import grouped_lengths, grouping, layout_cost, packed_length
from dmpo_trl.sharing import block_attention_mask, block_mask_function, group_rows, unpack_rows


EXACT_ARCHITECTURES = ["llama", "mistral", "qwen2-sliding", "gemma3", "gpt2", "opt", "mixtral", "qwen2-moe"]


def test_group_rows_fits_the_budget_and_balances():
    lengths = [500, 300, 200, 450, 90, 610]
    for budget in (None, 700, 1000, 2150):
        groups = group_rows(lengths, budget)
        assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
        sizes = [sum(lengths[index] for index in group) for group in groups]
        assert budget is None or max(sizes) <= budget
    assert group_rows(lengths, None) == [list(range(6))]
    assert len(group_rows(lengths, 1000)) == 3  # 2150 tokens: three sequences of at most 1000
    # two sequences of 59 tokens would pad more than three of 36: one row per sequence
    assert group_rows([32, 27, 36], max_length=60) == [[0], [1], [2]]
    # a row over the budget sets the padded length: the others fill sequences up to it
    assert group_rows([3000, 1000, 900, 800], max_length=1000) == [[0], [1, 2, 3]]
    assert grouped_lengths([3000, 1000, 900, 800], max_packed_length=1000) == (2, 3000)


def test_auto_groups_only_where_it_costs_less():
    even, uneven = [500, 520, 510, 490], [547, 220] * 4
    assert grouping(even) == [[0, 1, 2, 3]]  # the fewest padded tokens
    assert grouping(even, by_cost=True) == [[0], [1], [2], [3]]  # one longer sequence costs more attention
    assert grouping([2000, 100, 100, 100], max_packed_length=2000, by_cost=True) == [[0], [1, 2, 3]]
    by_cost = grouped_lengths(uneven, by_cost=True)
    assert by_cost[0] < len(uneven) and layout_cost(*by_cost) < layout_cost(len(uneven), max(uneven))
    assert layout_cost(*by_cost) <= layout_cost(*grouped_lengths(uneven))
    rows = [
        {"prompt_ids": list(range(1, length - 5)), "chosen_ids": [1, 2], "rejected_ids": [[3]]} for length in uneven
    ]
    auto = DataCollatorForMultiPreference(0, share_prompt=True, pack_rows="auto")
    assert auto(rows)["input_ids"].size(0) == by_cost[0] and "row_ids" in auto(rows)
    same_length = [rows[0]] * 4
    assert "row_ids" not in auto(same_length)
    assert auto(same_length)["input_ids"].equal(
        DataCollatorForMultiPreference(0, share_prompt=True)(same_length)["input_ids"]
    )


def tokenized_rows(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, "llama", rows=ROWS * 2, prefix_sharing=True)
    return [trainer.train_dataset[i] for i in range(2 * len(ROWS))]


@pytest.mark.parametrize("max_packed_length", [None, 100])
def test_each_row_keeps_its_one_row_layout(tokenizer, tmp_path, max_packed_length):
    rows = tokenized_rows(tokenizer, tmp_path)
    one_row = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True)(rows)
    grouped = DataCollatorForMultiPreference(
        tokenizer.pad_token_id, share_prompt=True, pack_rows=True, max_packed_length=max_packed_length
    )(rows)
    lengths = [packed_length(row) for row in rows]
    expected_sequences = 1 if max_packed_length is None else len(group_rows(lengths, max_packed_length))
    assert grouped["input_ids"].size(0) == expected_sequences < len(rows)
    assert grouped["attention_mask"].sum() == one_row["attention_mask"].sum()  # the same real tokens
    assert grouped["input_ids"].numel() < one_row["input_ids"].numel()  # less padding
    for row in range(len(rows)):
        mine = grouped["row_ids"] == row
        for key in ("input_ids", "position_ids", "block_ids", "labels", "owner"):
            assert grouped[key][mine].tolist() == one_row[key][row][one_row["block_ids"][row] >= 0].tolist(), key
    assert (grouped["row_ids"] == -1).equal(grouped["block_ids"] == -1)
    assert unpack_rows(grouped) == unpack_rows(one_row)
    for key in ("num_rejected", "rejected_index", "rejected_mask", "sequence_rows"):
        assert grouped[key].equal(one_row[key])


def test_attention_never_crosses_rows():
    block_ids = torch.tensor([[0, 0, 1, 2, 0, 1, 1, -1]])
    row_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, -1]])
    position_ids = torch.tensor([[0, 1, 2, 2, 0, 1, 2, 0]])
    mask = block_attention_mask(block_ids, row_ids=row_ids)[0, 0]
    assert mask[4].tolist() == [False] * 4 + [True] + [False] * 3  # row 1's prompt starts afresh
    assert mask[6].tolist() == [False] * 4 + [True, True, True, False]
    assert mask[3].tolist() == [True, True, False, True] + [False] * 4  # block 2 sees its prompt, not block 1
    across = row_ids[0].unsqueeze(1) != row_ids[0].unsqueeze(0)
    assert not (mask & across & ~torch.eye(8, dtype=torch.bool)).any()
    # FlexAttention's mask_mod says the same as the dense mask, with and without a sliding window
    query, key = torch.arange(8).view(8, 1), torch.arange(8).view(1, 8)
    for window in (None, 2):
        dense = block_attention_mask(block_ids, None, position_ids, window, row_ids)[0, 0]
        flex = block_mask_function(block_ids, position_ids, window, row_ids)(torch.tensor(0), None, query, key)
        assert flex.equal(dense)


def loss_logps_grads_aux(trainer, batch):
    """Loss, per-sequence log-probs, parameter gradients and the MoE router loss (when enabled) of one step."""
    loss, logps, grads = loss_logps_and_grads(trainer, batch)
    aux = trainer_metrics(trainer, "eval")["aux_loss"][-1] if trainer.aux_loss_enabled else None
    return loss, logps, grads, aux


@pytest.mark.parametrize("arch", EXACT_ARCHITECTURES)
def test_grouped_rows_equal_one_row_per_sequence(tokenizer, tmp_path, arch):
    trainer = make_trainer(tokenizer, tmp_path, arch, prefix_sharing=True, pack_rows=True)
    assert trainer.data_collator.pack_rows is True and trainer.data_collator.share_prompt is True
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))] * 2  # 6 rows of 27-36 tokens
    one_row = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True)(rows)
    expected = loss_logps_grads_aux(trainer, one_row)
    for budget in (None, 100):  # all rows in one sequence; two sequences
        grouped = DataCollatorForMultiPreference(
            tokenizer.pad_token_id, share_prompt=True, pack_rows=True, max_packed_length=budget
        )(rows)
        assert grouped["input_ids"].size(0) < len(rows)
        loss, logps, grads, aux = loss_logps_grads_aux(trainer, grouped)
        torch.testing.assert_close(loss, expected[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(logps, expected[1], atol=1e-5, rtol=0)
        assert grads.keys() == expected[2].keys() and grads
        for name in grads:
            torch.testing.assert_close(grads[name], expected[2][name], atol=1e-4, rtol=0, msg=name)
        if trainer.aux_loss_enabled:  # the router loss is in the loss, with the token weights of one row each
            assert expected[3] > 0 and aux == pytest.approx(expected[3], abs=1e-6)


@pytest.mark.parametrize("arch", ["mistral", "gemma3"])
def test_eager_sliding_window_grouped_rows_equal_one_row(tokenizer, tmp_path, arch):
    trainer = make_trainer(tokenizer, tmp_path, arch, prefix_sharing=True)
    for model in (trainer.model, trainer.ref_model):
        model.set_attn_implementation("eager")
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    one_row = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True)(rows)
    grouped = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True, pack_rows=True)(rows)
    (loss_a, logps_a, grads_a, _), (loss_b, logps_b, grads_b, _) = (
        loss_logps_grads_aux(trainer, grouped),
        loss_logps_grads_aux(trainer, one_row),
    )
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=0)
    torch.testing.assert_close(logps_a, logps_b, atol=1e-5, rtol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-4, rtol=0, msg=name)


def test_flex_attention_grouped_rows_equal_one_row(tokenizer, tmp_path):
    """FlexAttention's sparse BlockMask skips other rows; its forward (no backward on CPU) gives the same log-probs."""
    torch._dynamo.reset()
    trainer = make_trainer(tokenizer, tmp_path, "gemma3", prefix_sharing=True)
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    one_row = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True)(rows)
    grouped = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True, pack_rows=True)(rows)
    with torch.no_grad():
        expected = trainer._sequence_logps(trainer.model, one_row)[0]
        trainer.model.set_attn_implementation("flex_attention")
        torch.testing.assert_close(trainer._sequence_logps(trainer.model, grouped)[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_evaluation_and_prediction_equal_one_row_per_sequence(tokenizer, tmp_path, arch):
    trainers = {
        pack: make_trainer(tokenizer, tmp_path / str(pack), arch, prefix_sharing=True, pack_rows=pack)
        for pack in (True, False)
    }
    losses = {pack: trainer.evaluate(Dataset.from_list(ROWS))["eval_loss"] for pack, trainer in trainers.items()}
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    trainer = trainers[True]
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    predictions = {}
    for pack in (True, False):
        batch = DataCollatorForMultiPreference(tokenizer.pad_token_id, share_prompt=True, pack_rows=pack)(rows)
        assert ("row_ids" in batch) is pack
        predictions[pack] = trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    (loss_a, logits_a, labels_a), (loss_b, logits_b, labels_b) = predictions[True], predictions[False]
    assert torch.equal(labels_a, labels_b)
    torch.testing.assert_close(logits_a, logits_b, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=0)


def test_training_with_grouped_rows_matches_one_row_per_sequence(tokenizer, tmp_path):
    rows = ROWS * 2
    losses = {}
    for pack in (True, False):
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(
                str(tmp_path / str(pack)),
                prefix_sharing=True,
                pack_rows=pack,
                bf16=False,
                report_to=[],
                save_strategy="no",
                max_steps=2,
                logging_steps=1,
                learning_rate=1e-2,
                per_device_train_batch_size=3,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        trainer.train()
        losses[pack] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_refused_architecture_turns_row_packing_off_with_a_warning(tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        trainer = make_trainer(tokenizer, tmp_path, "falcon-alibi", prefix_sharing=True, pack_rows=True)
    refusals = [r.getMessage() for r in caplog.records if "Prefix sharing is off" in r.getMessage()]
    assert len(refusals) == 1 and "row packing" in refusals[0] and "ALiBi" in refusals[0]
    rows = [trainer.train_dataset[i] for i in range(len(ROWS))]
    batch = trainer.data_collator(rows)
    assert "row_ids" not in batch and "block_ids" not in batch


def test_config_parses_pack_rows():
    assert DMPOConfig("out", report_to=[], pack_rows="auto").pack_rows == "auto"
    assert DMPOConfig("out", report_to=[], pack_rows="true").pack_rows is True
    assert DMPOConfig("out", report_to=[]).pack_rows == "auto"  # the default: group where it costs less
    assert DMPOConfig("out", report_to=[], pack_rows="false").pack_rows is False
    with pytest.raises(ValueError, match="pack_rows"):
        DMPOConfig("out", report_to=[], pack_rows="sometimes")
    with pytest.raises(ValueError, match="pack_rows"):
        DataCollatorForMultiPreference(0, pack_rows="yes")
