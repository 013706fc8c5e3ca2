"""`share_prompt="auto"`: the per-batch choice between the packed (shared) and the unshared layout."""

import pytest
import torch
from datasets import Dataset
from tiny_models import build_model
from transformers import HfArgumentParser

from dmpo_trl import DataCollatorForMultiPreference, DMPOConfig, DMPOTrainer
from dmpo_trl.collator import MAX_PACKED_LENGTH, layout_lengths, shares_prompt


def row(prompt: int, response: int, k: int = 4, start: int = 10) -> dict:
    """A tokenized row: `prompt` prompt tokens, then K+1 responses of `response` tokens (ids from `start` on)."""
    ids = iter(range(start, start + prompt + (k + 1) * response))
    take = lambda n: [next(ids) for _ in range(n)]  # noqa: E731
    return {
        "prompt_ids": take(prompt),
        "chosen_ids": take(response),
        "rejected_ids": [take(response) for _ in range(k)],
    }


SHORT_RESPONSES = row(450, 8, k=8)  # a MovieLens candidate list and title responses
LONG_RESPONSES = row(30, 400)  # a short question, long answers
EQUAL_LENGTHS = row(200, 200)  # UltraFeedback-shaped: responses as long as the prompt


def test_layout_lengths_follow_the_collator():
    examples = [SHORT_RESPONSES, EQUAL_LENGTHS]
    for max_length in (None, 300):
        lengths = layout_lengths(examples, max_length)
        shared = DataCollatorForMultiPreference(0, max_length=max_length, share_prompt=True)(examples)
        unshared = DataCollatorForMultiPreference(0, max_length=max_length, share_prompt=False)(examples)
        assert lengths["shared"] == tuple(shared["input_ids"].shape)
        assert lengths["unshared"] == tuple(unshared["input_ids"].shape)
    assert layout_lengths([EQUAL_LENGTHS], pad_to_multiple_of=64) == {"shared": (1, 1216), "unshared": (5, 448)}


def test_short_responses_share_long_responses_do_not():
    assert shares_prompt([SHORT_RESPONSES])
    assert shares_prompt([EQUAL_LENGTHS])  # 1204 packed tokens against 5 x 400
    assert not shares_prompt([LONG_RESPONSES])  # 2034 packed tokens against 5 x 430: fewer, but attention is L^2


def test_packed_length_is_bounded():
    # a long prompt with K=16 short-ish responses: packing saves most tokens, but the packed row is long
    example = row(MAX_PACKED_LENGTH - 1000, 100, k=16)
    lengths = layout_lengths([example])
    assert lengths["shared"][1] > MAX_PACKED_LENGTH
    assert lengths["shared"][0] * lengths["shared"][1] < lengths["unshared"][0] * lengths["unshared"][1] / 5
    assert not shares_prompt([example])
    assert shares_prompt([example], max_packed_length=None)
    assert not shares_prompt([SHORT_RESPONSES], max_packed_length=400)  # 457 + 9 x 9 tokens packed
    batch = DataCollatorForMultiPreference(0, share_prompt="auto")([example])
    assert "block_ids" not in batch


@pytest.mark.parametrize("max_length", [None, 500])
@pytest.mark.parametrize("examples", [[SHORT_RESPONSES], [LONG_RESPONSES], [SHORT_RESPONSES, EQUAL_LENGTHS]])
def test_auto_batch_is_exactly_one_of_the_two_layouts(examples, max_length):
    examples = [{**example, "ref_chosen_logps": -1.0, "ref_rejected_logps": [-2.0] * 8} for example in examples]
    auto = DataCollatorForMultiPreference(0, max_length=max_length, pad_to_multiple_of=8, share_prompt="auto")
    shared = auto.uses_shared_layout(examples)
    assert shared == shares_prompt(examples, max_length, 8)
    expected = DataCollatorForMultiPreference(0, max_length=max_length, pad_to_multiple_of=8, share_prompt=shared)
    batch, reference = auto(examples), expected(examples)
    assert batch.keys() == reference.keys()
    assert ("block_ids" in batch) is shared
    for key in batch:
        assert torch.equal(batch[key], reference[key]), key


def test_auto_never_shares_with_keep_end():
    collator = DataCollatorForMultiPreference(0, max_length=600, truncation_mode="keep_end", share_prompt="auto")
    assert "block_ids" not in collator([SHORT_RESPONSES])
    with pytest.raises(ValueError, match="keep_start"):
        DataCollatorForMultiPreference(0, truncation_mode="keep_end", share_prompt=True)([SHORT_RESPONSES])


def test_explicit_settings_override_the_rule():
    assert "block_ids" in DataCollatorForMultiPreference(0, share_prompt=True)([LONG_RESPONSES])
    assert "block_ids" not in DataCollatorForMultiPreference(0, share_prompt=False)([SHORT_RESPONSES])
    with pytest.raises(ValueError, match="share_prompt must be True, False or 'auto'"):
        DataCollatorForMultiPreference(0, share_prompt="yes")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("true", True),
        ("True", True),
        ("false", False),
        (True, True),
        (False, False),
    ],
)
def test_config_prefix_sharing_values(value, expected):
    assert DMPOConfig("out", report_to=[], prefix_sharing=value).prefix_sharing == expected


def test_config_prefix_sharing_from_the_command_line():
    parser = HfArgumentParser(DMPOConfig)
    assert parser.parse_args_into_dataclasses(["--output_dir", "out"])[0].prefix_sharing == "auto"
    for text, expected in (("false", False), ("true", True), ("auto", "auto")):
        args = parser.parse_args_into_dataclasses(["--output_dir", "out", "--prefix_sharing", text])[0]
        assert args.prefix_sharing == expected
    with pytest.raises(ValueError, match="`prefix_sharing` must be auto, true or false, got 'sometimes'"):
        DMPOConfig("out", report_to=[], prefix_sharing="sometimes")


def test_trainer_passes_the_setting_to_the_collator(tokenizer, tmp_path):
    rows = [{"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe"]}]
    for setting, loss_type, expected in (
        ("auto", ["dmpo"], "auto"),
        ("auto", ["hinge"], False),
        (True, ["dmpo"], True),
    ):
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(str(tmp_path), prefix_sharing=setting, loss_type=loss_type, bf16=False, report_to=[]),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        assert trainer.data_collator.share_prompt == expected


@pytest.mark.slow
def test_training_with_auto_matches_unshared_across_layouts(tokenizer, tmp_path):
    # batches of one row: long-prompt rows are packed, long-response rows are not, in one run
    long_prompt = "The user watched " + ", ".join(["Heat", "Fargo", "Babe", "Casino"] * 6) + ". Next:"
    long_response = " " + " ".join(["Star Wars (1977)"] * 12)
    rows = [
        {"prompt": long_prompt, "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Heat"]},
        {
            "prompt": "Next:",
            "chosen": long_response,
            "rejected": [long_response + " Fargo", " Titanic" + long_response],
        },
    ] * 2
    losses, layouts = {}, []
    for sharing in ("auto", False):
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(
                str(tmp_path / str(sharing)),
                prefix_sharing=sharing,
                bf16=False,
                report_to=[],
                save_strategy="no",
                max_steps=4,
                logging_steps=1,
                learning_rate=1e-2,
                per_device_train_batch_size=1,
                seed=3,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        if sharing == "auto":
            layouts = [trainer.data_collator.uses_shared_layout([trainer.train_dataset[i]]) for i in range(2)]
        trainer.train()
        losses[sharing] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert layouts == [True, False]
    assert losses["auto"] == pytest.approx(losses[False], abs=1e-4)
