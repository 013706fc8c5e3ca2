"""A `DPOTrainer` setup runs unchanged as a `DMPOTrainer` and gives TRL's numbers on pairwise data.

Every `DPOConfig` field (TRL's own, not `TrainingArguments`') has an entry in `FIELD_CASES`: values that are tried
with `DPOTrainer`, with `DMPOTrainer` and the same `DPOConfig`, and with `DMPOTrainer` and a `DMPOConfig` built from
the same arguments (default loss `["dmpo"]`, which is TRL's sigmoid at K = 1); or the reason a field is not exercised
here. A field that a later TRL adds has no entry and fails `test_every_dpo_config_field_has_a_case` until it is
handled. Every dataset format TRL documents for preference data (standard and conversational, explicit and implicit
prompt, pre-tokenized) is checked the same way, and so are streamed eval sets.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from datasets import Dataset, IterableDataset
from peft import LoraConfig
from tiny_models import build_architecture, build_model
from transformers import TrainingArguments
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOConfig, DMPOTrainer


PAIRS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": " Star Wars (1977)"},
    {"prompt": "The user watched Fargo, Babe. Next:", "chosen": " Heat and Casino", "rejected": " Babe"},
    {"prompt": "The user watched Toy Story. Next:", "chosen": " Jumanji", "rejected": " Clueless"},
    {"prompt": "The user watched Casino. Next:", "chosen": " Heat", "rejected": " Toy Story (1995)"},
]

#: The `DPOConfig` fields TRL adds to `TrainingArguments`, read from TRL's source.
DPO_FIELDS = {f.name for f in dataclasses.fields(DPOConfig)} - {f.name for f in dataclasses.fields(TrainingArguments)}

#: Each `DPOConfig` field: a list of cases (the arguments to try, with `model` naming the policy: "llama", "mixtral"
#: (MoE), "path" (a saved model loaded by TRL), "lora" (a LoRA adapter, no reference model); `train` to compare
#: training steps, not only `evaluate()`), or a string saying why it is not exercised here.
FIELD_CASES: dict[str, list[dict] | str] = {
    "model_init_kwargs": [{"model_init_kwargs": {"dtype": "float32"}, "model": "path"}],
    "trust_remote_code": [{"trust_remote_code": True, "model": "path"}],
    "router_aux_loss_coef": [{"router_aux_loss_coef": 0.05, "model": "mixtral"}],
    "disable_dropout": [{"disable_dropout": False}],
    "dataset_num_proc": [pytest.param({"dataset_num_proc": 2}, marks=pytest.mark.slow)],
    "max_length": [{"max_length": 18}],
    "truncation_mode": [{"truncation_mode": "keep_end", "max_length": 18}],
    "padding_free": [{"padding_free": True}],
    "pad_to_multiple_of": [{"pad_to_multiple_of": 8}, {"pad_to_multiple_of": None}],
    "precompute_ref_log_probs": [{"precompute_ref_log_probs": True}],
    "precompute_ref_batch_size": [{"precompute_ref_log_probs": True, "precompute_ref_batch_size": 1}],
    "loss_type": [{"loss_type": ["ipo"]}, {"loss_type": ["hinge"]}, {"loss_type": ["apo_zero"]}],
    "loss_weights": [{"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}],
    "ld_alpha": [{"ld_alpha": 0.5}],
    "f_divergence_type": [
        {"f_divergence_type": "forward_kl"},
        {"f_divergence_type": "js_divergence"},
        {"f_divergence_type": "alpha_divergence"},
    ],
    "f_alpha_divergence_coef": [{"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}],
    "label_smoothing": [{"label_smoothing": 0.2}],
    "beta": [{"beta": 0.3}],
    "use_weighting": [{"use_weighting": True}, {"use_weighting": True, "model": "lora"}],
    "discopop_tau": [{"loss_type": ["discopop"], "discopop_tau": 0.1}],
    "activation_offloading": "moves saved activations to CPU memory with CUDA streams: on a CPU-only machine TRL's "
    "DPOTrainer itself stops in its first training step (AttributeError on a None device stream), as ours does; it "
    "changes where tensors live, not a number, and needs a GPU run to be compared",
    "sync_ref_model": [
        pytest.param({"sync_ref_model": True, "ref_model_sync_steps": 1, "train": True}, marks=pytest.mark.slow)
    ],
    "ref_model_mixup_alpha": [
        pytest.param(
            {"sync_ref_model": True, "ref_model_sync_steps": 1, "ref_model_mixup_alpha": 0.3, "train": True},
            marks=pytest.mark.slow,
        )
    ],
    "ref_model_sync_steps": [
        pytest.param({"sync_ref_model": True, "ref_model_sync_steps": 2, "train": True}, marks=pytest.mark.slow)
    ],
    "pad_token": [{"pad_token": "<|end|>"}],
}

#: Metrics whose values are timings, not numbers of the model.
TIMINGS = ("runtime", "per_second", "preparation_time")


def test_every_dpo_config_field_has_a_case():
    assert set(FIELD_CASES) == DPO_FIELDS
    assert len(DPO_FIELDS) >= 20  # TRL 1.16 has 25


def _cases():
    for name, cases in FIELD_CASES.items():
        if isinstance(cases, str):
            continue
        for number, case in enumerate(cases):
            if isinstance(case, type(pytest.param())):
                yield pytest.param(*case.values, marks=case.marks, id=f"{name}-{number}")
            else:
                yield pytest.param(case, id=f"{name}-{number}")


def _settings(tmp_path, **overrides) -> dict:
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-2,
        max_steps=2,
        seed=0,
    )
    return {**settings, **overrides}


def _models(tokenizer, kind: str, model_dir):
    """Policy and reference (None: TRL's own choice) for a case's `model`."""
    if kind == "path":
        return str(model_dir), None
    if kind == "mixtral":
        return build_architecture(tokenizer, "mixtral", seed=0), build_architecture(tokenizer, "mixtral", seed=1)
    if kind == "lora":
        return build_model(tokenizer, seed=0), None
    return build_model(tokenizer, seed=0), build_model(tokenizer, seed=1)


def _run(trainer_class, config_class, tokenizer, tmp_path, case, model_dir, rows=PAIRS, eval_rows=None):
    """Train (when the case asks) then evaluate; returns the numbers of the run, timings left out."""
    case = dict(case)
    kind, train = case.pop("model", "llama"), case.pop("train", False)
    model, ref_model = _models(tokenizer, kind, model_dir)
    trainer = trainer_class(
        model,
        ref_model=ref_model,
        args=config_class(**_settings(tmp_path, **case)),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if kind == "lora" else None,
    )
    numbers = {}
    if train:
        trainer.train()
        steps = [log for log in trainer.state.log_history if "loss" in log]
        numbers.update({f"step{i}/{key}": value for i, log in enumerate(steps) for key, value in log.items()})
    metrics = trainer.evaluate(Dataset.from_list(eval_rows or rows))
    numbers.update(metrics)
    return {key: value for key, value in numbers.items() if not any(t in key for t in TIMINGS)}


def assert_same_numbers(ours: dict, trl: dict, atol: float = 1e-5) -> None:
    """Every number TRL reports, ours reports with the same value (ours may add K-specific ones)."""
    assert "eval_loss" in trl and "eval_rewards/margins" in trl
    missing = set(trl) - set(ours)
    assert not missing, missing
    for key, value in trl.items():
        assert ours[key] == pytest.approx(value, abs=atol, rel=1e-4), key


@pytest.mark.parametrize("case", list(_cases()))
def test_dpo_config_field_gives_trl_numbers(tokenizer, tiny_model_dir, tmp_path, case):
    trl = _run(DPOTrainer, DPOConfig, tokenizer, tmp_path / "trl", case, tiny_model_dir)
    same_config = _run(DMPOTrainer, DPOConfig, tokenizer, tmp_path / "ours", case, tiny_model_dir)
    assert_same_numbers(same_config, trl)
    if case.get("loss_type") is None:  # DMPOConfig's default loss, 'dmpo', is TRL's sigmoid at K = 1
        dmpo_config = _run(DMPOTrainer, DMPOConfig, tokenizer, tmp_path / "dmpo", case, tiny_model_dir)
        assert_same_numbers(dmpo_config, trl)


# ------------------------------------------------------------------ dataset formats
def _conversation(text: str, role: str) -> list[dict]:
    return [{"role": role, "content": text}]


def _format(name: str, tokenizer) -> list[dict]:
    """`PAIRS` in one of TRL's documented preference formats."""
    if name == "standard":
        return PAIRS
    if name == "conversational":
        return [
            {
                "prompt": _conversation(row["prompt"], "user"),
                "chosen": _conversation(row["chosen"], "assistant"),
                "rejected": _conversation(row["rejected"], "assistant"),
            }
            for row in PAIRS
        ]
    if name == "standard_implicit_prompt":
        return [
            {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]} for row in PAIRS
        ]
    if name == "conversational_implicit_prompt":
        return [
            {
                "chosen": _conversation(row["prompt"], "user") + _conversation(row["chosen"], "assistant"),
                "rejected": _conversation(row["prompt"], "user") + _conversation(row["rejected"], "assistant"),
            }
            for row in PAIRS
        ]
    if name == "pretokenized":
        eos = tokenizer.eos_token

        def ids(text):
            return tokenizer(text)["input_ids"]

        return [
            {
                "prompt_ids": ids(row["prompt"]),
                "chosen_ids": ids(row["prompt"] + row["chosen"] + eos)[len(ids(row["prompt"])) :],
                "rejected_ids": ids(row["prompt"] + row["rejected"] + eos)[len(ids(row["prompt"])) :],
            }
            for row in PAIRS
        ]
    raise ValueError(name)


