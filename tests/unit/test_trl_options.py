"""DPOTrainer options a TRL user passes: each gives TRL's numbers, or a clear refusal before any work."""

import inspect
import logging
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_from_disk
from PIL import Image
from test_trainer import ROWS, batch_of, make_args, make_trainer
from tiny_models import build_model, build_tokenizer
from transformers import CLIPImageProcessor, LlavaProcessor
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl._trl_compat import dataset_fingerprint
from dmpo_trl.config import LOSS_TYPES, TRL_LOSS_TYPES


LONG_ROW = {"prompt": "The user watched " + "Heat, " * 40 + "Next:", "chosen": " Fargo", "rejected": [" Babe"]}
PAIRS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": " Star Wars (1977)"},
    {"prompt": "The user watched Fargo. Next:", "chosen": " Heat and Casino", "rejected": " Babe"},
    {"prompt": "The user watched Babe. Next:", "chosen": " Toy Story", "rejected": " Clueless"},
]


def pretokenize(tokenizer, row):
    """The row's token ids, tokenized here without the trainer: prompt, then each response with EOS after it."""
    prompt_ids = tokenizer(row["prompt"])["input_ids"]

    def completion(response):
        full = tokenizer(row["prompt"] + response + tokenizer.eos_token)["input_ids"]
        assert full[: len(prompt_ids)] == prompt_ids
        return full[len(prompt_ids) :]

    rejected = row["rejected"]
    rejected_ids = completion(rejected) if isinstance(rejected, str) else [completion(r) for r in rejected]
    return {"prompt_ids": prompt_ids, "chosen_ids": completion(row["chosen"]), "rejected_ids": rejected_ids}


def loss_of(trainer):
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch_of(trainer)).item()


# ------------------------------------------------------------------ pre-tokenized datasets
@pytest.mark.parametrize("precompute", [False, True])
def test_pretokenized_rows_equal_text_rows(tokenizer, tmp_path, caplog, precompute):
    """K id lists per row: same `num_rejected`, subsample, max_length drop and loss as the same rows given as text."""
    rows = ROWS + [LONG_ROW]
    options = dict(max_negatives=2, max_length=40, precompute_ref_log_probs=precompute)
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        text = make_trainer(tokenizer, tmp_path / "text", rows=rows, **options)
        ids = make_trainer(tokenizer, tmp_path / "ids", rows=[pretokenize(tokenizer, row) for row in rows], **options)
    assert caplog.text.count("Dropped 1 of 5 rows from the train dataset") == 2
    assert len(ids.train_dataset) == len(ROWS)
    assert ids.train_dataset["num_rejected"] == [2, 1, 2, 2]
    columns = ["prompt_ids", "chosen_ids", "rejected_ids", "num_rejected"]
    columns += ["ref_chosen_logps", "ref_rejected_logps"] if precompute else []
    for column in columns:
        assert ids.train_dataset[column] == text.train_dataset[column], column
    assert loss_of(ids) == pytest.approx(loss_of(text), abs=1e-6)
    ids.train()
    assert ids.state.global_step == 2


@pytest.mark.parametrize("precompute", [False, True])
def test_pretokenized_pairwise_form_equals_text_pairs(tokenizer, tmp_path, precompute):
    """`rejected_ids` as one id list (TRL's pairwise form) is one rejected response."""
    rows = [pretokenize(tokenizer, row) for row in PAIRS]
    assert isinstance(rows[0]["rejected_ids"][0], int)
    text = make_trainer(tokenizer, tmp_path / "text", rows=PAIRS, precompute_ref_log_probs=precompute)
    ids = make_trainer(tokenizer, tmp_path / "ids", rows=rows, precompute_ref_log_probs=precompute)
    assert ids.train_dataset["rejected_ids"] == [[row["rejected_ids"]] for row in rows]
    assert ids.train_dataset["num_rejected"] == [1, 1, 1]
    assert loss_of(ids) == pytest.approx(loss_of(text), abs=1e-6)


BAD_TOKENIZED_ROWS = [
    ({"prompt_ids": [5, 6], "chosen_ids": [], "rejected_ids": [[7]]}, r"Row {i}: `chosen_ids` is empty"),
    ({"prompt_ids": [5, 6], "chosen_ids": [8], "rejected_ids": [[7], []]}, r"Row {i}: `rejected_ids\[1\]` is empty"),
    ({"prompt_ids": [5, 6], "chosen_ids": [8], "rejected_ids": []}, r"Row {i}: `rejected_ids` is empty"),
    ({"prompt_ids": [5, 6], "chosen_ids": [8], "rejected_ids": [[7], [8]]}, r"Row {i}: `rejected_ids\[1\]` repeats"),
    ({"prompt_ids": [5, 6], "chosen_ids": [8], "rejected_ids": [[7, 99999]]}, r"Row {i}: `rejected_ids\[0\]` holds"),
    ({"prompt_ids": [5, -1], "chosen_ids": [8], "rejected_ids": [[7]]}, r"Row {i}: `prompt_ids` holds token id -1"),
    ({"prompt_ids": "5 6", "chosen_ids": [8], "rejected_ids": [[7]]}, r"Row {i}: `prompt_ids` must be a list of"),
]


