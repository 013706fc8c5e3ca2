"""Rank candidates with a trained recommender: `Ranker` in Python, `dmpo-trl rank` from the shell.

`run_recipe` (`dmpo-trl train`, `dmpo-trl demo`) saves, next to the model or adapter, `ranker.json`
(`RANKER_FILE`): the base model's origin and how it was loaded, the prompt settings, and the item catalogue
(item id -> title). `Ranker.from_pretrained(output_dir)` restores all of it, and `rank(history, candidates)` renders
the prompt exactly as the evaluator (`dmpo_trl.evaluation`) does and scores each candidate title by its
log-likelihood after it (`dmpo_trl.scoring.score_candidates`), plus the popularity prior when the run saved one
(`dmpo_trl.prior`): the scores are the evaluator's.

History and candidates are item ids of the catalogue or titles; a string that is not an id is used as a title as
written, so items outside the catalogue can be ranked too.

Example:
```python
>>> from dmpo_trl import Ranker
>>> ranker = Ranker.from_pretrained("outputs/demo")  # doctest: +SKIP
>>> ranker.rank(["Heat (1995)", "Casino (1995)"], ["Babe (1995)", "Fargo (1996)"])  # doctest: +SKIP
[('Fargo (1996)', -9.21), ('Babe (1995)', -11.87)]
```

```bash
dmpo-trl rank --model outputs/demo --input requests.jsonl --output ranked.jsonl
```
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .journal import atomic_write_text


logger = logging.getLogger(__name__)

__all__ = ["RANKER_FILE", "PromptSettings", "Ranker", "RankRequestError", "rank_main", "save_ranker_config"]

RANKER_FILE = "ranker.json"
"""What `Ranker.from_pretrained` reads in a run's output folder."""
RANKER_FORMAT = 1

# The `RecModelConfig` fields that say how the base model was loaded for training, so it is loaded the same way.
_LOAD_FIELDS = (
    "model_name_or_path",
    "gguf_file",
    "model_revision",
    "dtype",
    "load_in_4bit",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant",
    "attn_implementation",
    "trust_remote_code",
)


class RankRequestError(ValueError):
    """A ranking request that cannot be ranked; the message names the request and the field."""


@dataclass
class PromptSettings:
    """How the evaluator rendered prompts and scored titles for this model (`evaluate_ranking`'s arguments)."""

    prompt_style: str = "history"
    conversational: bool = False
    list_style: str = "numbered"
    answer_prefix: str = "\nAnswer:"
    normalize: bool = False
    end_of_turn: bool = True
    max_history: int | None = None
    batch_size: int = 20
    popularity_prior: float = 0.0  # > 0: scores carry `popularity_prior * log(1 + count)` (`with_popularity_prior`)


def save_ranker_config(
    output_dir: str | Path,
    titles: dict[str, str],
    prompt: PromptSettings,
    model_args: Any = None,
    origin: dict[str, Any] | None = None,
    dataset: str | None = None,
    popularity: dict[str, int] | None = None,
) -> Path:
    """Write `ranker.json` to `output_dir`: the catalogue, the prompt settings and how the base model loads, and
    each item's interaction count when `prompt.popularity_prior` ranks with them.

    Example:
    ```python
    >>> import tempfile
    >>> path = save_ranker_config(tempfile.mkdtemp(), {"1": "Heat (1995)"}, PromptSettings(max_history=5))
    >>> json.loads(path.read_text())["prompt"]["max_history"]
    5
    ```
    """
    if prompt.popularity_prior and popularity is None:
        raise ValueError("A popularity prior ranks with interaction counts: pass `popularity`")
    base = {name: getattr(model_args, name, None) for name in _LOAD_FIELDS} if model_args is not None else {}
    catalogue = {"dataset": dataset, "titles": {str(k): v for k, v in titles.items()}}
    if prompt.popularity_prior:
        catalogue["popularity"] = {str(k): int(v) for k, v in sorted(popularity.items())}
    config = {
        "format": RANKER_FORMAT,
        "base_model": {**base, "use_peft": bool(getattr(model_args, "use_peft", False)), "origin": origin},
        "prompt": asdict(prompt),
        "catalogue": catalogue,
    }
    return atomic_write_text(Path(output_dir) / RANKER_FILE, json.dumps(config, indent=1, ensure_ascii=False) + "\n")


