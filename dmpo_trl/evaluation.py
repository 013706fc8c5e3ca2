"""Ranking evaluation of a causal LM recommender (and of simple baselines) on fixed candidate lists.

Every user gets `num_candidates` items: the target plus negatives from `dmpo_trl.data.candidate_sets` with the given
seed, so every model and baseline is scored on identical lists, which are also the lists the training prompts
show. The prompt and the candidate completions are rendered exactly as in `build_preference_dataset` rows.

Modes:
- "likelihood": score each candidate title by its log-likelihood after the prompt (`dmpo_trl.scoring`), rank them;
  reports hit_ratio@1, hit_ratio@5, ndcg@5, mrr.
- "generation": greedy-decode an answer and find which candidate titles it names; reports hit_ratio@1 (exactly one
  candidate named and it is the target, as S-DPO counts it) and valid_ratio (exactly one candidate named).
- "auc": the DMPO paper's pairwise protocol: for each negative, a prompt offering only the target and that negative
  (in a seeded order); auc is the fraction of negatives the target outscores (ties count one half), averaged over
  users.

Baselines, on the same candidates: "random" (seeded random scores) and "popular" (interaction counts; see
`baseline_popularity` for which interactions count). `popularity_prior=w` ranks by the model's log-likelihood plus
`w * log(1 + count)` (`with_popularity_prior`), the model and the popular baseline in one score.

Example:
```python
>>> from dmpo_trl.data import few_shot_split, load_movielens
>>> from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking
>>> log = load_movielens("movielens-100k")  # doctest: +SKIP
>>> test = few_shot_split(log, num_test_users=500, seed=0).test  # doctest: +SKIP
>>> evaluate_baseline("popular", test, log, num_candidates=20, seed=0)["metrics"]["hit_ratio@1"]  # doctest: +SKIP
0.238
>>> result = evaluate_ranking(model, tokenizer, test, log, output="results.json")  # doctest: +SKIP
```
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import __version__
from ._trl_compat import tokenize
from .classic import CLASSIC_BASELINES
from .data import ANSWER_PREFIX, InteractionLog, UserExample, candidate_sets, render_prompt, resolve_template
from .data.prompts import prompt_and_completions, uses_candidates
from .distributed import process_rank, wait_for_everyone
from .journal import Journal, atomic_write_text
from .metrics import bootstrap_interval, hit_ratio, hits_at_k, mrr, ndcg, ndcg_at_k, pairwise_auc, rank_of_target
from .metrics import tie_seed as metrics_tie_seed
from .padding import pad_sequences, padding_id
from .provenance import provenance
from .scoring import (
    Completion,
    Prompt,
    eval_mode,
    score_candidates,
    score_candidates_batch,
    score_completions,
    tokenize_for_scoring,
)


__all__ = [
    "BASELINES",
    "MODES",
    "RankingPrompt",
    "baseline_popularity",
    "build_ranking_prompts",
    "check_result_path",
    "evaluate_baseline",
    "evaluate_ranking",
    "explain_pick",
    "format_table",
    "generate_answers",
    "given_candidate_sets",
    "named_candidates",
    "ranking_metrics",
    "save_result",
    "score_candidates",
    "score_completions",
    "tie_seed",
    "tokenize_for_scoring",
    "with_popularity_prior",
]

MODES = ("likelihood", "generation", "auc")
BASELINES = ("random", "popular", *CLASSIC_BASELINES)  # = `recipe_cli.EVALUATION_BASELINES`


@dataclass
class RankingPrompt:
    """One user's evaluation item: the rendered prompt, one completion per candidate, and where the target is."""

    example: UserExample
    candidates: list[str]  # item ids, in the order the prompt lists them
    target_index: int
    prompt: Prompt
    completions: list[Completion]  # same order as `candidates`

    @property
    def negatives(self) -> list[int]:
        return [k for k in range(len(self.candidates)) if k != self.target_index]