@pytest.mark.parametrize("bad_row, message", BAD_TOKENIZED_ROWS)
def test_bad_pretokenized_row_names_row_and_field(tokenizer, tmp_path, bad_row, message):
    rows, index = [{"prompt_ids": [5], "chosen_ids": [6], "rejected_ids": [[7]]}, bad_row], 1
    try:  # as the second row when Arrow can hold it beside a good one
        Dataset.from_list(rows)
    except Exception:
        rows, index = [bad_row], 0
    with pytest.raises(ValueError, match=message.format(i=index)):
        make_trainer(tokenizer, tmp_path, rows=rows)


def test_pretokenized_k_rows_refused_by_pairwise_loss(tokenizer, tmp_path):
    rows = [pretokenize(tokenizer, row) for row in ROWS]
    with pytest.raises(ValueError, match=r"Row 0 of the train dataset has 3 rejected responses"):
        make_trainer(tokenizer, tmp_path, rows=rows, loss_type=["hinge"])


# ------------------------------------------------------------------ ld_alpha with precomputed reference
def test_ld_alpha_precomputed_reference_equals_live(tokenizer, tmp_path):
    """With `ld_alpha` the stored reference values are TRL's length-desensitized ones, so the loss is unchanged."""
    options = dict(rows=PAIRS, loss_type=["sigmoid"], ld_alpha=0.5)
    live = make_trainer(tokenizer, tmp_path / "live", **options)
    cached = make_trainer(tokenizer, tmp_path / "cached", precompute_ref_log_probs=True, **options)
    plain = make_trainer(tokenizer, tmp_path / "plain", rows=PAIRS, precompute_ref_log_probs=True)
    trl = DPOTrainer(
        build_model(tokenizer, seed=0),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path / "trl", config_class=DPOConfig, loss_type=["sigmoid"], ld_alpha=0.5),
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=tokenizer,
    )
    # the responses differ in length, so the weighting changes the stored values (rows 0 and 1)
    weighted, summed = cached.train_dataset["ref_rejected_logps"], plain.train_dataset["ref_rejected_logps"]
    assert weighted[0][0] != pytest.approx(summed[0][0], abs=1e-3)
    assert loss_of(cached) == pytest.approx(loss_of(live), abs=1e-6)
    assert loss_of(live) == pytest.approx(loss_of(trl), abs=1e-6)


# ------------------------------------------------------------------ vision inputs
def test_processor_is_refused_before_loading_the_model(tmp_path):
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(), tokenizer=build_tokenizer())
    with pytest.raises(NotImplementedError, match=r"not a processor \(LlavaProcessor\)"):
        DMPOTrainer(
            "no-such-org/no-such-model",  # never loaded: the refusal comes first
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=processor,
        )


@pytest.mark.parametrize("column, split", [("images", "train"), ("image", "valid")])
def test_image_column_is_refused_before_loading_the_model(tokenizer, tmp_path, column, split):
    picture = Image.new("RGB", (4, 4))
    images = [{**row, column: [picture] if column == "images" else picture} for row in ROWS]
    train, eval_datasets = (images, {}) if split == "train" else (ROWS, {split: Dataset.from_list(images)})
    with pytest.raises(NotImplementedError, match=rf"The {split} dataset has an `{column}` column"):
        DMPOTrainer(
            "no-such-org/no-such-model",
            args=make_args(tmp_path),
            train_dataset=Dataset.from_list(train),
            eval_dataset=eval_datasets or None,
            processing_class=tokenizer,
        )


# ------------------------------------------------------------------ pad_token
def test_args_pad_token_is_what_pads(tmp_path):
    """As in TRL, `args.pad_token` wins over the tokenizer's own pad token, in the collator and the model config."""
    trainers = {}
    for name, config_class in (("ours", DMPOConfig), ("trl", DPOConfig)):
        tokenizer = build_tokenizer()  # TRL sets the pad token on the tokenizer it is given
        trainers[name] = (DMPOTrainer if name == "ours" else DPOTrainer)(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=make_args(tmp_path / name, config_class=config_class, pad_token="<|system|>"),
            train_dataset=Dataset.from_list(PAIRS),
            processing_class=tokenizer,
        )
    ours, trl = trainers["ours"], trainers["trl"]
    system_id = ours.processing_class.convert_tokens_to_ids("<|system|>")
    assert system_id != ours.processing_class.convert_tokens_to_ids("<|pad|>")
    assert ours.processing_class.pad_token == trl.processing_class.pad_token == "<|system|>"
    assert ours.data_collator.pad_token_id == trl.data_collator.pad_token_id == system_id
    assert ours.model.config.pad_token_id == trl.model.config.pad_token_id == system_id
    ours.data_collator.pack_rows = False  # several rows in one sequence can leave no padding to check
    for share_prompt in (True, False):
        ours.data_collator.share_prompt = share_prompt
        batch = batch_of(ours)
        padding = batch["input_ids"][batch["attention_mask"] == 0]
        assert padding.numel() > 0 and (padding == system_id).all()


