"""The model card (README.md) of a trained recommender: TRL's card, its quick start ranking with `Ranker` and
`dmpo-trl rank`, with the base model's origin, the ranking table, and a training procedure that names the data, the
split, K, the loss and the main settings.

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
>>> 'ranker = Ranker.from_pretrained("smollm2-dmpo")' in card.text, "pipeline(" in card.text
(True, False)
```
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl.trainer.utils import generate_model_card

from .journal import atomic_write_text
from .trainer import DMPOTrainer


__all__ = ["CARD_METRICS", "EXAMPLE_ITEMS", "build_model_card", "quick_start", "ranking_table", "training_procedure",
           "use_model_card"]  # fmt: skip

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
"""The split `run_recipe` writes next to the card (`dmpo_trl.recipe.SPLIT_FILE`)."""

RANKER_FILE = "ranker.json"
"""The catalogue and prompt settings `run_recipe` writes next to the card (`dmpo_trl.ranking.RANKER_FILE`)."""

CARD_METRICS = ("hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr")
"""The metrics of the card's ranking table (those a result has)."""


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


EXAMPLE_ITEMS = ("Heat (1995)", "Casino (1995)", "Babe (1995)", "Fargo (1996)", "Jumanji (1995)")
"""The quick start's two history items and three candidates when the catalogue is not known (MovieLens titles)."""


def _shown(value: Any) -> bool:
    return value not in (None, -1, [], "")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _dataset_name(name: Any) -> str:
    """A dataset's name for the card: a registered name or Hub id as it is, a local path by its last part."""
    if not name:
        return ""
    name = str(name)
    looks_local = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).exists()
    return Path(name).name if looks_local else name


