"""`dmpo-trl demo [flags]`: zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU within 15
minutes (`dmpo_trl.recipe.DEMO_SETTINGS`; every flag of `dmpo-trl train` overrides them)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..recipe import DEMO_SETTINGS, parse_recipe_arguments, run_recipe
from .arguments import TRAIN_ALIASES
from .errors import user_inputs
from .process import prepare_process
from .train import report


__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl demo [flags]`: zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU.

    Example:
    ```python
    >>> main(["--num_test_users", "20", "--max_steps", "2"])  # doctest: +SKIP
    0
    ```
    """
    prepare_process()
    started = time.perf_counter()
    with user_inputs():
        parsed = parse_recipe_arguments(list(argv or []), DEMO_SETTINGS, "dmpo-trl demo", TRAIN_ALIASES)
    data_args, training_args, model_args, recipe_args = parsed
    print(
        f"dmpo-trl demo: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'} "
        f"{'+ LoRA ' if model_args.use_peft else ''}trained with {'+'.join(training_args.loss_type)} on "
        f"{data_args.num_train_users} few-shot {data_args.dataset_name} users, ranked on "
        f"{data_args.num_test_users} test users before and after"
    )
    result = run_recipe(*parsed)
    report(result, time.perf_counter() - started, data_args)
    return 0