@dataclass
class Ranker:
    """A trained model with its tokenizer, prompt settings and item catalogue, ready to rank candidates.

    Build it with `Ranker.from_pretrained(output_dir)`, or directly from a model and tokenizer.

    Example:
    ```python
    >>> ranker = Ranker(model, tokenizer, titles={"1": "Heat (1995)", "2": "Fargo (1996)"})  # doctest: +SKIP
    >>> ranker.rank(["1"], ["2", "Babe (1995)"])  # doctest: +SKIP
    [('Babe (1995)', -8.4), ('2', -10.1)]
    ```
    """

    model: Any
    tokenizer: Any
    prompt: PromptSettings = field(default_factory=PromptSettings)
    titles: dict[str, str] = field(default_factory=dict)
    popularity: dict[str, int] = field(default_factory=dict)  # item id -> interactions, for `prompt.popularity_prior`

    @classmethod
    def from_pretrained(
        cls,
        output_dir: str | Path,
        device: str | None = None,
        merge: bool = False,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
    ) -> Ranker:
        """Restore the model (or base model + adapter), tokenizer, prompt settings and catalogue of a run.

        Args:
            output_dir: a folder written by `run_recipe` (`dmpo-trl train`): the model or LoRA adapter, the
                tokenizer and `ranker.json`; or the Hub id of such a folder pushed with `push_to_hub`.
            device: where to run (default: CUDA when available, else CPU); a 4-bit base stays where it loads.
            merge: fold a LoRA adapter into the weights (faster, equal up to rounding); default: keep it apart, so
                the scores are exactly those of the trained model.
            cache_dir: where a GGUF base model is converted (default: `dmpo_trl.models.default_cache_dir()`).
            trust_remote_code: run the model's own code from its folder or Hub repo (off unless asked).
        """
        import torch

        from .models import RecModelConfig, load_adapter_model, load_model_and_tokenizer, resolve_model_path

        if not Path(output_dir).exists():  # a Hub repo id, or a mistake
            from huggingface_hub import snapshot_download

            try:
                output_dir = snapshot_download(str(output_dir))
            except Exception as error:
                raise FileNotFoundError(
                    f"{output_dir}: no such folder, nor a Hub repo that could be downloaded ({type(error).__name__})"
                ) from error
        output_dir = Path(output_dir)
        path = output_dir / RANKER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{output_dir} holds no {RANKER_FILE}: rank with a folder saved by `dmpo-trl train` or `run_recipe`"
            )
        config = json.loads(path.read_text())
        if config.get("format") != RANKER_FORMAT:
            raise ValueError(f"{path}: format {config.get('format')!r}, this version reads format {RANKER_FORMAT}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = config["base_model"]
        if (output_dir / "adapter_config.json").is_file():
            load = {k: v for k, v in base.items() if k in _LOAD_FIELDS and v is not None}
            load["model_name_or_path"] = resolve_model_path(
                load.pop("model_name_or_path", None), load.pop("gguf_file", None), cache_dir
            )
            model_args = RecModelConfig(**load, use_peft=True)
            model, tokenizer = load_adapter_model(
                output_dir, model_args, merge=merge, device=device, trust_remote_code=trust_remote_code
            )
        else:
            model, tokenizer = load_model_and_tokenizer(
                output_dir, dtype=base.get("dtype") or "float32", trust_remote_code=trust_remote_code
            )
        quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if not quantized:
            model.to(device)
        model.eval()
        prompt = PromptSettings(**config["prompt"])
        catalogue = config["catalogue"]
        return cls(model, tokenizer, prompt, dict(catalogue["titles"]), dict(catalogue.get("popularity", {})))

    def title(self, item: str) -> str:
        """The title of a catalogue item id; any other string is taken as a title."""
        return self.titles.get(str(item), str(item))

    def check(self, history: Sequence[str], candidates: Sequence[str], where: str = "request") -> None:
        """Raise `RankRequestError` (its message starts with `where`, naming the field) unless `history` and
        `candidates` are non-empty lists of ids or titles and no candidate title repeats."""
        for name, values in (("history", history), ("candidates", candidates)):
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise RankRequestError(f"{where}: field {name!r} must be a non-empty list of item ids or titles")
            bad = next((v for v in values if not isinstance(v, (str, int)) or isinstance(v, bool)), None)
            if bad is not None:
                raise RankRequestError(f"{where}: field {name!r} holds {bad!r}; items are ids or titles")
        titles = [self.title(c) for c in candidates]
        if len(set(titles)) < len(titles):
            repeated = next(t for t in titles if titles.count(t) > 1)
            raise RankRequestError(f"{where}: field 'candidates' lists {repeated!r} more than once")

    def _prompt(self, history: Sequence[str], candidates: Sequence[str]):
        from .data import render_prompt, resolve_template
        from .data.prompts import uses_candidates
        from .evaluation import _wrap

        template = resolve_template(self.prompt.prompt_style)
        titles = [self.title(c) for c in candidates]
        history_titles = [self.title(h) for h in history]
        text = render_prompt(
            template, history_titles, titles if uses_candidates(template) else (), self.prompt.list_style
        )
        return _wrap(text, titles, self.prompt.conversational, self.prompt.answer_prefix)

    @functools.cached_property
    def _ids_by_title(self) -> dict[str, str]:
        return {title: item for item, title in self.titles.items()}

    def item(self, value: str) -> str:
        """The catalogue item id of an id or a title; any other string as it is."""
        value = str(value)
        return value if value in self.titles else self._ids_by_title.get(value, value)

    def scores(self, history: Sequence[str], candidates: Sequence[str], where: str = "request") -> list[float]:
        """Each candidate's score in the order given: the log-likelihood of its title after the prompt, plus the
        popularity prior when `prompt.popularity_prior` is set (an item outside the catalogue counts 0)."""
        from .evaluation import with_popularity_prior
        from .scoring import score_candidates

        self.check(history, candidates, where)
        limit = self.prompt.max_history
        if limit and len(history) > limit:
            logger.warning(
                f"{where}: kept the last {limit} of {len(history)} history items (the model was trained "
                f"on {limit}); {len(history) - limit} earlier ones dropped."
            )
            history = list(history)[-limit:]
        prompt, completions = self._prompt(history, candidates)
        values = score_candidates(
            self.model,
            self.tokenizer,
            prompt,
            completions,
            self.prompt.normalize,
            self.prompt.end_of_turn,
            self.prompt.batch_size,
        )
        if self.prompt.popularity_prior:
            ids = [self.item(c) for c in candidates]
            return with_popularity_prior(values, ids, self.popularity, self.prompt.popularity_prior)
        return [float(v) for v in values]

    def rank(self, history: Sequence[str], candidates: Sequence[str]) -> list[tuple[str, float]]:
        """`[(candidate, score), ...]`, best first: a permutation of `candidates` (ties keep their given order).

        Example:
        ```python
        >>> ranker.rank(["Heat (1995)"], ["Babe (1995)", "Casino (1995)"])  # doctest: +SKIP
        [('Casino (1995)', -7.9), ('Babe (1995)', -12.3)]
        ```
        """
        return self._ranked(candidates, self.scores(history, candidates))

    @staticmethod
    def _ranked(candidates: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
        order = sorted(range(len(candidates)), key=lambda k: -scores[k])
        return [(candidates[k], scores[k]) for k in order]

    def rank_batch(self, requests: Sequence[dict[str, Any]], progress: bool = False) -> list[list[tuple[str, float]]]:
        """`rank` for many `{"history": [...], "candidates": [...]}` requests; a bad one raises, naming its index.

        Example:
        ```python
        >>> ranker.rank_batch([{"history": ["1"], "candidates": ["2", "3"]}])  # doctest: +SKIP
        [[('3', -6.2), ('2', -9.0)]]
        ```
        """
        from tqdm.auto import tqdm

        from .evaluation import process_rank

        for index, request in enumerate(requests):
            missing = [key for key in ("history", "candidates") if not isinstance(request, dict) or key not in request]
            if missing:
                raise RankRequestError(f"request {index}: missing field {missing[0]!r}")
            self.check(request["history"], request["candidates"], f"request {index}")
        rank, world = process_rank()  # under torchrun/accelerate each process ranks its share, then all are gathered
        mine = range(rank, len(requests), world)
        ranked = {
            index: self._ranked(
                requests[index]["candidates"],
                self.scores(requests[index]["history"], requests[index]["candidates"], f"request {index}"),
            )
            for index in tqdm(mine, desc="Ranking", unit="request", disable=not progress or rank != 0)
        }
        if world > 1:
            from accelerate.utils import gather_object

            ranked = {index: value for part in gather_object([ranked]) for index, value in part.items()}
        return [ranked[index] for index in range(len(requests))]


# --- dmpo-trl rank ----------------------------------------------------------------------------------------------


def add_rank_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `dmpo-trl rank`."""
    parser.add_argument("--model", required=True, help="a folder saved by `dmpo-trl train` (model + ranker.json)")
    parser.add_argument(
        "--input", required=True, help='JSON lines: {"history": [...], "candidates": [...]} (ids or titles)'
    )
    parser.add_argument("--output", required=True, help="JSON lines: each request plus its ranking, best first")
    parser.add_argument("--device", help="e.g. cpu, cuda (default: cuda when available)")
    parser.add_argument("--merge", action="store_true", help="fold a LoRA adapter into the weights first")
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="run the model's own code from its folder (off by default)"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def read_requests(path: str | Path) -> list[dict[str, Any]]:
    """The requests of a JSON-lines file (blank lines skipped); raises `RankRequestError` naming a bad line."""
    requests = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise RankRequestError(f"{path} line {number}: not JSON ({error.msg})") from None
        if not isinstance(request, dict):
            raise RankRequestError(f"{path} line {number}: expected a JSON object with history and candidates")
        for key in ("history", "candidates"):
            if key not in request:
                raise RankRequestError(f"{path} line {number}: missing field {key!r}")
        request["_line"] = number
        requests.append(request)
    return requests


def run_rank(args: argparse.Namespace) -> int:
    """`dmpo-trl rank`: rank every request of `--input` with `--model`, write `--output`."""
    from .recipe_cli import _prepare_process

    _prepare_process()  # the CLI's process settings (OpenMP waits, bitsandbytes' optional-kernel notice)
    try:
        requests = read_requests(args.input)
    except FileNotFoundError:
        print(f"dmpo-trl rank: error: no such input file: {args.input}", file=sys.stderr)
        return 2
    except RankRequestError as error:
        print(f"dmpo-trl rank: error: {error}", file=sys.stderr)
        return 2
    if not (Path(args.model) / RANKER_FILE).is_file():
        print(f"dmpo-trl rank: error: {args.model} holds no {RANKER_FILE} (a folder saved by `dmpo-trl train`)",
              file=sys.stderr)  # fmt: skip
        return 2
    ranker = Ranker.from_pretrained(
        args.model, device=args.device, merge=args.merge, trust_remote_code=args.trust_remote_code
    )
    for request in requests:
        try:
            ranker.check(request["history"], request["candidates"], f"{args.input} line {request['_line']}")
        except RankRequestError as error:
            print(f"dmpo-trl rank: error: {error}", file=sys.stderr)
            return 2
    rankings = ranker.rank_batch([{k: v for k, v in r.items() if k != "_line"} for r in requests], args.progress)
    from .evaluation import process_rank

    if process_rank()[0] != 0:  # under torchrun every process ranked its share; the first one writes
        return 0
    output = Path(args.output)
    lines = []
    for request, ranking in zip(requests, rankings):
        request.pop("_line")
        request["ranking"] = [{"item": c, "title": ranker.title(c), "score": s} for c, s in ranking]
        lines.append(json.dumps(request, ensure_ascii=False) + "\n")
    atomic_write_text(output, "".join(lines))
    print(f"Ranked {len(requests)} requests with {args.model}: {output}")
    return 0


def rank_main(argv: Sequence[str] | None = None) -> int:
    """`dmpo-trl rank --model DIR --input requests.jsonl --output ranked.jsonl`; returns the exit code.

    Example:
    ```python
    >>> rank_main(["--model", "outputs/demo", "--input", "in.jsonl", "--output", "out.jsonl"])  # doctest: +SKIP
    0
    ```
    """
    parser = argparse.ArgumentParser(prog="dmpo-trl rank", description=__doc__.splitlines()[0])
    add_rank_arguments(parser)
    return run_rank(parser.parse_args(argv))
