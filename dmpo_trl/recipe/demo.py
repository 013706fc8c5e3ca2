"""The demo's settings: `DEMO_SETTINGS` (what `dmpo-trl demo` runs), `demo_arguments`, and the seconds-scale
`SMOKE_SETTINGS` the example notebooks use under test (`smoke_mode`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..config import DMPOConfig
from ..models import RecModelConfig
from .arguments import RecDataArguments, RecipeArguments
from .parsing import parse_recipe_arguments


__all__ = ["DEMO_SETTINGS", "SMOKE_SETTINGS", "demo_arguments", "smoke_mode"]

DEMO_SETTINGS: dict[str, Any] = {
    # data: few-shot MovieLens-100K, 10 candidates per prompt, 5 history items, K=4 negatives
    "dataset_name": "movielens-100k",
    "num_train_users": 80,
    "num_valid_users": 0,
    "num_test_users": 80,
    "num_candidates": 10,
    "num_negatives": 4,
    "max_history": 5,
    # recipe: zero-shot and trained model, plus the random and popularity baselines on the same candidates
    "baselines": ["random", "popular"],
    # model: the embedded SmolLM2-135M-Instruct with LoRA on every linear layer
    "use_peft": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    # training: DMPO, one pass over the rows, 4 rows per step, on CPU in float32. DMPO alone, not the SFT term
    # `dmpo-trl train` adds on SmolLM2 (at 2 epochs): at this one epoch the term ranked worse on the demo's users
    # (benchmarks/results/demo/loss)
    "output_dir": "outputs/demo",
    "loss_type": ["dmpo"],
    "beta": 0.1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 2,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "activation_checkpointing": False,
    "logging_steps": 4,
    "save_strategy": "no",
    "dataloader_pin_memory": False,
    "report_to": "none",
    "seed": 0,
}
"""What `dmpo-trl demo` runs: sized to finish within 15 minutes on 2 CPU cores (see README)."""


def demo_arguments(
    argv: Sequence[str] = (), **overrides: Any
) -> tuple[RecDataArguments, DMPOConfig, RecModelConfig, RecipeArguments]:
    """The demo's `(data_args, training_args, model_args, recipe_args)`: `DEMO_SETTINGS`, then `overrides`, then
    command-line style `argv` (e.g. `["--max_steps", "2"]`).

    Example:
    ```python
    >>> data_args, training_args, model_args, recipe_args = demo_arguments(num_test_users=20)
    >>> data_args.num_test_users, training_args.loss_type, recipe_args.baselines
    (20, ['dmpo'], ['random', 'popular'])
    ```
    """
    return parse_recipe_arguments(list(argv), {**DEMO_SETTINGS, **overrides}, prog="dmpo-trl demo")


SMOKE_SETTINGS: dict[str, Any] = {
    "num_train_users": 8,
    "num_test_users": 6,
    "num_candidates": 5,
    "num_negatives": 2,
    "max_history": 3,
    "max_steps": 2,
    "show_progress": False,
}
"""Seconds-scale overrides of `DEMO_SETTINGS` for smoke runs of the examples (`DMPO_EXAMPLES_SMOKE=1`)."""


def smoke_mode() -> bool:
    """Whether `DMPO_EXAMPLES_SMOKE` asks for seconds-scale settings (the example notebooks under test)."""
    return os.environ.get("DMPO_EXAMPLES_SMOKE", "").lower() not in ("", "0", "false", "no")