def quick_start(model_id: str, items: Sequence[str] = EXAMPLE_ITEMS) -> str:
    """The card's "Quick start": rank candidates for a history with `Ranker`, and a file of requests with
    `dmpo-trl rank`; `items` are two history items and three candidates of the model's catalogue."""
    history, candidates = list(items[:2]), list(items[2:5])
    folder = model_id.rstrip("/").rsplit("/", 1)[-1] or "model"
    request = json.dumps({"history": history, "candidates": candidates}, ensure_ascii=False)
    return (
        "## Quick start\n\n"
        "This model ranks candidate items for a user's history: it scores each candidate by the likelihood of its "
        "title after a prompt listing the history. History and candidates are items of the catalogue saved with "
        'it (`ranker.json`), each by its id or title; `{"title": "..."}` is an item outside the catalogue.\n\n'
        "```python\nfrom dmpo_trl import Ranker\n\n"
        f'ranker = Ranker.from_pretrained("{model_id}")\n'
        f"history = {json.dumps(history, ensure_ascii=False)}\n"
        f"candidates = {json.dumps(candidates, ensure_ascii=False)}\n"
        "for item, score in ranker.rank(history, candidates):  # best first\n"
        '    print(f"{score:9.3f}  {ranker.title(item)}")\n```\n\n'
        "From the command line, one request a line (JSON lines in, each request with its ranking out):\n\n"
        f"```bash\nhf download {model_id} --local-dir {folder}\n"
        f"echo {_shell_quote(request)} > requests.jsonl\n"
        f"dmpo-trl rank --model_name_or_path {folder} --input_file requests.jsonl --output_file rankings.jsonl\n```\n"
    )


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def training_procedure(
    settings: Mapping[str, Mapping[str, Any]] | None,
    split: Mapping[str, Any] | None = None,
    num_train_rows: int | None = None,
    split_file: str | None = None,
    results_file: str | None = None,
) -> str:
    """The card's account of training, one line each for the data, the split, the negatives (K), the loss and the
    optimisation; a value neither `settings` nor `split` holds is left out.

    Args:
        settings: `run_recipe`'s settings by group ("data", "model", "training"), see `run_settings`.
        split: the run's `split.json` record (user ids by part, its seed); its counts win over the requested ones.
        num_train_rows: the training rows (preference pairs or K-negative rows) the trainer used.
        split_file: where the split is saved, relative to the card (`split.json`).
        results_file: where all settings, library versions and the commit are saved.

    Example:
    ```python
    >>> settings = {"data": {"dataset_name": "movielens-100k", "num_train_users": 80, "num_test_users": 80,
    ...                      "num_negatives": 4}, "training": {"loss_type": ["dmpo"], "beta": 0.1, "seed": 0}}
    >>> print(training_procedure(settings))
    - Data: `movielens-100k`, 80 training users.
    - Split: users drawn with seed 0: 80 training, 80 test users, disjoint.
    - Negatives: K = 4 per training row.
    - Loss: `loss_type=['dmpo']`, beta 0.1.
    - Optimisation: seed 0.
    ```
    """
    settings = settings or {}
    data, model, training = (dict(settings.get(group) or {}) for group in ("data", "model", "training"))
    split = split or {}
    lines = []

    users = {part: len(split[part]) for part in ("train", "valid", "test") if isinstance(split.get(part), list)}
    requested = {"train": "num_train_users", "valid": "num_valid_users", "test": "num_test_users"}
    for part, key in requested.items():
        if part not in users and _shown(data.get(key)):
            users[part] = data[key]
    # A preference dataset is trained as it is: its split.json (from `dmpo-trl prepare`) names "preference_data",
    # or run_recipe's has no seed and no test users.
    preference = bool(split.get("preference_data")) or (
        bool(split) and split.get("seed") is None and not users.get("test")
    )
    dataset = _dataset_name(split.get("preference_data") or split.get("dataset") or data.get("dataset_name"))
    facts = []
    if preference:
        facts.append(f"the preference dataset `{dataset}`, trained as it is" if dataset else "a preference dataset")
        if split.get("preference_data") and split.get("dataset"):
            facts.append(f"built from `{_dataset_name(split['dataset'])}`")
    else:
        facts.append(f"`{dataset}`" if dataset else "")
        if users.get("train"):
            facts.append(f"{users['train']} training users")
    if num_train_rows is not None:
        facts.append(f"{num_train_rows} training rows")
    elif _shown(data.get("num_train_rows")):
        facts.append(f"at most {data['num_train_rows']} training rows")
    if not preference:
        if _shown(data.get("max_history")):
            facts.append(f"at most {data['max_history']} history items per prompt")
        if _shown(data.get("prompt_style")):
            facts.append(f"`prompt_style={data['prompt_style']}`")
    facts = [fact for fact in facts if fact]
    if facts:
        lines.append("- Data: " + ", ".join(facts) + ".")

    seed = split.get("seed") if split else None
    if seed is None and not split and data:  # the seed run_recipe splits with: split_seed, else the training seed
        seed = data.get("split_seed") if _shown(data.get("split_seed")) else training.get("seed")
    parts = (("train", "training"), ("valid", "validation"), ("test", "test"))
    counts = [f"{users[part]} {label}" for part, label in parts if part in users]
    if counts or seed is not None or split_file:
        text = f"- Split: users drawn with seed {seed}" if seed is not None else "- Split: users"
        if counts:
            text += ": " + ", ".join(counts) + " users, disjoint"
        if split_file:
            text += f"; the user ids and each test user's candidates are in `{split_file}` next to this card"
        lines.append(text + ".")

    if _shown(data.get("num_negatives")) and not preference:
        negatives = f"- Negatives: K = {data['num_negatives']} per training row"
        if _shown(data.get("negative_strategy")):
            negatives += f" (`negative_strategy={data['negative_strategy']}`)"
        if _shown(data.get("num_candidates")):
            negatives += f"; {data['num_candidates']} candidates per ranking prompt"
        lines.append(negatives + ".")

    loss = []
    if _shown(training.get("loss_type")):
        loss.append(f"`loss_type={training['loss_type']}`")
    if _shown(training.get("loss_weights")):
        loss.append(f"`loss_weights={training['loss_weights']}`")
    if _shown(training.get("beta")):
        loss.append(f"beta {_number(training['beta'])}")
    if loss:
        lines.append("- Loss: " + ", ".join(loss) + ".")

    steps = []
    if _shown(training.get("learning_rate")):
        steps.append(f"learning rate {_number(training['learning_rate'])}")
    if _shown(training.get("max_steps")) and training["max_steps"] > 0:
        steps.append(f"{training['max_steps']} steps")
    elif _shown(training.get("num_train_epochs")):
        epochs = training["num_train_epochs"]
        steps.append(f"{_number(epochs)} epoch{'' if epochs == 1 else 's'}")
    if _shown(training.get("per_device_train_batch_size")):
        batch = f"batch size {training['per_device_train_batch_size']} per device"
        if (training.get("gradient_accumulation_steps") or 1) > 1:
            batch += f" x {training['gradient_accumulation_steps']} accumulation steps"
        steps.append(batch)
    if model.get("use_peft") or model.get("load_in_4bit"):
        kind = "QLoRA (4-bit base)" if model.get("load_in_4bit") else "LoRA"
        rank = [
            f"{name} {model[key]}"
            for name, key in (("r", "lora_r"), ("alpha", "lora_alpha"))
            if _shown(model.get(key))
        ]
        steps.append(kind + (" " + ", ".join(rank) if rank else ""))
    elif model:
        steps.append("full finetuning")
    if _shown(training.get("seed")):
        steps.append(f"seed {training['seed']}")
    if steps:
        lines.append("- Optimisation: " + ", ".join(steps) + ".")
    if results_file and settings:
        lines.append(f"\nAll settings, library versions and the commit: `{results_file}`.")
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
    split: Mapping[str, Any] | None = None,
    num_train_rows: int | None = None,
    split_file: str | None = None,
    example_items: Sequence[str] = EXAMPLE_ITEMS,
):
    """TRL's model card (`trl.trainer.utils.generate_model_card`, citing DMPO), its quick start replaced by one that
    ranks with `Ranker` and `dmpo-trl rank`, plus the base model, the ranking table and the training procedure.

    Args:
        base_model: `dmpo_trl.models.model_origin(...)`; its `hub_id` becomes the card's `base_model`.
        results: ranking results by name (`run_recipe`'s), shown as a table.
        settings: `{"data": ..., "model": ..., "training": ..., "recipe": ...}`; the training procedure names the
            main ones (see `training_procedure`).
        model_name, hub_model_id: the card's title and the id its quick start loads (default: `model_name`).
        adapter: the folder holds a LoRA adapter (`library_name: peft`), not full weights.
        split, num_train_rows, split_file: the run's `split.json` record, training rows and split file name, for
            the training procedure (`use_model_card` reads them from the output folder and the trainer).
        example_items: two history items and three candidates of the catalogue, for the quick start.
    """
    model_name = model_name or "dmpo-recommender"
    model_id = hub_model_id or model_name
    card = generate_model_card(
        base_model=base_model.get("hub_id"),
        model_name=model_name,
        hub_model_id=model_id,
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
    sections = [quick_start(model_id, example_items if len(example_items) >= 5 else EXAMPLE_ITEMS)]
    sections.append(f"## Base model\n\n{sentence}.\n")
    if results:
        sections.append(
            "## Ranking results\n\nEach test user's history and candidate list (the item they chose next plus sampled "
            "negatives) in a prompt; the model ranks the candidates by the likelihood of each title.\n\n"
            + ranking_table(results)
            + "\n"
        )
    procedure = training_procedure(settings, split, num_train_rows, split_file, results_file)
    text = card.text
    if not base_model.get("hub_id"):  # TRL's template links the base model on the Hub
        text = text.replace("a fine-tuned version of [None](https://huggingface.co/None)", "a fine-tuned version of")
        text = text.replace("fine-tuned version of.", f"fine-tuned version of {description}.")
    # TRL's quick start (a chat pipeline) gives way to ours; its training procedure (badges, the method, framework
    # versions) and citations stay, with this run's data, split, negatives, loss and settings added.
    quick, procedure_at, versions_at = (text.find(f"\n{heading}\n") for heading in _TRL_HEADINGS)
    if not 0 <= quick < procedure_at < versions_at:  # another template: keep it whole, add ours after it
        logger.warning("TRL's model card template has not the headings %s; its quick start is kept", _TRL_HEADINGS)
        procedure = f"## Training procedure\n\n{procedure}\n" if procedure else ""
        card.text = text.rstrip("\n") + "\n\n" + "\n".join(sections) + "\n" + procedure
        return card
    head, trl_procedure, tail = text[: quick + 1], text[procedure_at + 1 : versions_at + 1], text[versions_at + 1 :]
    trl_procedure = "\n\n".join(line.rstrip() for line in trl_procedure.splitlines() if line.strip()) + "\n"
    if procedure:
        trl_procedure += f"\n{procedure}\n"
    card.text = head + "\n".join(sections) + "\n" + trl_procedure + "\n" + tail
    return card


_TRL_HEADINGS = ("## Quick start", "## Training procedure", "### Framework versions")
"""The headings of TRL's model card template that `build_model_card` edits around."""


def _catalogue_examples(output_dir: Path) -> tuple[str, ...]:
    """Two history items and three candidates from the catalogue of `output_dir/ranker.json` (none if absent)."""
    try:
        titles = json.loads((Path(output_dir) / RANKER_FILE).read_text())["catalogue"]["titles"]
    except (OSError, ValueError, KeyError, TypeError):
        return ()
    names = list(dict.fromkeys(str(title) for title in titles.values() if str(title).strip()))
    return tuple(names[:5]) if len(names) >= 5 else ()


def use_model_card(trainer, output_dir: str | Path, **card_kwargs) -> None:
    """Make `trainer.create_model_card` write `build_model_card(**card_kwargs)` to `output_dir/README.md`.

    `Trainer.push_to_hub` saves the model (peft then writes its own blank card) and calls `create_model_card` before
    uploading the folder, so the uploaded card is this one. Call `trainer.create_model_card()` after
    `trainer.save_model` to write it locally. Unless `card_kwargs` give them, the card's training procedure counts
    the trainer's training rows and reads the split from `output_dir/split.json`, and its quick start ranks items of
    the catalogue in `output_dir/ranker.json`.

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
        split_path = Path(output_dir) / SPLIT_FILE
        if "split" not in kwargs and split_path.is_file():
            try:
                kwargs["split"] = json.loads(split_path.read_text())
                kwargs.setdefault("split_file", SPLIT_FILE)
            except ValueError:  # not JSON: the card names the requested sizes instead
                logger.warning("%s is not JSON; the model card leaves it out", split_path)
        if "num_train_rows" not in kwargs:
            with contextlib.suppress(TypeError):  # no dataset, or an iterable one without a length
                kwargs["num_train_rows"] = len(trainer.train_dataset)
        if "example_items" not in kwargs and (examples := _catalogue_examples(Path(output_dir))):
            kwargs["example_items"] = examples
        atomic_write_text(Path(output_dir) / "README.md", str(build_model_card(**kwargs)))

    trainer.create_model_card = create_model_card