FORMATS = ["standard", "conversational", "standard_implicit_prompt", "conversational_implicit_prompt", "pretokenized"]


@pytest.mark.parametrize("name", FORMATS)
def test_dataset_format_gives_trl_tokens_and_numbers(tokenizer, tiny_model_dir, tmp_path, name):
    rows = _format(name, tokenizer)
    trainers = {}
    for trainer_class in (DPOTrainer, DMPOTrainer):
        trainers[trainer_class] = trainer_class(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=DPOConfig(**_settings(tmp_path / trainer_class.__name__)),
            # TRL 1.16's DPOTrainer tokenizes text only: it gets the text the ids were made from
            train_dataset=Dataset.from_list(PAIRS if trainer_class is DPOTrainer and name == "pretokenized" else rows),
            processing_class=tokenizer,
        )
    trl, ours = trainers[DPOTrainer], trainers[DMPOTrainer]
    for column in ("prompt_ids", "chosen_ids"):
        assert ours.train_dataset[column] == trl.train_dataset[column], column
    assert ours.train_dataset["rejected_ids"] == [[ids] for ids in trl.train_dataset["rejected_ids"]]
    numbers = [
        {k: v for k, v in t.evaluate(t.train_dataset).items() if not any(s in k for s in TIMINGS)} for t in (ours, trl)
    ]
    assert_same_numbers(*numbers)


