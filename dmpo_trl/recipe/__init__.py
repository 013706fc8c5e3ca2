"""The end-to-end recipe, in reusable steps: interaction log -> few-shot users -> preference data -> model (full,
LoRA or 4-bit QLoRA) -> zero-shot ranking -> DMPO training -> ranking again.

`dmpo-trl train`, `dmpo-trl demo`, the example notebooks and the benchmarks all call these functions, configured by
three dataclasses that `trl.TrlParser` turns into command-line flags or reads from a YAML file:

- `RecDataArguments`: which log, how many users, K negatives, candidates per prompt, prompt style;
- `RecipeArguments`: what to evaluate (before/after, baselines), wandb table size, what to save;
- plus TRL's own `DMPOConfig` (training) and `dmpo_trl.models.RecModelConfig` (a `trl.ModelConfig`: model id or
  path, `use_peft`, `lora_*`, `load_in_4bit`).

Example:
```python
>>> from dmpo_trl.recipe import demo_arguments, run_recipe
>>> data_args, training_args, model_args, recipe_args = demo_arguments()
>>> data_args.num_candidates, data_args.num_negatives, model_args.use_peft
(10, 4, True)
>>> result = run_recipe(data_args, training_args, model_args, recipe_args)  # doctest: +SKIP
>>> print(result.table())  # doctest: +SKIP
```

The modules, one step each: `arguments` (the two dataclasses), `parsing` (flags and YAML into them), `demo` (the
demo's settings), `loading` (log, users, rows), `split_file` (`split.json`), `outputs` (checks before writing),
`results` (ranking around training), `run` (`run_recipe`). Every name is importable from `dmpo_trl.recipe`.
A mistake in the settings or inputs raises `dmpo_trl.inputs.InputError` (a `ValueError`).
"""

from __future__ import annotations

from .arguments import TRAINING_NEGATIVES, RecDataArguments, RecipeArguments
from .demo import DEMO_SETTINGS, SMOKE_SETTINGS, demo_arguments, smoke_mode
from .loading import (
    PREFERENCE_COLUMNS,
    RecipeData,
    build_datasets,
    data_seed,
    load_interaction_log,
    load_preference_data,
    load_recipe_data,
    split_users,
)
from .outputs import check_output_path, check_push_to_hub, data_inputs
from .parsing import RECIPE_DATACLASSES, command_parser, parse_command_line, parse_recipe_arguments, recipe_parser
from .results import DEMO_METRICS, RecipeResult, evaluate_models, summary_table
from .run import resolve_resume, run_recipe, run_settings, trained_name
from .split_file import (
    SPLIT_FILE,
    check_split,
    load_split,
    saved_test_users,
    split_data_arguments,
    split_record,
    write_split,
)


__all__ = [
    "DEMO_METRICS",
    "DEMO_SETTINGS",
    "PREFERENCE_COLUMNS",
    "RECIPE_DATACLASSES",
    "SMOKE_SETTINGS",
    "SPLIT_FILE",
    "TRAINING_NEGATIVES",
    "RecDataArguments",
    "RecipeArguments",
    "RecipeData",
    "RecipeResult",
    "build_datasets",
    "check_output_path",
    "check_push_to_hub",
    "check_split",
    "command_parser",
    "data_inputs",
    "data_seed",
    "demo_arguments",
    "evaluate_models",
    "load_interaction_log",
    "load_preference_data",
    "load_recipe_data",
    "load_split",
    "parse_command_line",
    "parse_recipe_arguments",
    "recipe_parser",
    "resolve_resume",
    "run_recipe",
    "run_settings",
    "saved_test_users",
    "smoke_mode",
    "split_data_arguments",
    "split_record",
    "split_users",
    "summary_table",
    "trained_name",
    "write_split",
]
