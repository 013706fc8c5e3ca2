"""`evaluate_ranking`: a causal LM ranks each user's candidate list, in one of the `MODES`, resumable and split across
the processes of a launch; or, given a retriever, reranks the retriever's top items of the whole catalogue
(`evaluate_two_stage`, scored by `dmpo_trl.evaluation.two_stage`).

Example:
```python
>>> MODES
('likelihood', 'generation', 'auc')
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import InteractionLog, UserExample, resolve_template
from ..data.prompts import uses_candidates
from ..distributed import gather_objects, process_rank, wait_for_everyone
from ..journal import Journal
from ..metrics import pairwise_auc
from ..retrieval import Retrieved, Retriever, make_retriever, retrieve
from ..scoring import score_candidates, score_candidates_batch
from ..settings import EvaluationSettings, PromptSettings
from .baselines import baseline_popularity, with_popularity_prior
from .candidates import RankingPrompt, _pairwise_prompts, build_ranking_prompts
from .generation import _generation_result, generate_answers
from .results import _auc_result, _finish, _rank_result, _settings, check_result_path, progress_path, save_result
from .two_stage import two_stage_result


__all__ = ["MODES", "evaluate_ranking", "evaluate_two_stage"]

MODES = ("likelihood", "generation", "auc")
"""The ways `evaluate_ranking` ranks (`EvaluationSettings.mode`)."""

# the former signature's arguments: its positional ones in order, and the keywords each record takes
_LEGACY_POSITIONAL = (
    "num_candidates",
    "seed",
    "prompt_style",
    "conversational",
    "mode",
    "normalize",
    "batch_size",
    "progress",
)
_LEGACY_EVALUATION = frozenset(field.name for field in dataclasses.fields(EvaluationSettings))
_LEGACY_PROMPT = frozenset(field.name for field in dataclasses.fields(PromptSettings)) - {"max_history"}


def evaluate_ranking(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[UserExample],
    log: InteractionLog,
    *legacy_args: Any,
    settings: EvaluationSettings | None = None,
    prompt: PromptSettings | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
    popularity: Counter | None = None,
    output: str | Path | None = None,
    model_name: str | None = None,
    retriever: str | Retriever | Callable | None = None,
    retrieve_top: int = 20,
    fusion_weight: float = 0.0,
    held_out: Sequence[UserExample] | None = None,
    **legacy_keywords: Any,
) -> dict[str, Any]:
    """Evaluate a causal LM as a ranker of `settings.num_candidates` items per example (modes: `dmpo_trl.evaluation`).

    Args:
        examples: the users to evaluate (e.g. `few_shot_split(...).test`), each with its history and target.
        log: the interaction log the examples come from (titles, sequences for negative sampling).
        settings: the mode, and the candidate lists: `num_candidates`, `seed`, `negative_strategy` (with
            `popularity`) are passed to `candidate_sets`; the same values give the same candidate lists for every
            model, baseline and run. `max_new_tokens`: the answer length in generation mode. `users_per_forward`:
            likelihood mode, models that take the packed layout: score this many users' candidates in one forward
            (one packed row each); see `benchmarks/ranking_throughput.py` for what it gains. Default
            `EvaluationSettings()`.
        prompt: the prompt and the scoring, as in `build_preference_dataset` and `Ranker` (`max_history` is not used:
            the examples carry their histories). `normalize` ranks by mean log-probability per token instead of the
            sum; `end_of_turn` scores the EOS / end-of-turn tokens after the title, as training does
            (`tokenize_for_scoring`); `batch_size` is sequences per forward pass (likelihood, auc) or prompts per
            `generate` call (generation); `popularity_prior` (likelihood mode) ranks by the log-likelihood plus
            `popularity_prior * log(1 + count)` (`with_popularity_prior`), the counts from `popularity` or else
            `baseline_popularity(log, examples)`, which leaves out the evaluated targets; 0 ranks by the model alone;
            the per-user scores are the sums. Without `prompt`, the prompt style is the best measured ("history" for
            likelihood and AUC, "candidates" for generation) and the prompt is conversational when the tokenizer has
            a chat template; use the form the model was trained with.
        candidates: one list of item ids per example (the target among them) to rank instead of drawn lists, e.g.
            a training run's `split.json` lists.
        output: also write the result as JSON there (atomically). Each user's result is appended to
            `progress_path(output)` as it finishes, so a rerun with the same output and settings continues where a
            killed run stopped (and gives the same metrics); the journal goes once the result is written.
        model_name: the model's name in the result's settings (default: its `config._name_or_path`).
        retriever: two-stage ranking instead of candidate lists (likelihood mode): a name of
            `dmpo_trl.retrieval.RETRIEVERS`, a `Retriever`, or a callable `(example, items) -> scores`, as
            `make_retriever` takes. It proposes each example's top `retrieve_top` unseen items of the whole catalogue,
            fitted on the log without the targets of `held_out` (default `examples`); the model reranks them, its
            scores fused with the retriever's at `fusion_weight` (`dmpo_trl.evaluation.two_stage.fused_scores`).
            The result is `evaluate_two_stage`'s: full-catalogue metrics under `metrics["full_catalogue"]`, the
            retriever alone's under `retriever["full_catalogue"]`; `output` is written, not journalled.
        legacy_args, legacy_keywords: the former keyword form, still accepted: any field of `EvaluationSettings` or
            of `PromptSettings` but `max_history` as a keyword (`num_candidates=20, prompt_style="history", ...`);
            `num_candidates, seed, prompt_style, conversational, mode, normalize, batch_size, progress` positionally.
            They replace the fields of `settings` / `prompt`; `prompt_style=None` and `conversational=None` choose as
            without `prompt`.

    Under an accelerate/torchrun launch the users are split across the processes and their results gathered: every
    process returns the whole result, which equals a single process's.

    Returns `{"metrics": {...}, "settings": {...}, "users": [...], "per_user": [...], "wall_time_s": ...}` (`users`:
    the ranked user ids, in order). Likelihood mode:
    hit_ratio@1/@5/@10, ndcg@5/@10, mrr, with `*_ci95` bootstrap intervals for hit_ratio@1 and ndcg@5; per user
    the candidates, the target's index and rank, and the scores. Generation mode: hit_ratio@1, valid_ratio (and
    per user the answer and the candidates it names). AUC mode: auc (and per user the target-vs-negative wins).

    Example:
    ```python
    >>> result = evaluate_ranking(model, tokenizer, test, log, retriever="sasrec", retrieve_top=20)  # doctest: +SKIP
    >>> two_stage, alone = result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]  # doctest: +SKIP
    >>> two_stage["ndcg@10"], alone["ndcg@10"]  # doctest: +SKIP
    (0.081, 0.074)
    >>> settings = EvaluationSettings(num_candidates=20, seed=0)
    >>> result = evaluate_ranking(model, tokenizer, split.test[:100], log, settings=settings)  # doctest: +SKIP
    >>> round(result["metrics"]["ndcg@5"], 3)  # zero-shot SmolLM2-135M-Instruct on MovieLens-100K  # doctest: +SKIP
    0.176
    >>> evaluate_ranking(model, tokenizer, split.test[:100], log, num_candidates=20, seed=0)  # doctest: +SKIP
    ```
    """
    settings, prompt = _resolve_settings(tokenizer, settings, prompt, legacy_args, legacy_keywords)
    if retriever is not None:
        if candidates is not None:
            raise ValueError("evaluate_ranking: give `candidates` or a `retriever`, not both")
        check_result_path(output)
        result = evaluate_two_stage(
            model,
            tokenizer,
            examples,
            log,
            retriever,
            retrieve_top,
            fusion_weight,
            held_out=held_out,
            settings=settings,
            prompt=prompt,
            popularity=popularity,
            model_name=model_name,
        )
        if output is not None and process_rank()[0] == 0:
            save_result(result, output)
        return result
    if fusion_weight or held_out is not None:
        raise ValueError("evaluate_ranking: `fusion_weight` and `held_out` rank two-stage; pass a `retriever` too")
    if settings.mode not in MODES:
        raise ValueError(f"Unknown mode {settings.mode!r}; choose from {MODES}")
    prior = prompt.popularity_prior
    if prior < 0 or (prior and settings.mode != "likelihood"):
        raise ValueError(f"popularity_prior={prior}: a weight >= 0, and only for mode='likelihood'")
    check_result_path(output)
    started = time.perf_counter()
    items = build_ranking_prompts(
        log,
        examples,
        settings.num_candidates,
        settings.seed,
        prompt.prompt_style,
        prompt.conversational,
        settings.negative_strategy,
        popularity=popularity,
        candidates=candidates,
        list_style=prompt.list_style,
        answer_prefix=prompt.answer_prefix,
    )
    recorded = _settings(
        log,
        examples,
        model=model_name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
        mode=settings.mode,
        num_candidates=settings.num_candidates,
        seed=settings.seed,
        prompt_style=prompt.prompt_style,
        conversational=prompt.conversational,
        normalize=prompt.normalize,
        end_of_turn=prompt.end_of_turn,
        negative_strategy=settings.negative_strategy,
        list_style=prompt.list_style,
        batch_size=prompt.batch_size,
        **({"popularity_prior": prior} if prior else {}),
        **({"max_new_tokens": settings.max_new_tokens} if settings.mode == "generation" else {}),
    )
    rank, world = process_rank()
    mine = list(range(rank, len(items), world))  # this process's share of the users
    journal = None
    if output is not None:  # the journal also holds which targets: the same users at other targets start over
        journal = Journal(progress_path(output, rank, world), {**recorded, "targets": _targets_digest(examples)})
    bar = tqdm(total=len(mine), desc=f"Evaluating ({settings.mode})", disable=not settings.progress or rank != 0)
    done = dict(journal.done) if journal is not None else {}
    bar.update(sum(index in done for index in mine))

    def finished(index: int, value) -> None:
        done[index] = value
        if journal is not None:
            journal.append(index, value)
        bar.update()

    todo = [index for index in mine if index not in done]
    _rank_users(model, tokenizer, log, items, todo, finished, settings, prompt)
    bar.close()
    if world > 1:
        done = {index: value for part in gather_objects(done) for index, value in part.items()}
    values = [done[index] for index in range(len(items))]
    if settings.mode == "likelihood":
        if prior:
            counts = baseline_popularity(log, examples) if popularity is None else popularity
            values = [with_popularity_prior(v, i.candidates, counts, prior) for v, i in zip(values, items)]
        result = _rank_result(items, values, settings.seed)
    elif settings.mode == "generation":
        result = _generation_result(items, values, log, settings.seed)
    else:
        result = _auc_result(items, values, settings.seed)
    result = _finish(result, recorded, started, output if rank == 0 else None, model)
    if journal is not None:
        wait_for_everyone()  # the results file is written before any journal goes
        journal.remove()
    return result


def evaluate_two_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[UserExample],
    log: InteractionLog,
    retriever: str | Retriever | Callable = "sasrec",
    top_m: int = 20,
    fusion_weight: float = 0.0,
    *,
    held_out: Sequence[UserExample] | None = None,
    settings: EvaluationSettings | None = None,
    prompt: PromptSettings | None = None,
    k: int = 10,
    retrieved: Sequence[Retrieved] | None = None,
    popularity: Counter | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Retrieve each user's top `top_m` unseen items (`retriever` fitted on the log without the targets of
    `held_out`, default `examples`), rank the lists that hold the target with the model (likelihood mode), and
    return the two-stage result (`two_stage_result`) with the LLM's own result under `"llm"`. `retrieved` reuses a
    retrieval already made (e.g. shared by several models). `popularity` and `model_name` go to `evaluate_ranking`.

    Example:
    ```python
    >>> result = evaluate_two_stage(model, tokenizer, split.test, log, retriever="sasrec", top_m=20)  # doctest: +SKIP
    >>> two_stage, alone = result["metrics"]["full_catalogue"], result["retriever"]["full_catalogue"]  # doctest: +SKIP
    >>> two_stage["ndcg@10"], alone["ndcg@10"]  # doctest: +SKIP
    (0.081, 0.074)
    ```
    """
    settings = settings or EvaluationSettings()
    if settings.mode != "likelihood":
        raise ValueError(f"two-stage ranking reranks by likelihood; got mode {settings.mode!r}")
    if retrieved is None:
        fitted = make_retriever(retriever, seed=settings.seed).fit(log, held_out or examples)
        retrieved = retrieve(fitted, log, examples, top_m, seed=settings.seed, fit=False)
    hits = [item for item in retrieved if item.hit]
    llm = {"per_user": []}
    if hits:
        llm = evaluate_ranking(
            model,
            tokenizer,
            [item.example for item in hits],
            log,
            settings=settings,
            prompt=prompt,
            candidates=[item.items for item in hits],
            popularity=popularity,
            model_name=model_name,
        )
    result = two_stage_result(retrieved, llm, fusion_weight, k, settings.seed)
    name = retriever if isinstance(retriever, str) else getattr(retriever, "name", "custom")
    result["retriever"].update({"name": name, "top_m": top_m, "num_hits": len(hits)})
    result["llm"] = llm
    return result