def test_implicit_prompt_with_k_conversational_rejected(tokenizer, tmp_path):
    """K rejected conversations sharing their first turns with the chosen one: the prompt is those turns."""
    user = _conversation("The user watched Heat. Next:", "user")
    row = {
        "chosen": user + _conversation(" Casino", "assistant"),
        "rejected": [user + _conversation(" Babe", "assistant"), user + _conversation(" Fargo", "assistant")],
    }
    explicit = {
        "prompt": user,
        "chosen": _conversation(" Casino", "assistant"),
        "rejected": [_conversation(" Babe", "assistant"), _conversation(" Fargo", "assistant")],
    }
    tokenized = [
        DMPOTrainer(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(**_settings(tmp_path / str(i))),
            train_dataset=Dataset.from_list([data]),
            processing_class=tokenizer,
        ).train_dataset[0]
        for i, data in enumerate((row, explicit))
    ]
    assert tokenized[0]["num_rejected"] == 2
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert tokenized[0][column] == tokenized[1][column], column


# ------------------------------------------------------------------ TRL-only options and K > 1
@pytest.mark.parametrize(
    "option", [{"use_weighting": True}, {"ld_alpha": 0.5}, {"f_divergence_type": "js_divergence"}]
)
@pytest.mark.parametrize("streamed", [False, True])
def test_trl_only_option_refuses_k_rows_by_name(tokenizer, tmp_path, option, streamed):
    rows = [PAIRS[0], {**PAIRS[1], "rejected": [" Babe", " Titanic"]}]
    dataset = Dataset.from_list([{**row, "rejected": [row["rejected"]]} if row is PAIRS[0] else row for row in rows])
    option_name = next(iter(option))
    with pytest.raises(ValueError, match=rf"Row 1 of the train dataset has 2 rejected responses, but {option_name}"):
        trainer = DMPOTrainer(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(**_settings(tmp_path, max_steps=1, **option)),
            train_dataset=dataset.to_iterable_dataset() if streamed else dataset,
            processing_class=tokenizer,
        )
        trainer.train()  # a stream is read (and refused) as training goes


