"""`dmpo-trl train [flags] [--config file.yaml]`: run the recipe (`dmpo_trl.recipe.run_recipe`), print the
before/after table, save the results. Training settings left unset take the best measured values for the model and
adapter (`dmpo_trl.presets.measured_defaults`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..presets import measured_defaults
from ..recipe import RecDataArguments, RecipeResult, parse_recipe_arguments, run_recipe
from .arguments import TRAIN_ALIASES
from .errors import user_inputs
from .process import prepare_process


__all__ = ["main", "report", "train_arguments"]


def report(result: RecipeResult, wall_s: float, data_args: RecDataArguments) -> None:
    """Print the ranking table of a run and where its time went."""
    data_args = result.data_args or data_args
    if result.results:
        users = next(iter(result.results.values()))["metrics"]["num_users"]
        chance = 1 / data_args.num_candidates
        print()
        print(
            f"Ranking {users} test users, {data_args.num_candidates} candidates each "
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


def train_arguments(argv: Sequence[str] | None = None) -> tuple:
    """`dmpo-trl train`'s `(data_args, training_args, model_args, recipe_args)` and one line on where the training
    settings come from: what `argv` (or its `--config` file) sets, else the best measured values for the model and
    adapter being trained (`dmpo_trl.presets.measured_defaults`), else TRL's defaults. `UsageError` for a mistake.

    Example:
    ```python
    >>> args = train_arguments(["--use_peft", "--output_dir", "out", "--report_to", "none"])[:-1]
    >>> training_args = args[1]
    >>> training_args.learning_rate, training_args.num_train_epochs, training_args.per_device_train_batch_size
    (0.001, 2.0, 4)
    ```
    """
    with user_inputs():
        parsed = parse_recipe_arguments(argv, aliases=TRAIN_ALIASES)
    data_args, training_args, model_args, recipe_args = parsed
    measured, why = measured_defaults(model_args.model_name_or_path, model_args.use_peft, training_args.loss_type)
    if measured:  # the parser's defaults: the command line and --config still win
        with user_inputs():
            parsed = parse_recipe_arguments(argv, measured, aliases=TRAIN_ALIASES)
    return (*parsed, why)


def main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl train [flags] [--config file.yaml]`: run the recipe, print the before/after table, save results.

    Example:
    ```python
    >>> main(["--num_train_users", "64", "--use_peft", "--output_dir", "out"])  # doctest: +SKIP
    0
    ```
    """
    prepare_process()
    started = time.perf_counter()
    data_args, training_args, model_args, recipe_args, why = train_arguments(argv)
    print(
        f"Training settings: loss {' + '.join(training_args.loss_type)}, learning rate "
        f"{training_args.learning_rate:g} x {training_args.num_train_epochs:g} "
        f"epochs, {training_args.per_device_train_batch_size} rows per device and step (unset ones: {why})"
    )
    result = run_recipe(data_args, training_args, model_args, recipe_args)
    report(result, time.perf_counter() - started, data_args)
    if recipe_args.results_file:
        print(f"Results: {training_args.output_dir}/{recipe_args.results_file}")
    return 0