def build_ranking_prompts(
    log: InteractionLog,
    examples: Sequence[UserExample],
    num_candidates: int = 20,
    seed: int = 0,
    prompt_style: str | None = None,
    conversational: bool = False,
    negative_strategy: str = "uniform",
    *,
    list_style: str = "numbered",
    answer_prefix: str = ANSWER_PREFIX,
    popularity: Counter | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
) -> list[RankingPrompt]:
    """The evaluation prompts: for each example, `candidate_sets(...)` candidates and the prompt listing them.

    Prompts and completions are rendered as `build_preference_dataset` renders them with the same arguments (plain
    text: template + "\\nAnswer:" and " <title>"; conversational: a user message and assistant messages).
    `candidates` (one list of item ids per example, the target among them) replaces the drawn lists, e.g. the lists
    a training run saved in its `split.json`.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
    >>> [item] = build_ranking_prompts(log, [UserExample("u", ("a", "b"), "c")], num_candidates=4)
    >>> len(item.completions), item.completions[item.target_index], item.prompt.endswith("Answer:")
    (4, ' Movie C', True)
    ```
    """
    template = resolve_template(prompt_style)
    if candidates is None:
        sets = candidate_sets(log, examples, num_candidates, seed, negative_strategy, popularity)
    else:
        sets = given_candidate_sets(log, examples, candidates)
    with_candidates = uses_candidates(template)
    items = []
    for example, (candidates, target_index) in zip(examples, sets):
        titles = [log.titles[i] for i in candidates]
        history = [log.titles[i] for i in example.history]
        text = render_prompt(template, history, titles if with_candidates else (), list_style)
        prompt, completions = prompt_and_completions(text, titles, conversational, answer_prefix)
        items.append(RankingPrompt(example, candidates, target_index, prompt, completions))
    return items


def given_candidate_sets(
    log: InteractionLog, examples: Sequence[UserExample], candidates: Sequence[Sequence[str]]
) -> list[tuple[list[str], int]]:
    """`candidate_sets`' form for lists given per example; `ValueError` naming the user when a list does not fit.

    Example:
    ```python
    >>> log = InteractionLog({"u": ["a", "b"]}, {i: i.upper() for i in "abcd"})
    >>> given_candidate_sets(log, [UserExample("u", ("a",), "b")], [["c", "b", "d"]])
    [(['c', 'b', 'd'], 1)]
    ```
    """
    if len(candidates) != len(examples):
        raise ValueError(f"{len(candidates)} candidate lists for {len(examples)} users")
    sets = []
    for example, items in zip(examples, candidates):
        items = [str(i) for i in items]
        unknown = [i for i in items if i not in log.titles]
        if example.target not in items or unknown or len(set(items)) != len(items):
            problem = f"items not in the log: {unknown}" if unknown else "no target or repeated items"
            raise ValueError(
                f"user {example.user!r}: candidate list {items} does not fit target {example.target!r} ({problem})"
            )
        sets.append((items, items.index(example.target)))
    return sets


def _pairwise_prompts(
    log: InteractionLog, item: RankingPrompt, seed: int, prompt_style: str, conversational: bool, **render
) -> list[tuple[Prompt, list[Completion], int]]:
    """For each negative: (prompt offering target and negative, their completions, index of the target)."""
    template = resolve_template(prompt_style)
    history = [log.titles[i] for i in item.example.history]
    target = item.candidates[item.target_index]
    rng = random.Random(f"dmpo-trl-pairwise|{seed}|{item.example.user}|{item.example.target}")
    out = []
    for k in item.negatives:
        pair = [target, item.candidates[k]]
        rng.shuffle(pair)
        titles = [log.titles[i] for i in pair]
        text = render_prompt(template, history, titles, render.get("list_style", "numbered"))
        answer_prefix = render.get("answer_prefix", ANSWER_PREFIX)
        prompt, completions = prompt_and_completions(text, titles, conversational, answer_prefix)
        out.append((prompt, completions, pair.index(target)))
    return out