def test_trl_only_option_keeps_the_users_loss_type(tokenizer, tmp_path):
    args = DMPOConfig(**_settings(tmp_path, use_weighting=True))
    trainer = DMPOTrainer(
        build_model(tokenizer, seed=0),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=tokenizer,
    )
    assert args.loss_type == ["dmpo"] and trainer.loss_types == ["sigmoid"]


def test_k_response_loss_beside_a_trl_loss_runs_as_sigmoid(tokenizer, tmp_path):
    """`["dmpo", "hinge"]` on pairwise rows is TRL's `["sigmoid", "hinge"]`."""
    ours = _run(DMPOTrainer, DMPOConfig, tokenizer, tmp_path / "ours", {"loss_type": ["dmpo", "hinge"]}, None)
    trl = _run(DPOTrainer, DPOConfig, tokenizer, tmp_path / "trl", {"loss_type": ["sigmoid", "hinge"]}, None)
    assert_same_numbers(ours, trl)


# ------------------------------------------------------------------ streamed eval sets
@pytest.mark.parametrize("prefix_sharing", [True, False])
@pytest.mark.parametrize("as_dict", [False, True])
def test_streamed_eval_set_gives_trl_loss(tokenizer, tmp_path, prefix_sharing, as_dict):
    """A streamed eval set (alone or in a dict) evaluates as the same rows in memory and as TRL, in either layout.

    accelerate dispatches the batches of a stream by default (concatenated and split along dim 0), which a packed
    batch does not survive: the trainer prepares streams without dispatching.
    """
    eval_rows = PAIRS * 2

    def streamed():
        return IterableDataset.from_generator(lambda: iter(eval_rows))

    losses = {}
    for trainer_class, config_class, extra in (
        (DPOTrainer, DPOConfig, {}),
        (DMPOTrainer, DMPOConfig, {"prefix_sharing": prefix_sharing, "pack_rows": prefix_sharing}),
    ):
        trainer = trainer_class(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=config_class(**_settings(tmp_path / trainer_class.__name__, per_device_eval_batch_size=3, **extra)),
            train_dataset=Dataset.from_list(PAIRS),
            processing_class=tokenizer,
        )
        if as_dict:
            metrics = trainer.evaluate({"a": streamed(), "b": streamed()})
            losses[trainer_class] = (metrics["eval_a_loss"], metrics["eval_b_loss"])
        else:
            losses[trainer_class] = (trainer.evaluate(streamed())["eval_loss"],)
        if trainer_class is DMPOTrainer:
            assert trainer.accelerator.dataloader_config.dispatch_batches is None  # left as it was
            assert ("block_ids" in trainer.data_collator([trainer.train_dataset[0]])) == prefix_sharing
    assert losses[DMPOTrainer] == pytest.approx(losses[DPOTrainer], abs=1e-5)


def test_explicit_dispatch_batches_is_overridden_with_a_warning(tokenizer, tmp_path, caplog):
    args = DMPOConfig(
        **_settings(tmp_path, prefix_sharing=True, accelerator_config={"dispatch_batches": True}),
    )
    trainer = DMPOTrainer(
        build_model(tokenizer, seed=0),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=tokenizer,
    )
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        streamed = trainer.evaluate(IterableDataset.from_generator(lambda: iter(PAIRS)))["eval_loss"]
    assert "dispatch_batches=True is not used" in caplog.text
    assert trainer.accelerator.dataloader_config.dispatch_batches is True
    assert streamed == pytest.approx(trainer.evaluate(Dataset.from_list(PAIRS))["eval_loss"], abs=1e-6)