def test_unknown_pad_token_is_refused_as_in_trl(tmp_path):
    tokenizer = build_tokenizer()
    with pytest.raises(ValueError, match=r"The specified `pad_token` \('<\|nope\|>'\) is not found in the vocabulary"):
        DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=make_args(tmp_path, pad_token="<|nope|>"),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )


# ------------------------------------------------------------------ loss types
def test_trl_loss_types_are_the_ones_trl_implements():
    source = inspect.getsource(DPOTrainer._compute_loss)
    assert set(TRL_LOSS_TYPES) == set(re.findall(r'loss_type == "(\w+)"', source))


def test_unknown_loss_type_is_refused_when_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown loss_type \['dmpo_typo'\]: choose from \['dmpo', 'sdpo'.*'hinge'"):
        DMPOConfig(str(tmp_path), loss_type=["dmpo_typo"], bf16=False, report_to=[])
    with pytest.raises(ValueError, match=r"`loss_weights` must have the same length as `loss_type`"):
        DMPOConfig(str(tmp_path), loss_type=["dmpo", "sft"], loss_weights=[1.0], bf16=False, report_to=[])
    for loss_type in LOSS_TYPES:
        assert DMPOConfig(str(tmp_path), loss_type=loss_type, bf16=False, report_to=[]).loss_type == [loss_type]


def test_unknown_loss_type_in_a_plain_dpo_config_is_refused_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown loss_type \['dmpo_typo'\]"):
        DMPOTrainer(
            "no-such-org/no-such-model",
            args=make_args(tmp_path, config_class=DPOConfig, loss_type=["dmpo_typo"]),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=build_tokenizer(),
        )


# ------------------------------------------------------------------ tokenization fingerprint
def test_tokenized_fingerprint_depends_on_tokens_only(tokenizer, tmp_path):
    def fingerprint(**overrides):
        return dataset_fingerprint(make_trainer(tokenizer, tmp_path, **overrides).train_dataset)

    base = fingerprint(learning_rate=1e-3)
    assert fingerprint(learning_rate=5e-4, beta=0.1, max_steps=7) == base
    assert fingerprint(seed=7) == base  # the seed only draws negatives when max_negatives is set
    assert fingerprint(max_negatives=2) != base
    assert fingerprint(max_negatives=2, seed=7) != fingerprint(max_negatives=2)


def test_precomputed_reference_is_reused_across_learning_rates(tokenizer, tmp_path):
    """TRL caches the reference pass by fingerprint: a new learning rate reuses it, a new max_length does not."""
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "data")

    def cache_files():
        return sorted(path.name for path in Path(tmp_path / "data").glob("cache-*.arrow"))

    def trainer(**overrides):
        return DMPOTrainer(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=make_args(tmp_path / "out", precompute_ref_log_probs=True, **overrides),
            train_dataset=load_from_disk(tmp_path / "data"),
            processing_class=tokenizer,
        )

    first = trainer(learning_rate=1e-3)
    files = cache_files()
    assert len(files) == 2  # tokenized rows, reference log-probs
    second = trainer(learning_rate=2e-3)
    assert cache_files() == files
    assert second.train_dataset["ref_rejected_logps"] == first.train_dataset["ref_rejected_logps"]
    truncated = trainer(learning_rate=1e-3, max_length=17)  # truncates responses, drops no row
    assert len(truncated.train_dataset) == len(ROWS)
    assert len(cache_files()) == 3
    assert truncated.train_dataset["ref_chosen_logps"] != first.train_dataset["ref_chosen_logps"]


def test_max_length_that_drops_every_row_is_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"Every row of the train dataset has a prompt that alone fills max_length"):
        make_trainer(tokenizer, tmp_path, max_length=12, precompute_ref_log_probs=True)


def test_streamed_pretokenized_rows_are_checked_and_dropped(tokenizer, tmp_path, caplog):
    rows = [pretokenize(tokenizer, {**row, "rejected": row["rejected"][0]}) for row in ROWS + [LONG_ROW]]
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path, max_length=40, max_steps=1),
        train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
        processing_class=tokenizer,
    )
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        kept = list(trainer.train_dataset)
    assert [row["num_rejected"] for row in kept] == [1, 1, 1, 1]
    assert [row["rejected_ids"] for row in kept] == [[row["rejected_ids"]] for row in rows[:4]]
    assert "Dropped row 4 of the streamed train dataset" in caplog.text
    trainer.train()
    assert trainer.state.global_step == 1