def baseline_popularity(log: InteractionLog, examples: Sequence[UserExample]) -> Counter:
    """Item interaction counts for the "popular" baseline, with nothing from the evaluated targets.

    Counts every interaction in `log` except, for each evaluated example, its target and everything after it in
    that user's sequence (`example.extra["position"]` when set, else the target's last occurrence). So test targets
    never count, while the test users' histories, which the model sees in its prompt, do.

    Example:
    ```python
    >>> log = InteractionLog({"u1": ["a", "b"], "u2": ["a", "c"]}, {i: i for i in "abc"})
    >>> sorted(baseline_popularity(log, [UserExample("u1", ("a",), "b")]).items())
    [('a', 2), ('c', 1)]
    ```
    """
    cut = {}
    for example in examples:
        sequence = log.sequences[example.user]
        position = example.extra.get("position")
        if position is None:
            position = len(sequence) - 1 - sequence[::-1].index(example.target)
        cut[example.user] = min(cut.get(example.user, len(sequence)), position)
    return Counter(item for user, seq in log.sequences.items() for item in seq[: cut.get(user, len(seq))])


def with_popularity_prior(
    scores: Sequence[float], candidates: Sequence[str], popularity: Mapping[str, int], weight: float
) -> list[float]:
    """Each candidate's score plus `weight * log(1 + count)`: the model's likelihood times `(1 + count) ** weight`.

    `popularity` counts interactions per item (`baseline_popularity` leaves out the evaluated targets); an item it
    lacks counts 0. With `weight` 0 the scores are unchanged; a large weight ranks by popularity, the model breaking
    ties.

    Example:
    ```python
    >>> [round(s, 3) for s in with_popularity_prior([-5.0, -4.0], ["a", "b"], Counter(a=9), 1.0)]
    [-2.697, -4.0]
    ```
    """
    return [float(s) + weight * math.log1p(popularity.get(c, 0)) for s, c in zip(scores, candidates, strict=True)]


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(?P<name>.+), (?P<article>the|a|an|les|la|le|il|el|das|der|die)$", re.IGNORECASE)


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _title_forms(title: str) -> list[str]:
    """Normalized ways an answer may name a title: as written, without the year, with a trailing article moved
    to the front ("Godfather, The (1972)" -> "The Godfather")."""
    bare = _YEAR.sub("", title)
    forms = [title, bare]
    match = _ARTICLE.match(bare)
    if match:
        forms.append(f"{match['article']} {match['name']}")
    return [f for f in dict.fromkeys(_normalize(f) for f in forms) if f]


def named_candidates(output: str, titles: Sequence[str]) -> list[int]:
    """Indices of the candidate titles that a generated answer names, in order of first mention.

    Matching ignores case, punctuation and the year, on word boundaries; a title also accepts its leading-article
    form ("The Godfather" for "Godfather, The (1972)"). A title found only inside a longer named title ("Heat"
    inside "Heat Wave") does not count.

    Example:
    ```python
    >>> titles = ["Heat (1995)", "Godfather, The (1972)", "Heat Wave (1990)"]
    >>> named_candidates("I think: The Godfather.", titles)
    [1]
    >>> named_candidates("Heat Wave (1990)", titles)
    [2]
    >>> named_candidates("heat, or the godfather", titles)
    [0, 1]
    ```
    """
    text = f" {_normalize(output)} "
    spans: dict[int, list[tuple[int, int]]] = {}
    for index, title in enumerate(titles):
        for form in _title_forms(title):
            needle = f" {form} "
            start = text.find(needle)
            while start != -1:
                spans.setdefault(index, []).append((start + 1, start + len(needle) - 1))
                start = text.find(needle, start + 1)
    all_spans = [(s, e, i) for i, found in spans.items() for s, e in found]

    def inside_other(index: int, span: tuple[int, int]) -> bool:
        s, e = span
        return any(i != index and s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, i in all_spans)

    named = {
        i: min(s for s, e in found if not inside_other(i, (s, e)))
        for i, found in spans.items()
        if any(not inside_other(i, span) for span in found)
    }
    return sorted(named, key=named.__getitem__)