def _rank_users(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    log: InteractionLog,
    items: Sequence[RankingPrompt],
    todo: list[int],
    finished: Callable[[int, Any], None],
    settings: EvaluationSettings,
    prompt: PromptSettings,
) -> None:
    """Score (or answer) the users `todo` indexes in `items`, handing each one's value to `finished` as it is done:
    the candidates' scores (likelihood), the answer (generation), the target-vs-negative wins (auc)."""
    batch_size = prompt.batch_size
    score: Callable = lambda p, c: score_candidates(  # noqa: E731
        model, tokenizer, p, c, prompt.normalize, prompt.end_of_turn, batch_size
    ).tolist()
    if settings.mode == "generation":
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            answers = generate_answers(model, tokenizer, [items[i].prompt for i in chunk], settings.max_new_tokens)
            for index, answer in zip(chunk, answers):
                finished(index, answer)
        return
    with_candidates = uses_candidates(resolve_template(prompt.prompt_style))
    if settings.mode == "likelihood" and settings.users_per_forward > 1:
        for start in range(0, len(todo), settings.users_per_forward):
            chunk = todo[start : start + settings.users_per_forward]
            requests = [(items[i].prompt, items[i].completions) for i in chunk]
            scored = score_candidates_batch(
                model, tokenizer, requests, prompt.normalize, prompt.end_of_turn, batch_size
            )
            for index, scores in zip(chunk, scored):
                finished(index, scores.tolist())
        return
    for index in todo:
        item = items[index]
        if settings.mode == "likelihood":
            finished(index, score(item.prompt, item.completions))
        elif with_candidates:  # auc: one two-candidate prompt per negative
            wins = []
            for shown, completions, target_index in _pairwise_prompts(log, item, settings.seed, prompt):
                scores = score(shown, completions)
                wins.append(pairwise_auc(scores[target_index], [scores[1 - target_index]]))
            finished(index, wins)
        else:  # auc, the prompt does not show candidates: one scoring of all candidates gives every pair
            scores = score(item.prompt, item.completions)
            finished(index, [pairwise_auc(scores[item.target_index], [scores[k]]) for k in item.negatives])


