"""Rank candidates with a trained recommender: `Ranker` in Python, `dmpo-trl rank` from the shell.

`run_recipe` (`dmpo-trl train`, `dmpo-trl demo`) saves, next to the model or adapter, `ranker.json`
(`RANKER_FILE`): the base model's origin and how it was loaded, the prompt settings, and the item catalogue
(item id -> title). `Ranker.from_pretrained(output_dir)` restores all of it, and `rank(history, candidates)` renders
the prompt exactly as the evaluator (`dmpo_trl.evaluation`) does and scores each candidate title by its
log-likelihood after it (`dmpo_trl.scoring.score_candidates`), plus the popularity prior when the run saved one
(`dmpo_trl.prior`): the scores are the evaluator's.

History and candidates are items of the catalogue, each given by its id or its title. An item outside the catalogue
is ranked only when written as free text, `{"title": "..."}`: any other string that is neither an id nor a title is
refused (`RankRequestError`), as are empty or `null` items, so a typo is never ranked as a title by accident.
`check_request` is that check; `dmpo-trl rank` makes it, and every check of its files, before it loads the model.

Example:
```python
>>> from dmpo_trl import Ranker
>>> ranker = Ranker.from_pretrained("outputs/demo")  # doctest: +SKIP
>>> ranker.rank(["Heat (1995)", "Casino (1995)"], ["Babe (1995)", {"title": "Fargo 2 (2031)"}])  # doctest: +SKIP
[({'title': 'Fargo 2 (2031)'}, -9.21), ('Babe (1995)', -11.87)]
```

```bash
dmpo-trl rank --model_name_or_path outputs/demo --input_file requests.jsonl --output_file ranked.jsonl
```
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import render_prompt, resolve_template
from .data.prompts import prompt_and_completions, uses_candidates
from .distributed import gather_objects, process_rank
from .evaluation import with_popularity_prior
from .models import base_model_args, load_adapter_model, load_model_and_tokenizer
from .ranker_file import RANKER_FILE, check_ranker_folder, read_ranker_config, save_ranker_config
from .retrieval import best_first
from .rows import _show
from .scoring import score_candidates
from .settings import PromptSettings
from .two_stage import fused_scores


logger = logging.getLogger(__name__)

__all__ = [
    "MAX_REQUEST_BYTES",
    "RANKER_FILE",
    "PromptSettings",
    "RankRequestError",
    "Ranker",
    "base_model_args",
    "check_ranker_folder",
    "check_request",
    "read_ranker_config",
    "read_requests",
    "save_ranker_config",
]

MAX_REQUEST_BYTES = 1 << 20
"""The longest request line `dmpo-trl rank` reads, 1 MiB (newline excluded); a longer line is refused, naming it."""

Item = str | int | Mapping[str, str]
"""A history or candidate item: a catalogue id or title, or free text `{"title": "..."}`."""


class RankRequestError(ValueError):
    """A ranking request that cannot be ranked; the message names the request and the field."""


def _resolve(
    value: Any, name: str, where: str, titles: Mapping[str, str], ids: Mapping[str, str]
) -> tuple[str | None, str]:
    """(catalogue id, or None for free text; title) of one item; refuses anything else."""
    if isinstance(value, Mapping):
        text = value.get("title")
        if set(value) != {"title"}:
            raise RankRequestError(
                f'{where}: `{name}` has keys {sorted(map(str, value))}; free text is {{"title": "..."}}'
            )
        if not isinstance(text, str) or not text.strip():
            raise RankRequestError(f"{where}: `{name}.title` must be a title (a non-blank string), got {_show(text)}")
        return ids.get(text), text
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problem = "is null" if value is None else f"must be an item id or title (a string), got {_show(value)}"
        raise RankRequestError(f'{where}: `{name}` {problem}; free text is {{"title": "..."}}')
    if not value.strip():
        raise RankRequestError(
            f"{where}: `{name}` is {'an empty string' if not value else 'blank'}; an item needs an id or title"
        )
    if value in titles:
        return value, titles[value]
    if value in ids:
        return ids[value], value
    raise RankRequestError(
        f"{where}: `{name}` {value[:80]!r} is not in the catalogue (no such id or title); "
        'free text is {"title": "..."}'
    )


def check_request(
    request: Any,
    titles: Mapping[str, str],
    where: str = "request",
    ids: Mapping[str, str] | None = None,
    need_candidates: bool = True,
) -> tuple[list[str], list[tuple[str | None, str]]]:
    """Check one `{"history": [...], "candidates": [...]}` request against the catalogue `titles` (id -> title);
    return the history's titles and each candidate's (id, title), id None for free text.
    `need_candidates=False` lets a request leave `candidates` out (no candidates returned): it is then ranked
    two-stage from the whole catalogue (`Ranker.recommend`).

    Each field is a non-empty list of items: a catalogue id or title, or free text `{"title": "..."}`. Anything else
    (a missing field, an empty, blank or null item, a string outside the catalogue, a candidate title given twice) is
    refused with a `RankRequestError` whose message starts with `where` and names the field. `ids` (title -> id) is
    the inverse of `titles`, when the caller keeps one.

    Example:
    ```python
    >>> titles = {"1": "Heat (1995)", "2": "Fargo (1996)"}
    >>> check_request({"history": ["1"], "candidates": ["Fargo (1996)", {"title": "Babe (1995)"}]}, titles)
    (['Heat (1995)'], [('2', 'Fargo (1996)'), (None, 'Babe (1995)')])
    >>> try:
    ...     check_request({"history": ["1"], "candidates": ["2", "Babe (1995)"]}, titles, "line 3")
    ... except RankRequestError as error:
    ...     print(error)
    line 3: `candidates[1]` 'Babe (1995)' is not in the catalogue (no such id or title); free text is {"title": "..."}
    ```
    """
    if not isinstance(request, Mapping):
        raise RankRequestError(
            f'{where}: a request is an object {{"history": [...], "candidates": [...]}}, got {_show(request)}'
        )
    ids = {title: item for item, title in titles.items()} if ids is None else ids
    resolved = {}
    for name in ("history", "candidates"):
        if name == "candidates" and name not in request and not need_candidates:
            resolved[name] = []
            continue
        if name not in request:
            raise RankRequestError(f"{where}: `{name}` is missing")
        values = request[name]
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
            raise RankRequestError(f"{where}: `{name}` must be a non-empty list of items, got {_show(values)}")
        resolved[name] = [_resolve(value, f"{name}[{k}]", where, titles, ids) for k, value in enumerate(values)]
    first: dict[str, int] = {}
    for k, (_, title) in enumerate(resolved["candidates"]):
        if first.setdefault(title, k) != k:
            raise RankRequestError(
                f"{where}: `candidates[{k}]` repeats {title[:80]!r}, given as `candidates[{first[title]}]`"
            )
    return [title for _, title in resolved["history"]], resolved["candidates"]


@dataclass
class Ranker:
    """A trained model with its tokenizer, prompt settings and item catalogue, ready to rank candidates.

    Build it with `Ranker.from_pretrained(output_dir)`, or directly from a model and tokenizer. Items are catalogue
    ids or titles, or free text `{"title": "..."}` for an item outside the catalogue (see `check_request`).

    Example:
    ```python
    >>> ranker = Ranker(model, tokenizer, titles={"1": "Heat (1995)", "2": "Fargo (1996)"})  # doctest: +SKIP
    >>> ranker.rank(["1"], ["2", {"title": "Babe (1995)"}])  # doctest: +SKIP
    [({'title': 'Babe (1995)'}, -8.4), ('2', -10.1)]
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

        Before any model is loaded, a `ValueError` naming the file and what is wrong refuses a file given for the
        folder, a `ranker.json` that `read_ranker_config` refuses, and missing weights (an adapter_config.json
        without adapter_model.safetensors, a config.json without model.safetensors); `FileNotFoundError` a folder
        that does not exist nor downloads.

        Args:
            output_dir: a folder written by `run_recipe` (`dmpo-trl train`): the model or LoRA adapter, the
                tokenizer and `ranker.json`; or the Hub id of such a folder pushed with `push_to_hub`.
            device: where to run (default: CUDA when available, else CPU); a 4-bit base stays where it loads.
            merge: fold a LoRA adapter into the weights (faster, equal up to rounding); default: keep it apart, so
                the scores are exactly those of the trained model.
            cache_dir: where a GGUF base model is converted (default: `dmpo_trl.models.default_cache_dir()`).
            trust_remote_code: run the model's own code from its folder or Hub repo (off unless asked).
        """
        output_dir, config = check_ranker_folder(output_dir, download=True)

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = config["base_model"]
        if (output_dir / "adapter_config.json").is_file():
            model, tokenizer = load_adapter_model(
                output_dir,
                base_model_args(config, cache_dir),
                merge=merge,
                device=device,
                trust_remote_code=trust_remote_code,
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

    def title(self, item: Item) -> str:
        """The title of a catalogue item id or of free text `{"title": ...}`; any other string is taken as a title."""
        if isinstance(item, Mapping):
            return str(item.get("title"))
        return self.titles.get(str(item), str(item))

    def check(
        self, history: Sequence[Item], candidates: Sequence[Item], where: str = "request"
    ) -> tuple[list[str], list[tuple[str | None, str]]]:
        """`check_request` against this ranker's catalogue: the history's titles and each candidate's (id, title), or
        a `RankRequestError` whose message starts with `where` and names the field."""
        return check_request({"history": history, "candidates": candidates}, self.titles, where, self._ids_by_title)

    def _prompt(self, history: Sequence[str], titles: Sequence[str]):
        template = resolve_template(self.prompt.prompt_style)
        text = render_prompt(template, history, titles if uses_candidates(template) else (), self.prompt.list_style)
        return prompt_and_completions(text, titles, self.prompt.conversational, self.prompt.answer_prefix)

    @functools.cached_property
    def _ids_by_title(self) -> dict[str, str]:
        return {title: item for item, title in self.titles.items()}

    def item(self, value: str) -> str:
        """The catalogue item id of an id or a title; any other string as it is."""
        value = str(value)
        return value if value in self.titles else self._ids_by_title.get(value, value)

    def scores(self, history: Sequence[Item], candidates: Sequence[Item], where: str = "request") -> list[float]:
        """Each candidate's score in the order given: the log-likelihood of its title after the prompt, plus the
        popularity prior when `prompt.popularity_prior` is set (free text outside the catalogue counts 0)."""
        history, resolved = self.check(history, candidates, where)
        limit = self.prompt.max_history
        if limit and len(history) > limit:
            logger.warning(
                f"{where}: kept the last {limit} of {len(history)} history items (the model was trained "
                f"on {limit}); {len(history) - limit} earlier ones dropped."
            )
            history = history[-limit:]
        prompt, completions = self._prompt(history, [title for _, title in resolved])
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
            ids = [item for item, _ in resolved]
            return with_popularity_prior(values, ids, self.popularity, self.prompt.popularity_prior)
        return [float(v) for v in values]

    def rank(self, history: Sequence[Item], candidates: Sequence[Item]) -> list[tuple[Item, float]]:
        """`[(candidate, score), ...]`, best first: a permutation of `candidates` (ties keep their given order).

        Raises `RankRequestError` for an item that is empty, null or outside the catalogue (free text is
        `{"title": "..."}`), see `check_request`.

        Example:
        ```python
        >>> ranker.rank(["Heat (1995)"], ["Babe (1995)", "Casino (1995)"])  # doctest: +SKIP
        [('Casino (1995)', -7.9), ('Babe (1995)', -12.3)]
        ```
        """
        return self._ranked(candidates, self.scores(history, candidates))

    def recommend(
        self,
        history: Sequence[Item],
        retriever: str | Callable[[list[str], list[str]], Sequence[float]] = "popular",
        top_m: int = 20,
        fusion_weight: float = 0.0,
    ) -> list[tuple[str, float]]:
        """Two-stage ranking from the whole catalogue: `retriever` scores every catalogue item the history does not
        hold, its `top_m` are reranked by the model (`scores`), optionally fused with the retriever's standardised
        score at `fusion_weight` (`dmpo_trl.two_stage.fused_scores`). `[(item id, score), ...]`, best first.

        `retriever`: `"popular"` (the interaction counts `ranker.json` saves with a popularity prior), or a callable
        `(history item ids, candidate item ids) -> one score per candidate`, e.g. a SASRec of your own.

        Example:
        ```python
        >>> ranker.recommend(["Heat (1995)", "Casino (1995)"], retriever="popular", top_m=20)[:2]  # doctest: +SKIP
        [('100', -6.1), ('50', -6.8)]
        ```
        """
        self._check_retriever(retriever, top_m)
        seen = {self.item(i) for i in history if not isinstance(i, Mapping)}
        items = [item for item in self.titles if item not in seen]
        if retriever == "popular":
            retrieved = [float(self.popularity.get(item, 0)) for item in items]
        else:
            retrieved = [float(v) for v in retriever([self.item(i) for i in history], items)]
            if len(retrieved) != len(items):
                raise ValueError(f"the retriever returned {len(retrieved)} scores for {len(items)} items")
        order = best_first(retrieved, "recommend")[:top_m]
        top, top_scores = [items[k] for k in order], [retrieved[k] for k in order]
        scores = fused_scores(self.scores(history, top), top_scores, fusion_weight)
        return self._ranked(top, [float(v) for v in scores])

    def _check_retriever(self, retriever: Any, top_m: int) -> None:
        """`recommend`'s refusals, made before anything is ranked."""
        if top_m < 1:
            raise ValueError(f"top_m must be at least 1, got {top_m}")
        if retriever == "popular":
            if not self.popularity:
                raise ValueError(
                    "retriever='popular' needs the interaction counts ranker.json saves with a popularity prior; "
                    "this run has none: pass a callable that scores the catalogue"
                )
        elif not callable(retriever):
            raise ValueError(f"retriever must be 'popular' or a callable, got {retriever!r}")

    @staticmethod
    def _ranked(candidates: Sequence[Item], scores: Sequence[float]) -> list[tuple[Item, float]]:
        order = sorted(range(len(candidates)), key=lambda k: -scores[k])
        return [(candidates[k], scores[k]) for k in order]

    def rank_batch(
        self,
        requests: Sequence[dict[str, Any]],
        progress: bool = False,
        *,
        retriever: str | Callable[[list[str], list[str]], Sequence[float]] | None = None,
        top_m: int = 20,
        fusion_weight: float = 0.0,
    ) -> list[list[tuple[Item, float]]]:
        """`rank` for many `{"history": [...], "candidates": [...]}` requests; all are checked first, and a bad one
        raises `RankRequestError` naming its index (`request 3: ...`). With a `retriever`, a request without
        `candidates` is ranked two-stage from the whole catalogue: `recommend(history, retriever, top_m,
        fusion_weight)`.

        Example:
        ```python
        >>> ranker.rank_batch([{"history": ["1"], "candidates": ["2", "3"]}])  # doctest: +SKIP
        [[('3', -6.2), ('2', -9.0)]]
        ```
        """
        for index, request in enumerate(requests):
            check_request(request, self.titles, f"request {index}", self._ids_by_title, retriever is None)
        if retriever is not None:
            self._check_retriever(retriever, top_m)
        rank, world = process_rank()  # under torchrun/accelerate each process ranks its share, then all are gathered
        mine = range(rank, len(requests), world)
        ranked = {}
        for index in tqdm(mine, desc="Ranking", unit="request", disable=not progress or rank != 0):
            history, candidates = requests[index]["history"], requests[index].get("candidates")
            if candidates is None:
                ranked[index] = self.recommend(history, retriever, top_m, fusion_weight)
            else:
                ranked[index] = self._ranked(candidates, self.scores(history, candidates, f"request {index}"))
        if world > 1:
            ranked = {index: value for part in gather_objects(ranked) for index, value in part.items()}
        return [ranked[index] for index in range(len(requests))]


# --- request files -------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a UTF-8 file, none read past `MAX_REQUEST_BYTES`: a longer line is refused."""
    with open(path, "rb") as file:
        for number, raw in enumerate(iter(lambda: file.readline(MAX_REQUEST_BYTES + 2), b""), 1):
            line = raw.rstrip(b"\r\n")
            if len(line) > MAX_REQUEST_BYTES:
                raise RankRequestError(
                    f"{path} line {number}: longer than {MAX_REQUEST_BYTES} bytes (MAX_REQUEST_BYTES, 1 MiB); "
                    "a request is one history and its candidates"
                )
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise RankRequestError(
                    f"{path} line {number}: not UTF-8 ({error.reason}, byte {error.start})"
                ) from None
            yield number, text


def read_requests(path: str | Path, titles: Mapping[str, str], need_candidates: bool = True) -> list[dict[str, Any]]:
    """The requests of a JSON-lines file (blank lines skipped), each checked by `check_request` against the catalogue
    `titles` (`need_candidates=False`: a request may leave `candidates` out, to be ranked two-stage);
    a `RankRequestError` names the first bad line and field (`requests.jsonl line 3: ...`), also for a line
    over `MAX_REQUEST_BYTES` (read no further), one that is not JSON, and a request with a field `ranking` (where
    `dmpo-trl rank` writes). A folder is refused with a `ValueError`, a missing file with `FileNotFoundError`.

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "requests.jsonl"
    >>> _ = path.write_text('{"user": "u1", "history": ["1"], "candidates": ["2", {"title": "Babe (1995)"}]}\\n')
    >>> read_requests(path, {"1": "Heat (1995)", "2": "Fargo (1996)"})
    [{'user': 'u1', 'history': ['1'], 'candidates': ['2', {'title': 'Babe (1995)'}]}]
    ```
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a JSON-lines file of requests")
    if not path.exists():
        raise FileNotFoundError(f"no such input file: {path}")
    ids = {title: item for item, title in titles.items()}
    requests = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise RankRequestError(f"{where}: not JSON ({error.msg}, column {error.colno})") from None
        except RecursionError:
            raise RankRequestError(f"{where}: not JSON (nested too deeply)") from None
        check_request(request, titles, where, ids, need_candidates)
        if "ranking" in request:
            raise RankRequestError(f"{where}: `ranking` is the field `dmpo-trl rank` writes; rename it")
        requests.append(request)
    return requests