# ------------------------------------------------------------------ the reference runs in eval mode
@pytest.mark.parametrize("config_class", [DPOConfig, DMPOConfig])
def test_reference_in_train_mode_runs_without_dropout(tokenizer, tmp_path, config_class):
    """Where we depart from TRL 1.16: a reference model handed over in train mode still runs in eval mode.

    OPT's dropout is functional (`config.dropout`), out of `disable_dropout`'s reach, so in TRL 1.16 each
    `evaluate()` draws other masks for the reference. Ours gives the same number each time, the number of a
    reference in eval mode, and leaves the reference's own mode as it was.
    """
    results = {}
    for trainer_class in (DPOTrainer, DMPOTrainer):
        reference = build_architecture(tokenizer, "opt", seed=1).train()
        trainer = trainer_class(
            build_architecture(tokenizer, "opt", seed=0),
            ref_model=reference,
            args=(config_class if trainer_class is DMPOTrainer else DPOConfig)(
                **_settings(tmp_path / config_class.__name__ / trainer_class.__name__)
            ),
            train_dataset=Dataset.from_list(PAIRS),
            processing_class=tokenizer,
        )
        torch.manual_seed(0)
        results[trainer_class] = [trainer.evaluate(Dataset.from_list(PAIRS))["eval_loss"] for _ in range(3)]
        assert trainer.ref_model.training
        reference.eval()
        results[trainer_class].append(trainer.evaluate(Dataset.from_list(PAIRS))["eval_loss"])
    trl, ours = results[DPOTrainer], results[DMPOTrainer]
    assert len(set(trl[:3])) > 1  # TRL's reference draws dropout masks (if this fails, TRL changed: good news)
    assert ours[:3] == pytest.approx([ours[3]] * 3, abs=1e-6)
    assert ours[3] == pytest.approx(trl[3], abs=1e-5)  # an eval-mode reference: TRL's number


# ------------------------------------------------------------------ the private names, in one module
def test_private_names_are_reached_through_one_module(tokenizer):
    """Each accessor of `dmpo_trl._trl_compat` still finds what it reads in this TRL/transformers release."""
    from dmpo_trl._trl_compat import (
        attention_implementation,
        load_balancing_loss,
        router_logits_recorder,
        takes_mask_per_layer_type,
        tokenize,
    )

    llama, qwen2, mixtral = (build_architecture(tokenizer, name) for name in ("llama", "qwen2", "mixtral"))
    assert attention_implementation(llama) == "sdpa"
    assert not takes_mask_per_layer_type(type(llama)) and takes_mask_per_layer_type(type(qwen2))
    assert router_logits_recorder(llama) is None
    target, index = router_logits_recorder(mixtral)
    assert any(isinstance(module, target) for module in mixtral.modules()) and isinstance(index, int)
    assert callable(load_balancing_loss(mixtral))
    assert tokenize(tokenizer, "Next:")["input_ids"] == tokenizer("Next:")["input_ids"]


def test_precompute_key_joins_the_reference_hash_and_the_settings(tokenizer, tmp_path):
    """TRL's cache key of the reference model (`_precompute_model_hash`) carries the settings that change the
    precomputed values, and TRL's own hash of the reference model stays as TRL set it."""
    from datasets.fingerprint import Hasher

    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=DMPOConfig(**_settings(tmp_path, precompute_ref_log_probs=True)),
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=tokenizer,
    )
    reference_hash = trainer._reference_model_hash
    assert reference_hash is not None
    assert trainer._precompute_model_hash == Hasher.hash((reference_hash, trainer.precompute_settings()))
    key = trainer._precompute_model_hash
    trainer.args.max_length = 7  # would store other values: another key, the same reference hash
    assert trainer._precompute_model_hash != key and trainer._reference_model_hash == reference_hash
