"""The training settings `dmpo-trl train` uses where its command line leaves them unset: the best measured ones.

TRL's own defaults (learning rate 1e-6, 3 epochs, 8 rows per step) are made for full fine-tuning of large models; a
LoRA adapter on a small model barely moves at 1e-6. The quality study chose learning rate and epochs on validation
users for each embedded model with LoRA (`benchmarks/results/quality/lr*/selection.md`, 50 validation users of
MovieLens-100K, NDCG@5 over uniform and popularity-matched candidates), with 4 rows per step, 2 warm-up steps, a
linear schedule (TRL's default) and LoRA dropout 0. `measured_defaults` returns those settings for the model, adapter
and loss being trained:

| model (LoRA) | loss | learning rate x epochs | results |
|---|---|---|---|
| SmolLM2-135M-Instruct (embedded, the default) | dmpo (and any other) | 1e-3 x 2 | `quality-lr` |
| SmolLM2-135M-Instruct | sigmoid (DPO) | 3e-3 x 1 | `quality-lr` |
| SmolLM2-135M-Instruct | plackett_luce | 3e-3 x 1 | `quality-lr-pl` |
| gemma-3-270m (embedded) | any | 3e-4 x 1 | `quality-lr-gemma` |
| any other model | any | 3e-4 x 1 | none: the lower of the two models' settings |

With DMPO on the embedded SmolLM2 the loss also gets the DMPO paper's SFT term on the chosen response
(`loss_type=["dmpo", "sft"]`, weights 1 and 1): across three training seeds it kept the chosen titles' likelihood from
collapsing and ranked as well as DMPO alone with a smaller spread (`benchmarks/results/two_stage/ml100k/sampled`).

Full fine-tuning (no LoRA) was not measured: it keeps TRL's defaults. `dmpo-trl train` passes these as the parser's
defaults, so every value given on the command line or in `--config` wins over them (`--loss_type dmpo` trains DMPO
alone).

Example:
```python
>>> settings, why = measured_defaults(None, adapter=True, loss_type=["dmpo"])
>>> settings["learning_rate"], settings["num_train_epochs"], settings["loss_type"]
(0.001, 2.0, ['dmpo', 'sft'])
>>> measured_defaults("Qwen/Qwen2.5-7B-Instruct", adapter=False, loss_type=["dmpo"])[0]
{}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import embedded_model


__all__ = ["MEASURED_LOSSES", "MEASURED_SETTINGS", "measured_defaults"]

_LORA_RUN = {"per_device_train_batch_size": 4, "warmup_steps": 2, "lora_dropout": 0.0}
"""What every run of the study shared besides learning rate and epochs."""

MEASURED_SETTINGS: dict[tuple[str, str | None], tuple[float, float, str]] = {
    ("smollm2-135m-instruct", None): (1e-3, 2.0, "benchmarks/results/quality/lr/selection.md"),
    ("smollm2-135m-instruct", "sigmoid"): (3e-3, 1.0, "benchmarks/results/quality/lr/selection.md"),
    ("smollm2-135m-instruct", "plackett_luce"): (3e-3, 1.0, "benchmarks/results/quality/lr-pl/selection.md"),
    ("gemma-3-270m", None): (3e-4, 1.0, "benchmarks/results/quality/lr-gemma/selection.md"),
}
"""(embedded model, loss or None for any other loss) -> (learning rate, epochs, where it was chosen), with LoRA."""

_UNMEASURED_LORA = (3e-4, 1.0)

MEASURED_LOSSES: dict[str, tuple[list[str], str]] = {
    "smollm2-135m-instruct": (["dmpo", "sft"], "benchmarks/results/two_stage/ml100k/sampled/seeds.md"),
}
"""embedded model -> (loss types, each weighted 1, where measured): the loss that replaces DMPO alone, with LoRA."""


def measured_defaults(
    model_name_or_path: str | None, adapter: bool, loss_type: str | Sequence[str]
) -> tuple[dict[str, Any], str]:
    """The best measured training settings for this model, adapter and loss, and one line saying where they come from.

    `model_name_or_path` is what `--model_name_or_path` holds (None: the embedded default); `adapter` whether LoRA
    (or QLoRA) trains; `loss_type` the first loss type decides, and DMPO alone gets the measured loss of
    `MEASURED_LOSSES`. Returns `({}, reason)` where nothing was measured (full fine-tuning).
    """
    if not adapter:
        return {}, "full fine-tuning was not measured: TRL's defaults"
    embedded = embedded_model(model_name_or_path)
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type) or ["dmpo"]
    loss = types[0]
    name = embedded.name.lower() if embedded is not None else None
    measured = MEASURED_SETTINGS.get((name, loss)) or MEASURED_SETTINGS.get((name, None))
    if measured is not None:
        learning_rate, epochs, source = measured
        why = f"chosen on validation users for {embedded.name} + LoRA ({source})"
    else:
        learning_rate, epochs = _UNMEASURED_LORA
        why = "not measured for this model: the lower of the embedded models' validation-chosen LoRA settings"
    settings = {**_LORA_RUN, "learning_rate": learning_rate, "num_train_epochs": epochs}
    if types == ["dmpo"] and name in MEASURED_LOSSES:  # DMPO alone, TRL's default: add the measured term
        loss_types, source = MEASURED_LOSSES[name]
        settings["loss_type"] = loss_types
        why += f"; loss {' + '.join(loss_types)} ({source})"
    return settings, why
