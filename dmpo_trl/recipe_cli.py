"""`dmpo-trl train` and `dmpo-trl demo`: the recipe (`dmpo_trl.recipe`) from the command line.

Both parse every field of `RecDataArguments`, `RecipeArguments`, `DMPOConfig` and `RecModelConfig` as a flag with
`trl.TrlParser`, and read `--config file.yaml` as TRL's own scripts do (flags override the file):

```bash
dmpo-trl train --num_train_users 256 --num_negatives 4 --loss_type dmpo --use_peft --output_dir out
dmpo-trl train --config recipe.yaml --learning_rate 1e-4
dmpo-trl train --model_name_or_path Qwen/Qwen2.5-7B-Instruct --load_in_4bit --report_to wandb --output_dir out
dmpo-trl demo                        # SmolLM2-135M + LoRA on few-shot MovieLens-100K, within 15 minutes on CPU
dmpo-trl demo --num_test_users 200   # any flag changes the demo's settings
```
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence


def _prepare_process() -> None:
    """Process settings for a CPU run, applied before torch loads.

    - `OMP_WAIT_POLICY=PASSIVE` (unless set): OpenMP threads sleep instead of spinning at each barrier. On a
      machine where other processes also use the cores, spinning threads wait for a descheduled sibling and a
      2-thread forward pass runs several times slower than with one thread; sleeping threads cost next to nothing
      when the machine is idle.
    - bitsandbytes' notice that an optional CPU kernel package is missing is silenced (it falls back by itself).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _report(result, wall_s: float, data_args) -> None:
    chance = 1 / data_args.num_candidates
    print()
    print(
        f"Ranking {data_args.num_test_users} test users, {data_args.num_candidates} candidates each "
        f"(a random pick has HitRatio@1 = {chance:.2f}):"
    )
    print(result.table())
    phases = {
        "data_s": "data",
        "model_s": "model",
        "evaluate_before_s": "ranking before",
        "train_s": "training",
        "evaluate_after_s": "ranking after",
    }
    spent = ", ".join(f"{label} {result.timings[key]:.0f} s" for key, label in phases.items() if key in result.timings)
    print(f"Wall time: {wall_s:.0f} s ({spent})")


def train_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl train [flags] [--config file.yaml]`: run the recipe, print the before/after table, save results.

    Example:
    ```python
    >>> train_main(["--num_train_users", "64", "--use_peft", "--output_dir", "out"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from .recipe import parse_recipe_arguments, run_recipe

    started = time.perf_counter()
    data_args, training_args, model_args, recipe_args = parse_recipe_arguments(argv)
    result = run_recipe(data_args, training_args, model_args, recipe_args)
    _report(result, time.perf_counter() - started, data_args)
    if recipe_args.results_file:
        print(f"Results: {training_args.output_dir}/{recipe_args.results_file}")
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl demo [flags]`: zero-shot vs DMPO-trained SmolLM2-135M on few-shot MovieLens-100K, on CPU.

    Uses `dmpo_trl.recipe.DEMO_SETTINGS`; every flag of `dmpo-trl train` overrides them.

    Example:
    ```python
    >>> demo_main(["--num_test_users", "20", "--max_steps", "2"])  # doctest: +SKIP
    0
    ```
    """
    _prepare_process()
    from .recipe import demo_arguments, run_recipe

    started = time.perf_counter()
    data_args, training_args, model_args, recipe_args = demo_arguments(list(argv or []))
    print(
        f"dmpo-trl demo: {model_args.model_name_or_path or 'SmolLM2-135M-Instruct (embedded)'} "
        f"{'+ LoRA ' if model_args.use_peft else ''}trained with {'+'.join(training_args.loss_type)} on "
        f"{data_args.num_train_users} few-shot {data_args.dataset_name} users, ranked on "
        f"{data_args.num_test_users} test users before and after"
    )
    result = run_recipe(data_args, training_args, model_args, recipe_args)
    _report(result, time.perf_counter() - started, data_args)
    return 0
