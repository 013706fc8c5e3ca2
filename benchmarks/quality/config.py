"""The quality study's settings (`QualityConfig`, the command line of `python -m benchmarks.quality`) and its
methods (`Method`, `parse_method`: `dmpo-k4`, `sft+dmpo-k4`, `dpo@model50`, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


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


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A settings field: its default (a list is copied for each instance) and the text `--help` prints for it;
    `metadata` adds e.g. its `choices`."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class QualityConfig:
    """The study's settings. Defaults: the main table, sized for about 2 hours on 2 CPU cores (see README)."""

    methods: list[str] = option(DEFAULT_METHODS, "Methods to run.")
    seeds: list[int] = option([0, 1], "User split / candidates / init.")
    model: str | None = option(
        None,
        "Model path, Hub id or embedded model name (default: the embedded SmolLM2-135M-Instruct; `gemma-3-270m`: the "
        "embedded Gemma 3 270M, after `make gemma`).",
    )
    dataset_name: str = option("movielens-100k", "Registered dataset.")
    interactions: str | None = option(None, "Your own log (user_id,item_id,timestamp).")
    items: str | None = option(None, "Your own item file (item_id,title).")
    num_train_users: int = option(100, "Few-shot training users.")
    targets_per_user: int = option(1, "Rows per training user: its latest items as targets (1: the last one; 0: all).")
    num_train_rows: int | None = option(None, "Keep at most this many training rows (seeded, nested across sizes).")
    mining_pool_size: int = option(30, "Items scored per row and epoch for @model training negatives.")
    num_test_users: int = option(80, "Held-out users ranked per seed.")
    more_test_users: int = option(
        0,
        "Test users beyond num_test_users, drawn after the training and validation users, so that those (and the "
        "settings chosen on them) stay the same.",
    )
    num_valid_users: int = option(
        0, "Validation users, drawn after the training users (train and test users stay the same)."
    )
    evaluate_on: str = option(
        "test",
        "Rank the 'test' users, or the 'valid' ones to choose settings.",
        choices=["test", "valid"],
    )
    num_candidates: int = option(20, "Candidates per test user (target + negatives).")
    max_history: int = option(5, "History titles per prompt.")
    prompt_style: str = option("history", "'history', 'candidates' or a template.")
    train_negatives: str = option("uniform", "How training negatives are drawn.")
    learning_rate: float = option(1e-3, "Every method's learning rate (LoRA).")
    num_train_epochs: float = option(1.0, "Passes over the training rows.")
    method_settings: list[str] = option(
        [],
        "Per-method learning rate and epochs chosen on validation users, as method:lr:epochs (e.g. dpo:3e-3:2); other "
        "methods use learning_rate and num_train_epochs.",
    )
    batch_size: int = option(4, "Rows per optimizer step.")
    beta: float = option(0.1, "DPO / S-DPO / DMPO beta.")
    length_normalized_beta: float = option(
        1.3,
        "beta of the length-normalised methods (`dmpo-k4-ln`): per-token rewards are about |y| times smaller, so "
        "about beta x the mean title length in tokens (12.9 on MovieLens-100K) starts them on the summed rewards' "
        "scale.",
    )
    lora_r: int = option(16, "LoRA rank (all linear layers, alpha = 2r).")
    generation_methods: list[str] = option(
        ["zero-shot", "sft", "dmpo-k8"],
        "Methods also evaluated by greedy generation (HitRatio@1, ValidRatio); 'none' for none.",
    )
    max_new_tokens: int = option(20, "Generation length.")
    explain_users: int = option(3, "Test users whose top pick the model explains.")
    results_dir: str = option("benchmarks/results/quality/shared", "Results, table, plot.")
    work_dir: str = option("outputs/quality", "Trained adapters (the SFT stage) and training checkpoints.")
    save_steps: int = option(
        25,
        "Checkpoint preference training (uniform or popularity-matched negatives) every N steps under work_dir, so "
        "that a run stopped mid-training resumes from its last checkpoint; 0: no checkpoints.",
    )
    threads: int | None = option(None, "torch threads (default: torch's choice).")
    report: bool = option(True, "Write the table and plot after running.")
    report_only: bool = option(False, "Only rebuild the report from saved results.")

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
