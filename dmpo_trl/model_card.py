"""The model card (README.md) of a trained recommender: TRL's card, with the base model's origin, the settings and
the ranking table.

`run_recipe` writes it into `output_dir` after saving the model (peft writes its own blank card on save) and makes
it the trainer's `create_model_card`, which `trainer.push_to_hub()` calls before uploading the folder.

Example:
```python
>>> from dmpo_trl.model_card import build_model_card
>>> card = build_model_card(
...     base_model={"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "description": "the Hub model"},
...     results={"zero-shot": {"metrics": {"hit_ratio@1": 0.1, "ndcg@5": 0.2, "num_users": 80}}},
...     settings={"training": {"loss_type": ["dmpo"], "beta": 0.1}},
...     model_name="smollm2-dmpo",
... )
>>> card.data.base_model, "| zero-shot | 0.1000 | 0.2000 |" in card.text
('HuggingFaceTB/SmolLM2-135M-Instruct', True)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .journal import atomic_write_text


__all__ = ["CARD_METRICS", "build_model_card", "ranking_table", "use_model_card"]

CARD_METRICS = ("hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr")
"""The metrics of the card's ranking table (those a result has)."""

# Settings the card lists, by group; the results file next to it records all of them.
_CARD_SETTINGS = {
    "training": ("loss_type", "loss_weights", "beta", "learning_rate", "num_train_epochs", "max_steps",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "seed"),
    "model": ("use_peft", "lora_r", "lora_alpha", "load_in_4bit", "dtype"),
    "data": ("dataset_name", "interactions", "num_train_users", "num_test_users", "num_negatives", "num_candidates",
             "negative_strategy", "prompt_style", "max_history"),
}  # fmt: skip


def ranking_table(results: dict[str, dict[str, Any]], metrics: Sequence[str] = CARD_METRICS) -> str:
    """A Markdown table of the ranking results: one row per model or baseline, the users it was ranked on.

    Example:
    ```python
    >>> print(ranking_table({"random": {"metrics": {"hit_ratio@1": 0.05, "mrr": 0.18, "num_users": 10}}}))
    | model | hit_ratio@1 | mrr | users |
    |---|---|---|---|
    | random | 0.0500 | 0.1800 | 10 |
    ```
    """
    columns = [m for m in metrics if any(m in r["metrics"] for r in results.values())]
    lines = ["| model | " + " | ".join(columns) + " | users |", "|---" * (len(columns) + 2) + "|"]
    for name, result in results.items():
        values = [f"{result['metrics'][m]:.4f}" if m in result["metrics"] else "" for m in columns]
        lines.append(f"| {name} | " + " | ".join(values) + f" | {result['metrics'].get('num_users', '')} |")
    return "\n".join(lines)


def _settings_list(settings: dict[str, dict[str, Any]]) -> str:
    lines = []
    for group, names in _CARD_SETTINGS.items():
        values = settings.get(group) or {}
        shown = [f"`{name}={values[name]}`" for name in names if values.get(name) not in (None, -1, [], "")]
        if shown:
            lines.append(f"- {group}: " + ", ".join(shown))
    return "\n".join(lines)