def _targets_digest(examples: Sequence[UserExample]) -> str:
    """A short digest of each example's user, target and position (`extra["position"]`), in order."""
    keys = [[e.user, e.target, e.extra.get("position")] for e in examples]
    return hashlib.sha256(json.dumps(keys, default=str).encode()).hexdigest()[:16]


def _resolve_settings(
    tokenizer: PreTrainedTokenizerBase,
    settings: EvaluationSettings | None,
    prompt: PromptSettings | None,
    args: tuple[Any, ...],
    keywords: dict[str, Any],
) -> tuple[EvaluationSettings, PromptSettings]:
    """The two records `evaluate_ranking` ranks by: `settings` and `prompt` (or their defaults) with the legacy
    positional and keyword arguments put in, and the prompt style and conversational form chosen where unset."""
    if len(args) > len(_LEGACY_POSITIONAL):
        raise TypeError(f"evaluate_ranking() takes at most {4 + len(_LEGACY_POSITIONAL)} positional arguments")
    given = dict(zip(_LEGACY_POSITIONAL, args))
    for name in keywords:
        if name in given:
            raise TypeError(f"evaluate_ranking() got multiple values for argument {name!r}")
        if name not in _LEGACY_PROMPT | _LEGACY_EVALUATION:
            raise TypeError(f"evaluate_ranking() got an unexpected keyword argument {name!r}")
    given.update(keywords)
    settings = dataclasses.replace(
        settings or EvaluationSettings(), **{k: v for k, v in given.items() if k in _LEGACY_EVALUATION}
    )
    style = given.pop("prompt_style", None if prompt is None else prompt.prompt_style)
    conversational = given.pop("conversational", None if prompt is None else prompt.conversational)
    if style is None:  # the best measured: history for likelihood ranking, the candidate list for generation
        style = "candidates" if settings.mode == "generation" else "history"
    if conversational is None:
        conversational = getattr(tokenizer, "chat_template", None) is not None
    prompt = dataclasses.replace(
        prompt or PromptSettings(),
        prompt_style=style,
        conversational=conversational,
        **{k: v for k, v in given.items() if k in _LEGACY_PROMPT},
    )
    return settings, prompt
