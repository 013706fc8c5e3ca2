"""Training the quality study's methods with LoRA: TRL's SFTTrainer (`sft`, and the SFT stage of `sft+...`) and
`DMPOTrainer` (DPO, S-DPO, Plackett-Luce, DMPO; negatives mined from the model with `@model`), resumable from
checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import Method, QualityConfig
from .data import Study, conversational


def load_base(cfg: QualityConfig):
    from dmpo_trl.models import load_model_and_tokenizer

    return load_model_and_tokenizer(cfg.model)


def lora(cfg: QualityConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def common_training_args(cfg: QualityConfig, seed: int, output_dir: Path, method: str) -> dict[str, Any]:
    learning_rate, epochs = cfg.training_settings(method)
    return dict(
        output_dir=str(output_dir),
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        per_device_train_batch_size=cfg.batch_size,
        lr_scheduler_type="linear",
        warmup_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        bf16=False,
        disable_tqdm=True,
    )


def row_settings(study: Study, tokenizer) -> dict[str, Any]:
    """How training rows are built: the same prompts, candidates and negatives for SFT and preference rows."""
    cfg = study.cfg
    return dict(
        prompt_style=cfg.prompt_style,
        num_candidates=cfg.num_candidates,
        negative_strategy=cfg.train_negatives,
        conversational=conversational(tokenizer),
        seed=study.seed,
    )


def train_sft(study: Study, model, tokenizer, output_dir: Path):
    from trl import SFTConfig, SFTTrainer

    from dmpo_trl.data import build_sft_dataset

    cfg = study.cfg
    rows = build_sft_dataset(study.log, study.split.train, **row_settings(study, tokenizer))
    rows = rows.select_columns(["prompt", "completion"])
    args = SFTConfig(**common_training_args(cfg, study.seed, output_dir, "sft"), max_length=None)
    trainer = SFTTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=lora(cfg))
    trainer.train()
    trainer.save_model(str(output_dir))
    (output_dir / SFT_SETTINGS_FILE).write_text(json.dumps(sft_settings(study), indent=1))
    return trainer


SFT_SETTINGS_FILE = "study_settings.json"


_SFT_FIELDS = (
    "model", "dataset_name", "interactions", "items", "num_train_users", "targets_per_user", "num_train_rows",
    "num_test_users", "more_test_users", "num_valid_users", "num_candidates", "max_history", "prompt_style",
    "train_negatives", "batch_size", "lora_r",
)  # fmt: skip


def sft_settings(study: Study) -> dict[str, Any]:
    """What the SFT adapter depends on (data, split, rows, training); a saved adapter is reused only if they match."""
    learning_rate, epochs = study.cfg.training_settings("sft")
    settings = {name: getattr(study.cfg, name) for name in _SFT_FIELDS}
    return {**settings, "seed": study.seed, "learning_rate": learning_rate, "num_train_epochs": epochs}


def sft_model(study: Study):
    """The SFT stage, merged into the weights: loaded from `work_dir` when the `sft` method saved it with the same
    settings, else trained (again)."""
    from dmpo_trl.models import RecModelConfig, load_adapter_model

    adapter = Path(study.cfg.work_dir) / f"seed{study.seed}" / "sft"
    saved = adapter / SFT_SETTINGS_FILE
    if not saved.is_file() or json.loads(saved.read_text()) != sft_settings(study):
        if (adapter / "adapter_config.json").is_file():
            print(
                f"quality: the SFT adapter in {adapter} has other (or unrecorded) settings; training it again",
                flush=True,
            )
        model, tokenizer = load_base(study.cfg)
        train_sft(study, model, tokenizer, adapter)

    return load_adapter_model(adapter, RecModelConfig(model_name_or_path=study.cfg.model, use_peft=True), merge=True)


def train_preference(study: Study, method: Method, model, tokenizer, output_dir: Path):
    """The trained `DMPOTrainer`, the steps it took, its log (every round's, with negatives mined per epoch) and the
    step it resumed from (None: trained from the start)."""
    from dmpo_trl import DMPOConfig, DMPOTrainer
    from dmpo_trl.data import build_preference_dataset
    from dmpo_trl.mining import MinedNegativesTraining, NegativeMiner

    cfg = study.cfg
    # mined rounds are not resumable; the cross-domain study's config has no save_steps (it saves its adapters)
    checkpoints = bool(getattr(cfg, "save_steps", 0)) and method.negatives != "model"
    saving = dict(save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2) if checkpoints else {}
    args = DMPOConfig(
        **{**common_training_args(cfg, study.seed, output_dir, method.name), **saving},
        loss_type=[method.loss],
        beta=cfg.length_normalized_beta if method.length_normalize else cfg.beta,
        length_normalize=method.length_normalize,
    )
    settings = row_settings(study, tokenizer)
    if method.negatives == "model":
        miner = NegativeMiner(
            study.log,
            method.k,
            method.model_fraction,
            cfg.mining_pool_size,
            prompt_style=settings["prompt_style"],
            conversational=settings["conversational"],
            seed=study.seed,
        )
        training = MinedNegativesTraining(
            model, miner, study.split.train, args, processing_class=tokenizer, peft_config=lora(cfg)
        )
        output = training.train()
        return training.trainer, output.global_step, training.log_history, None
    if method.negatives is not None:
        settings["negative_strategy"] = method.negatives
    rows = build_preference_dataset(study.log, study.split.train, method.k, **settings)
    rows = rows.select_columns(["prompt", "chosen", "rejected"])
    checkpoint = resumable_checkpoint(output_dir, preference_settings(study, method)) if checkpoints else None
    trainer = DMPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=lora(cfg))
    trainer.train(resume_from_checkpoint=checkpoint)
    resumed_from = int(Path(checkpoint).name.removeprefix("checkpoint-")) if checkpoint else None
    return trainer, trainer.state.global_step, trainer.state.log_history, resumed_from


def preference_settings(study: Study, method: Method) -> dict[str, Any]:
    """What a preference run's checkpoints depend on: the SFT stage's data and training settings, the method's."""
    cfg = study.cfg
    learning_rate, epochs = cfg.training_settings(method.name)
    return {
        "sft": sft_settings(study),
        "method": method.name,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "beta": cfg.beta,
        "length_normalized_beta": cfg.length_normalized_beta,
        "save_steps": cfg.save_steps,
    }


def resumable_checkpoint(output_dir: Path, settings: dict[str, Any]) -> str | None:
    """The last checkpoint in `output_dir` if it was written with the same `settings`, else None (and the
    checkpoints of other settings are removed); `settings` are recorded for the checkpoints to come."""
    import shutil

    from transformers.trainer_utils import get_last_checkpoint

    saved = output_dir / TRAINING_SETTINGS_FILE
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last and saved.is_file() and json.loads(saved.read_text()) == settings:
        print(f"quality: resuming training from {last}", flush=True)
        return last
    if last:
        print(
            f"quality: the checkpoints in {output_dir} have other (or unrecorded) settings; starting again", flush=True
        )
        for old in output_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
    output_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))
    return None


TRAINING_SETTINGS_FILE = "training_settings.json"


def train(study: Study, method: Method):
    """The trained model and tokenizer for `method`, plus what training logged."""
    started = time.perf_counter()
    if method.kind == "zero-shot":
        model, tokenizer = load_base(study.cfg)
        return model, tokenizer, {}
    output_dir = Path(study.cfg.work_dir) / f"seed{study.seed}" / method.name
    if method.kind == "sft":
        model, tokenizer = load_base(study.cfg)
        trainer = train_sft(study, model, tokenizer, output_dir)
        steps, log_history, resumed_from = trainer.state.global_step, trainer.state.log_history, None
    else:
        model, tokenizer = sft_model(study) if method.after_sft else load_base(study.cfg)
        trainer, steps, log_history, resumed_from = train_preference(study, method, model, tokenizer, output_dir)
    learning_rate, epochs = study.cfg.training_settings(method.name)
    info = {
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),  # this process's: after a resume, the rest only
        "resumed_from_step": resumed_from,
        "rows": len(trainer.train_dataset),
        "steps": steps,
        "log_history": log_history,
    }
    return trainer.model, tokenizer, info