def ranking_metrics(ranks: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """hit_ratio@1/@5/@10, ndcg@5/@10, mrr and 95% bootstrap intervals for hit_ratio@1 and ndcg@5.

    Example:
    ```python
    >>> ranking_metrics([0, 2, 7])["ndcg@5"]
    0.5
    ```
    """
    return {
        "hit_ratio@1": hit_ratio(ranks, 1),
        "hit_ratio@5": hit_ratio(ranks, 5),
        "hit_ratio@10": hit_ratio(ranks, 10),
        "ndcg@5": ndcg(ranks, 5),
        "ndcg@10": ndcg(ranks, 10),
        "mrr": mrr(ranks),
        "hit_ratio@1_ci95": list(bootstrap_interval(hits_at_k(ranks, 1), seed=seed)),
        "ndcg@5_ci95": list(bootstrap_interval(ndcg_at_k(ranks, 5), seed=seed)),
        "num_users": len(ranks),
    }


def tie_seed(seed: int, example: UserExample) -> str:
    """The seed that breaks a tie between `example`'s candidates (`dmpo_trl.metrics.tie_seed`)."""
    return metrics_tie_seed(seed, example.user, example.target)


def _rank_result(items: Sequence[RankingPrompt], all_scores: Sequence[Sequence[float]], seed: int) -> dict:
    per_user, ranks = [], []
    for item, scores in zip(items, all_scores):
        rank = rank_of_target(scores, item.target_index, ties="random", seed=tie_seed(seed, item.example))
        ranks.append(rank)
        per_user.append(
            {
                "user": item.example.user,
                "target": item.example.target,
                "candidates": item.candidates,
                "target_index": item.target_index,
                "rank": rank,
                "scores": [float(s) for s in scores],
            }
        )
    return {"metrics": ranking_metrics(ranks, seed=seed), "per_user": per_user}


def _settings(log: InteractionLog, examples: Sequence[UserExample], **settings) -> dict[str, Any]:
    return {"dataset": log.name, "num_users": len(examples), **settings, "dmpo_trl_version": __version__}


def _finish(result: dict, settings: dict, started: float, output: str | Path | None, model=None) -> dict:
    result = {
        "metrics": result["metrics"],
        "settings": settings,
        "users": [user["user"] for user in result["per_user"]],
        "provenance": provenance(model),
        **{k: v for k, v in result.items() if k != "metrics"},
    }
    result["wall_time_s"] = round(time.perf_counter() - started, 3)
    if output is not None:
        save_result(result, output)
    return result


def save_result(result: dict, path: str | Path) -> Path:
    """Write a result dict as indented JSON, atomically (creating parent folders); returns the path.

    A result without a "provenance" entry gets one (`dmpo_trl.provenance`: versions, commit, the model's origin as
    far as `settings["model"]` names it).

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> save_result({"metrics": {"mrr": 0.5}, "settings": {}}, pathlib.Path(tempfile.mkdtemp()) / "r.json").name
    'r.json'
    ```
    """
    if "provenance" not in result:
        model = (result.get("settings") or {}).get("model")
        named = isinstance(model, str) and not model.startswith("baseline:")
        result = {**result, "provenance": provenance(model if named else None)}
    check_result_path(path)
    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")


def check_result_path(path: str | Path | None) -> None:
    """`ValueError` naming `output` when a results path is a folder (checked before any ranking, not after).

    Example:
    ```python
    >>> try:
    ...     check_result_path(".")
    ... except ValueError as exc:
    ...     print(exc)
    output .: a folder; name the results file to write
    ```
    """
    if path is not None and Path(path).is_dir():
        raise ValueError(f"output {path}: a folder; name the results file to write")


def evaluate_baseline(
    baseline: str,
    examples: Sequence[UserExample],
    log: InteractionLog,
    num_candidates: int = 20,
    seed: int = 0,
    negative_strategy: str = "uniform",
    popularity: Counter | None = None,
    output: str | Path | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Rank the same candidates as `evaluate_ranking` with a baseline: "random", "popular", "sasrec", "gru4rec", "bpr".

    "random" draws one uniform score per candidate, seeded by (seed, user, target). "popular" scores a candidate
    by its count in `popularity` (default: `baseline_popularity(log, examples)`, which leaves out the evaluated
    targets). Ties are broken at random (seeded), so equal counts do not favour the target. `popularity` is also what
    `candidate_sets` draws popularity-matched negatives from, as in `evaluate_ranking`: to rank a model's candidates,
    pass both the same `popularity` (or neither). "sasrec", "gru4rec" and "bpr" train Cornac's model on the log
    minus the evaluated targets, with `dmpo_trl.classic.DEFAULT_SETTINGS` (needs the `classic` extra).

    `candidates` (one list of item ids per example) replaces the drawn lists, as in `evaluate_ranking`.

    Returns `{"metrics": {...}, "settings": {...}, "users": [...], "per_user": [...], "wall_time_s": ...}`.

    Example:
    ```python
    >>> log = InteractionLog({f"u{k}": ["a", "b", "c"] for k in range(3)}, {i: i for i in "abcdefgh"})
    >>> result = evaluate_baseline("popular", [UserExample("u0", ("a", "b"), "c")], log, num_candidates=4)
    >>> result["metrics"]["hit_ratio@1"]  # "c" was chosen by the two other users
    1.0
    ```
    """
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose from {BASELINES}")
    check_result_path(output)
    started = time.perf_counter()
    if candidates is None:
        sets = candidate_sets(log, examples, num_candidates, seed, negative_strategy, popularity)
    else:
        sets = given_candidate_sets(log, examples, candidates)
    items = [RankingPrompt(e, c, t, "", []) for e, (c, t) in zip(examples, sets)]
    if baseline == "random":
        all_scores = []
        for item in items:
            rng = random.Random(f"dmpo-trl-random|{seed}|{item.example.user}|{item.example.target}")
            all_scores.append([rng.random() for _ in item.candidates])
    elif baseline != "popular":
        from .classic import score_examples

        all_scores = score_examples(baseline, log, examples, [item.candidates for item in items], seed=seed)
    else:
        counts = baseline_popularity(log, examples) if popularity is None else popularity
        all_scores = [[float(counts.get(i, 0)) for i in item.candidates] for item in items]
    settings = _settings(
        log,
        examples,
        model=f"baseline:{baseline}",
        mode="likelihood",
        num_candidates=num_candidates,
        seed=seed,
        negative_strategy=negative_strategy,
        popularity=(
            "log minus evaluated targets and later items" if baseline == "popular" and popularity is None else None
        ),
    )
    return _finish(_rank_result(items, all_scores, seed), settings, started, output)


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
) -> list[str]:
    """Greedy answers for a batch of prompts (strings, or message lists through the chat template), left-padded.

    Example:
    ```python
    >>> items = build_ranking_prompts(log, split.test, prompt_style="history")  # doctest: +SKIP
    >>> generate_answers(model, tokenizer, [items[0].prompt], max_new_tokens=16)  # doctest: +SKIP
    [' Toy Story (1995)']
    ```
    """
    encoded = [
        tokenize(tokenizer, p, add_generation_prompt=True)["input_ids"]
        if isinstance(p, list)
        else tokenize(tokenizer, p)["input_ids"]
        for p in prompts
    ]
    pad_id = padding_id(tokenizer)
    input_ids, attention_mask = pad_sequences(encoded, pad_id, side="left")
    length = input_ids.shape[1]
    device = next(model.parameters()).device
    with eval_mode(model):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)


EXPLAIN_QUESTION = "In one or two sentences, why would this user enjoy {title}, given what they watched?"


def explain_pick(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    example: UserExample,
    log: InteractionLog,
    item: str,
    prompt_style: str = "history",
    candidates: Sequence[str] = (),
    max_new_tokens: int = 60,
) -> str:
    """Ask the model why `item` (its pick for this user) fits the user's history: the paper's case study.

    The conversation is the ranking prompt, the model's pick as its answer, then `EXPLAIN_QUESTION`; the reply is
    decoded greedily. Needs a tokenizer with a chat template.

    Example:
    ```python
    >>> explain_pick(model, tokenizer, split.test[0], log, item="50")  # doctest: +SKIP
    'The user watched several sci-fi adventures, and Star Wars is the classic of the genre.'
    ```
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("explain_pick needs a chat model: the tokenizer has no chat_template")
    template = resolve_template(prompt_style)
    history = [log.titles[i] for i in example.history]
    titles = [log.titles[i] for i in candidates] if uses_candidates(template) else ()
    question = render_prompt(template, history, titles)
    title = log.titles[item]
    messages = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": title},
        {"role": "user", "content": EXPLAIN_QUESTION.format(title=title)},
    ]
    return generate_answers(model, tokenizer, [messages], max_new_tokens)[0].strip()


def evaluate_ranking(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[UserExample],
    log: InteractionLog,
    num_candidates: int = 20,
    seed: int = 0,
    prompt_style: str | None = None,
    conversational: bool | None = None,
    mode: str = "likelihood",
    normalize: bool = False,
    batch_size: int = 20,
    progress: bool = True,
    *,
    negative_strategy: str = "uniform",
    end_of_turn: bool = True,
    max_new_tokens: int = 32,
    list_style: str = "numbered",
    answer_prefix: str = ANSWER_PREFIX,
    popularity: Counter | None = None,
    model_name: str | None = None,
    output: str | Path | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
    users_per_forward: int = 1,
    popularity_prior: float = 0.0,
) -> dict[str, Any]:
    """Evaluate a causal LM as a ranker of `num_candidates` items per example (see the module docstring for modes).

    Args:
        examples: the users to evaluate (e.g. `few_shot_split(...).test`), each with its history and target.
        log: the interaction log the examples come from (titles, sequences for negative sampling).
        num_candidates, seed, negative_strategy, popularity: passed to `candidate_sets`; the same values give the
            same candidate lists for every model, baseline and run.
        prompt_style, list_style, answer_prefix: the prompt, as in `build_preference_dataset`; `prompt_style=None`
            is the best measured: "history" for likelihood and AUC, "candidates" for generation.
        conversational: message-list prompts through the chat template; `None` = whether the tokenizer has one.
            Use the form the model was trained with.
        normalize: rank by mean log-probability per token instead of the sum.
        end_of_turn: score the EOS / end-of-turn tokens after the title, as training does (see
            `tokenize_for_scoring`).
        batch_size: sequences per forward pass (likelihood, auc) or prompts per `generate` call (generation).
        max_new_tokens: answer length in generation mode.
        popularity_prior: likelihood mode: rank by the log-likelihood plus `popularity_prior * log(1 + count)`
            (`with_popularity_prior`), the counts from `popularity` or else `baseline_popularity(log, examples)`,
            which leaves out the evaluated targets. 0 ranks by the model alone; the per-user scores are the sums.
        users_per_forward: likelihood mode, models that take the packed layout: score this many users' candidates
            in one forward (one packed row each); see `benchmarks/ranking_throughput.py` for what it gains.
        output: also write the result as JSON there (atomically). Each user's result is appended to
            `progress_path(output)` as it finishes, so a rerun with the same output and settings continues where a
            killed run stopped (and gives the same metrics); the journal goes once the result is written.

    Under an accelerate/torchrun launch the users are split across the processes and their results gathered: every
    process returns the whole result, which equals a single process's.
        candidates: one list of item ids per example (the target among them) to rank instead of drawn lists, e.g.
            a training run's `split.json` lists.

    Returns `{"metrics": {...}, "settings": {...}, "users": [...], "per_user": [...], "wall_time_s": ...}` (`users`:
    the ranked user ids, in order). Likelihood mode:
    hit_ratio@1/@5/@10, ndcg@5/@10, mrr, with `*_ci95` bootstrap intervals for hit_ratio@1 and ndcg@5; per user
    the candidates, the target's index and rank, and the scores. Generation mode: hit_ratio@1, valid_ratio (and
    per user the answer and the candidates it names). AUC mode: auc (and per user the target-vs-negative wins).

    Example:
    ```python
    >>> result = evaluate_ranking(model, tokenizer, split.test[:100], log, num_candidates=20, seed=0)  # doctest: +SKIP
    >>> round(result["metrics"]["ndcg@5"], 3)  # zero-shot SmolLM2-135M-Instruct on MovieLens-100K  # doctest: +SKIP
    0.176
    ```
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose from {MODES}")
    if popularity_prior < 0 or (popularity_prior and mode != "likelihood"):
        raise ValueError(f"popularity_prior={popularity_prior}: a weight >= 0, and only for mode='likelihood'")
    check_result_path(output)
    if prompt_style is None:  # the best measured: history for likelihood ranking, the candidate list for generation
        prompt_style = "candidates" if mode == "generation" else "history"
    started = time.perf_counter()
    if conversational is None:
        conversational = getattr(tokenizer, "chat_template", None) is not None
    render = {"list_style": list_style, "answer_prefix": answer_prefix}
    items = build_ranking_prompts(
        log,
        examples,
        num_candidates,
        seed,
        prompt_style,
        conversational,
        negative_strategy,
        popularity=popularity,
        candidates=candidates,
        **render,
    )
    settings = _settings(
        log,
        examples,
        model=model_name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
        mode=mode,
        num_candidates=num_candidates,
        seed=seed,
        prompt_style=prompt_style,
        conversational=conversational,
        normalize=normalize,
        end_of_turn=end_of_turn,
        negative_strategy=negative_strategy,
        list_style=list_style,
        batch_size=batch_size,
        **({"popularity_prior": popularity_prior} if popularity_prior else {}),
        **({"max_new_tokens": max_new_tokens} if mode == "generation" else {}),
    )
    rank, world = process_rank()
    mine = list(range(rank, len(items), world))  # this process's share of the users
    journal = Journal(progress_path(output, rank, world), settings) if output is not None else None
    bar = tqdm(total=len(mine), desc=f"Evaluating ({mode})", disable=not progress or rank != 0)
    done = dict(journal.done) if journal is not None else {}
    bar.update(sum(index in done for index in mine))
    todo = [index for index in mine if index not in done]

    def finished(index: int, value) -> None:
        done[index] = value
        if journal is not None:
            journal.append(index, value)
        bar.update()

    score: Callable = lambda p, c: score_candidates(  # noqa: E731
        model, tokenizer, p, c, normalize, end_of_turn, batch_size
    ).tolist()
    if mode == "generation":
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            answers = generate_answers(model, tokenizer, [items[i].prompt for i in chunk], max_new_tokens)
            for index, answer in zip(chunk, answers):
                finished(index, answer)
    else:
        with_candidates = uses_candidates(resolve_template(prompt_style))
        if mode == "likelihood" and users_per_forward > 1:
            for start in range(0, len(todo), users_per_forward):
                chunk = todo[start : start + users_per_forward]
                requests = [(items[i].prompt, items[i].completions) for i in chunk]
                scored = score_candidates_batch(model, tokenizer, requests, normalize, end_of_turn, batch_size)
                for index, scores in zip(chunk, scored):
                    finished(index, scores.tolist())
            todo = []
        for index in todo:
            item = items[index]
            if mode == "likelihood":
                finished(index, score(item.prompt, item.completions))
            elif with_candidates:  # auc: one two-candidate prompt per negative
                wins = []
                for prompt, completions, target_index in _pairwise_prompts(
                    log, item, seed, prompt_style, conversational, **render
                ):
                    scores = score(prompt, completions)
                    wins.append(pairwise_auc(scores[target_index], [scores[1 - target_index]]))
                finished(index, wins)
            else:  # auc, the prompt does not show candidates: one scoring of all candidates gives every pair
                scores = score(item.prompt, item.completions)
                finished(index, [pairwise_auc(scores[item.target_index], [scores[k]]) for k in item.negatives])
    bar.close()
    if world > 1:
        from accelerate.utils import gather_object

        done = {index: value for part in gather_object([done]) for index, value in part.items()}
    values = [done[index] for index in range(len(items))]
    if mode == "likelihood":
        if popularity_prior:
            counts = baseline_popularity(log, examples) if popularity is None else popularity
            values = [with_popularity_prior(v, i.candidates, counts, popularity_prior) for v, i in zip(values, items)]
        result = _rank_result(items, values, seed)
    elif mode == "generation":
        result = _generation_result(items, values, log, seed)
    else:
        result = _auc_result(items, values, seed)
    result = _finish(result, settings, started, output if rank == 0 else None, model)
    if journal is not None:
        wait_for_everyone()  # the results file is written before any journal goes
        journal.remove()
    return result


def progress_path(output: str | Path, rank: int = 0, world: int = 1) -> Path:
    """The journal beside `output` where `evaluate_ranking` appends each user's result as it finishes.

    Example:
    ```python
    >>> progress_path("out/ranking.json").name, progress_path("out/ranking.json", 1, 2).name
    ('ranking.json.progress.jsonl', 'ranking.json.progress-1-of-2.jsonl')
    ```
    """
    output = Path(output)
    part = "" if world == 1 else f"-{rank}-of-{world}"
    return output.with_name(f"{output.name}.progress{part}.jsonl")


def _generation_result(items, answers, log, seed) -> dict:
    per_user, hits, valid = [], [], []
    for item, answer in zip(items, answers):
        named = named_candidates(answer, [log.titles[i] for i in item.candidates])
        valid.append(float(len(named) == 1))
        hits.append(float(named == [item.target_index]))
        per_user.append(
            {
                "user": item.example.user,
                "target": item.example.target,
                "candidates": item.candidates,
                "target_index": item.target_index,
                "answer": answer,
                "named": named,
            }
        )
    metrics = {
        "hit_ratio@1": sum(hits) / len(hits) if hits else float("nan"),
        "valid_ratio": sum(valid) / len(valid) if valid else float("nan"),
        "hit_ratio@1_ci95": list(bootstrap_interval(hits, seed=seed)),
        "num_users": len(items),
    }
    return {"metrics": metrics, "per_user": per_user}


def _auc_result(items, all_wins, seed) -> dict:
    per_user, aucs = [], []
    for item, wins in zip(items, all_wins):
        auc = sum(wins) / len(wins)
        aucs.append(auc)
        per_user.append(
            {
                "user": item.example.user,
                "target": item.example.target,
                "candidates": item.candidates,
                "target_index": item.target_index,
                "auc": auc,
                "wins": wins,
            }
        )
    metrics = {
        "auc": sum(aucs) / len(aucs) if aucs else float("nan"),
        "auc_ci95": list(bootstrap_interval(aucs, seed=seed)),
        "num_users": len(items),
    }
    return {"metrics": metrics, "per_user": per_user}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per named result, one column per scalar metric.

    Example:
    ```python
    >>> print(format_table({"random": {"metrics": {"hit_ratio@1": 0.05, "mrr": 0.18}}}))
    model   hit_ratio@1  mrr
    random  0.0500       0.1800
    ```
    """
    columns: list[str] = []
    for result in results.values():
        for key, value in result["metrics"].items():
            if isinstance(value, float) and key not in columns:
                columns.append(key)
    names = list(results)
    width = max([len("model"), *(len(n) for n in names)])
    cells = [[f"{results[n]['metrics'].get(c, float('nan')):.4f}" for c in columns] for n in names]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(["model".ljust(width), *(c.ljust(w) for c, w in zip(columns, widths))]).rstrip()]
    for name, row in zip(names, cells):
        lines.append("  ".join([name.ljust(width), *(v.ljust(w) for v, w in zip(row, widths))]).rstrip())
    return "\n".join(lines)