def build_model_card(
    base_model: dict[str, Any],
    results: dict[str, dict[str, Any]] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    model_name: str | None = None,
    hub_model_id: str | None = None,
    tags: Sequence[str] = (),
    wandb_url: str | None = None,
    results_file: str | None = "ranking_results.json",
    adapter: bool = False,
):
    """TRL's model card (`trl.trainer.utils.generate_model_card`, citing DMPO) plus this project's sections.

    Args:
        base_model: `dmpo_trl.models.model_origin(...)`; its `hub_id` becomes the card's `base_model`.
        results: ranking results by name (`run_recipe`'s), shown as a table.
        settings: `{"data": ..., "model": ..., "training": ..., "recipe": ...}`; the main ones are listed.
        model_name, hub_model_id: the card's title and the id its quick start loads (default: `model_name`).
        adapter: the folder holds a LoRA adapter (`library_name: peft`), not full weights.
    """
    from trl.trainer.utils import generate_model_card

    from .trainer import DMPOTrainer

    model_name = model_name or "dmpo-recommender"
    card = generate_model_card(
        base_model=base_model.get("hub_id"),
        model_name=model_name,
        hub_model_id=hub_model_id or model_name,
        dataset_name=None,
        tags=list(dict.fromkeys([*DMPOTrainer._tag_names, "recommendation", *tags])),
        wandb_url=wandb_url,
        trackio_url=None,
        trainer_name=DMPOTrainer._name,
        trainer_citation=DMPOTrainer._paper["citation"],
        paper_title=DMPOTrainer._paper["title"],
        paper_id=DMPOTrainer._paper["id"],
    )
    card.data.pop("licence", None)  # TRL's template field, always the placeholder "license"
    if base_model.get("license"):  # an embedded model's licence (SmolLM2: Apache-2.0; Gemma: the Gemma terms)
        card.data.license = base_model["license"]
    if adapter:
        card.data.library_name = "peft"
        card.data.pipeline_tag = "text-generation"
    description = str(base_model.get("description") or base_model.get("hub_id"))
    sentence = description  # a Hub id keeps its case (google/gemma-3-270m); a description starts a sentence
    if not description.startswith(str(base_model.get("hub_id"))):
        sentence = description[:1].upper() + description[1:]
    sections = [f"## Base model\n\n{sentence}."]
    if results:
        sections.append(
            "## Ranking results\n\nEach test user's history and candidate list (the item they chose next plus sampled "
            "negatives) in a prompt; the model ranks the candidates by the likelihood of each title.\n\n"
            + ranking_table(results)
        )
    if settings:
        where = f"\n\nAll settings, library versions and the commit: `{results_file}`." if results_file else ""
        sections.append(f"## Settings\n\n{_settings_list(settings)}{where}")
    sections.append(
        "## Rank with dmpo-trl\n\n```python\nfrom dmpo_trl import Ranker\n\n"
        f'ranker = Ranker.from_pretrained("{hub_model_id or model_name}")\n'
        'ranker.rank(["Heat (1995)", "Casino (1995)"], ["Babe (1995)", "Fargo (1996)", "Jumanji (1995)"])\n```'
    )
    text = card.text
    if not base_model.get("hub_id"):  # TRL's template links the base model on the Hub
        text = text.replace("a fine-tuned version of [None](https://huggingface.co/None)", "a fine-tuned version of")
        text = text.replace("fine-tuned version of.", f"fine-tuned version of {description}.")
    anchor = "\n## Training procedure"
    at = text.find(anchor)
    extra = "\n\n".join(sections) + "\n"
    card.text = text[:at] + "\n" + extra + text[at:] if at >= 0 else text + "\n" + extra
    return card


def use_model_card(trainer, output_dir: str | Path, **card_kwargs) -> None:
    """Make `trainer.create_model_card` write `build_model_card(**card_kwargs)` to `output_dir/README.md`.

    `Trainer.push_to_hub` saves the model (peft then writes its own blank card) and calls `create_model_card` before
    uploading the folder, so the uploaded card is this one. Call `trainer.create_model_card()` after
    `trainer.save_model` to write it locally.

    Example:
    ```python
    >>> use_model_card(trainer, "out", base_model=model_origin(), results=results)  # doctest: +SKIP
    >>> trainer.save_model("out"); trainer.create_model_card()  # doctest: +SKIP
    ```
    """

    def create_model_card(model_name: str | None = None, dataset_name: str | None = None, tags=None, **_):
        if not trainer.is_world_process_zero():
            return
        kwargs = dict(card_kwargs)
        if model_name:
            kwargs["model_name"] = model_name
        kwargs.setdefault("hub_model_id", trainer.hub_model_id)
        if tags:
            kwargs["tags"] = [*kwargs.get("tags", ()), *([tags] if isinstance(tags, str) else tags)]
        atomic_write_text(Path(output_dir) / "README.md", str(build_model_card(**kwargs)))

    trainer.create_model_card = create_model_card
