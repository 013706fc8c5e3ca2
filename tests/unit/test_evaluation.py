import json
import math
import random

import pytest
import torch
from tiny_models import build_model

from dmpo_trl.data import InteractionLog, UserExample, build_preference_dataset, candidate_sets, example_at
from dmpo_trl.evaluation import (
    baseline_popularity,
    build_ranking_prompts,
    evaluate_baseline,
    evaluate_ranking,
    format_table,
    generation,
    named_candidates,
)
from dmpo_trl.evaluation.candidates import _pairwise_prompts
from dmpo_trl.scoring import score_candidates, score_completions, tokenize_for_scoring
from dmpo_trl.settings import EvaluationSettings, PromptSettings


def planted_log(num_users: int = 300, pool: int = 40, seed: int = 0) -> InteractionLog:
    """Users 0..99 end with "leak" (an item seen nowhere else); the others end with "hot". Earlier items random."""
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(pool)]
    sequences = {}
    for u in range(num_users):
        sequences[f"u{u}"] = rng.sample(items, 6) + ["leak" if u < 100 else "hot"]
    titles = {i: f"Film {i[1:]}" for i in items} | {"hot": "Hot Film", "leak": "Leaky Film"}
    return InteractionLog(sequences, titles, name="planted")


def last_item_examples(log: InteractionLog, users, max_history: int = 6) -> list[UserExample]:
    return [example_at(log, u, -1, max_history) for u in users]


# --- baselines -------------------------------------------------------------------------------------------------


def test_random_baseline_is_at_chance_over_many_users():
    rng = random.Random(1)
    items = [f"i{k}" for k in range(200)]
    log = InteractionLog({f"u{u}": rng.sample(items, 5) for u in range(3000)}, {i: i for i in items})
    examples = last_item_examples(log, log.sequences, max_history=4)
    metrics = evaluate_baseline("random", examples, log, num_candidates=10, seed=0)["metrics"]
    # HitRatio@1 ~ Binomial(3000, 0.1)/3000: sd 0.0055; HitRatio@5 ~ 0.5: sd 0.009; 4-sigma tolerances
    assert metrics["hit_ratio@1"] == pytest.approx(0.1, abs=0.022)
    assert metrics["hit_ratio@5"] == pytest.approx(0.5, abs=0.037)
    assert metrics["mrr"] == pytest.approx(sum(1 / r for r in range(1, 11)) / 10, abs=0.02)
    low, high = metrics["hit_ratio@1_ci95"]
    assert low < metrics["hit_ratio@1"] < high


def test_popular_baseline_hits_when_target_is_most_popular():
    log = planted_log()
    examples = last_item_examples(log, [f"u{u}" for u in range(100, 150)])  # targets: "hot"
    result = evaluate_baseline("popular", examples, log, num_candidates=10, seed=0)
    assert result["metrics"]["hit_ratio@1"] == 1.0
    assert result["metrics"]["ndcg@5"] == 1.0
    assert all(user["rank"] == 0 for user in result["per_user"])


def test_popular_baseline_does_not_count_test_targets():
    log = planted_log()
    examples = last_item_examples(log, [f"u{u}" for u in range(50)])  # targets: "leak", seen only as test targets
    counts = baseline_popularity(log, examples)
    assert counts["leak"] == 50  # users 50..99 are not evaluated, so their "leak" counts
    only_test = last_item_examples(log, [f"u{u}" for u in range(100)])
    assert baseline_popularity(log, only_test)["leak"] == 0
    assert evaluate_baseline("popular", only_test, log, num_candidates=10)["metrics"]["hit_ratio@1"] == 0.0
    # whole-log counts leak the targets ("leak" then outranks all but "hot"): the test above catches such a leak
    leaky = evaluate_baseline("popular", only_test, log, num_candidates=10, popularity=log.popularity())
    assert leaky["metrics"]["hit_ratio@1"] > 0.5


def test_baseline_popularity_cuts_at_position():
    log = InteractionLog({"u": ["a", "b", "c", "d"], "v": ["c"]}, {i: i for i in "abcd"})
    counts = baseline_popularity(log, [example_at(log, "u", 1)])  # target "b": drop "b", "c", "d" of u
    assert dict(counts) == {"a": 1, "c": 1}


def test_baselines_use_the_shared_candidate_lists():
    log = planted_log()
    examples = last_item_examples(log, [f"u{u}" for u in range(120, 140)])
    sets = candidate_sets(log, examples, num_candidates=8, seed=3)
    for name in ("random", "popular"):
        per_user = evaluate_baseline(name, examples, log, num_candidates=8, seed=3)["per_user"]
        assert [(u["candidates"], u["target_index"]) for u in per_user] == [(c, t) for c, t in sets]
    again = evaluate_baseline("random", examples, log, num_candidates=8, seed=3)
    first = evaluate_baseline("random", examples, log, num_candidates=8, seed=3)
    assert again["per_user"] == first["per_user"]
    other = evaluate_baseline("random", examples, log, num_candidates=8, seed=4)
    assert other["per_user"] != first["per_user"]
    with pytest.raises(ValueError, match="baseline"):
        evaluate_baseline("oracle", examples, log)


# --- prompts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conversational", [False, True])
def test_ranking_prompts_match_the_training_rows(conversational):
    log = planted_log()
    examples = last_item_examples(log, ["u150", "u151", "u152"])
    items = build_ranking_prompts(log, examples, num_candidates=6, seed=2, conversational=conversational)
    rows = build_preference_dataset(
        log, examples, num_negatives=5, num_candidates=6, seed=2, conversational=conversational
    )
    for item, row in zip(items, rows):
        assert item.prompt == row["prompt"]
        assert item.completions[item.target_index] == row["chosen"]
        others = [c for k, c in enumerate(item.completions) if k != item.target_index]
        assert sorted(map(str, others)) == sorted(map(str, row["rejected"]))


# --- scoring ---------------------------------------------------------------------------------------------------


def direct_log_likelihood(model, full_ids: list[int], num_prompt: int) -> float:
    """Sum of log p(token | prefix) over full_ids[num_prompt:], from one unpadded forward pass."""
    ids = torch.tensor([full_ids])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1)
    token_logps = logps.gather(-1, ids[0, 1:, None])[:, 0]
    return float(token_logps[num_prompt - 1 :].sum())


def test_plain_text_score_equals_direct_forward(tokenizer, tiny_model):
    prompt = "The user watched Toy Story, Heat.\nAnswer:"
    titles = [" Fargo (1996)", " Babe", " Star Wars (1995) and Titanic", " Clueless"]
    sums = score_candidates(tiny_model, tokenizer, prompt, titles, batch_size=3)  # padding within a batch
    means = score_candidates(tiny_model, tokenizer, prompt, titles, normalize=True, batch_size=2)
    prompt_ids = tokenizer(prompt)["input_ids"]
    for title, total, mean in zip(titles, sums, means):
        full = tokenizer(prompt + title + tokenizer.eos_token)["input_ids"]
        assert full[: len(prompt_ids)] == prompt_ids
        expected = direct_log_likelihood(tiny_model, full, len(prompt_ids))
        assert float(total) == pytest.approx(expected, abs=1e-5)
        assert float(mean) == pytest.approx(expected / (len(full) - len(prompt_ids)), abs=1e-5)
    # without the end of turn only the title's own tokens count
    bare = score_candidates(tiny_model, tokenizer, prompt, titles, end_of_turn=False)
    full = tokenizer(prompt + titles[0])["input_ids"]
    assert float(bare[0]) == pytest.approx(direct_log_likelihood(tiny_model, full, len(prompt_ids)), abs=1e-4)


@pytest.mark.parametrize("end_of_turn", [True, False])
def test_conversational_score_equals_direct_forward(tokenizer, tiny_model, end_of_turn):
    prompt = [{"role": "user", "content": "The user watched Heat. Which movie next?"}]
    titles = ["Fargo (1996)", "Jumanji", "Babe (1995) or Casino"]
    completions = [[{"role": "assistant", "content": t}] for t in titles]
    scores = score_candidates(tiny_model, tokenizer, prompt, completions, end_of_turn=end_of_turn, batch_size=2)
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    for completion, score in zip(completions, scores):
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        assert full[: len(prompt_ids)] == prompt_ids
        if not end_of_turn:
            assert tokenizer.decode(full[-1:]) == "<|end|>"  # the tiny template closes a turn with <|end|>
            full = full[:-1]
        assert float(score) == pytest.approx(direct_log_likelihood(tiny_model, full, len(prompt_ids)), abs=1e-4)


def test_score_completions_contract(tokenizer, tiny_model):
    sums, counts = score_completions(tiny_model, tokenizer, [5, 6, 7], [[8, 9], [10], []], batch_size=2)
    assert sums.shape == (3,) and counts.tolist() == [2, 1, 0]
    assert sums[2] == 0 and (sums[:2] < 0).all()
    whole, _ = score_completions(tiny_model, tokenizer, [5, 6, 7], [[8, 9], [10], []])
    torch.testing.assert_close(sums, whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        score_completions(tiny_model, tokenizer, [], [[1]])
    tiny_model.train()
    score_completions(tiny_model, tokenizer, [5, 6], [[7]])
    assert tiny_model.training  # the caller's mode is restored


def test_scoring_tokenizes_like_the_trainer(tokenizer, tmp_path):
    from dmpo_trl import DMPOConfig, DMPOTrainer

    log = planted_log()
    examples = last_item_examples(log, ["u150", "u151"], max_history=3)
    for conversational in (False, True):
        rows = build_preference_dataset(
            log, examples, num_negatives=4, num_candidates=5, seed=0, conversational=conversational
        )
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(str(tmp_path), bf16=False, report_to=[], gradient_checkpointing=False),
            train_dataset=rows,
            processing_class=tokenizer,
        )
        for k, row in enumerate(rows):
            trained = trainer.train_dataset[k]
            prompt_ids, completions_ids = tokenize_for_scoring(
                tokenizer, row["prompt"], [row["chosen"], *row["rejected"]]
            )
            assert prompt_ids == trained["prompt_ids"]
            assert completions_ids == [trained["chosen_ids"], *trained["rejected_ids"]]


# --- evaluate_ranking on a tiny model ----------------------------------------------------------------------------


@pytest.fixture
def small_log():
    rng = random.Random(0)
    items = [f"i{k}" for k in range(30)]
    sequences = {f"u{u}": rng.sample(items, 5) for u in range(12)}
    return InteractionLog(sequences, {i: f"Heat {i[1:]}" for i in items}, name="small")


def test_likelihood_mode_result_and_identical_candidates(tokenizer, tiny_model, small_log, tmp_path):
    examples = last_item_examples(small_log, ["u0", "u1", "u2", "u3"], max_history=3)
    kwargs = dict(num_candidates=5, seed=7, progress=False, batch_size=3)
    result = evaluate_ranking(tiny_model, tokenizer, examples, small_log, output=tmp_path / "r.json", **kwargs)
    metrics = result["metrics"]
    assert set(metrics) >= {"hit_ratio@1", "hit_ratio@5", "ndcg@5", "mrr", "hit_ratio@1_ci95", "ndcg@5_ci95"}
    assert metrics["hit_ratio@5"] == 1.0  # 5 candidates: the target is always in the top 5
    assert result["settings"]["conversational"] is True  # the tiny tokenizer has a chat template
    assert result["settings"]["num_candidates"] == 5 and result["settings"]["seed"] == 7
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["metrics"] == metrics and written["per_user"] == result["per_user"]
    # same seed: the same candidates and scores; the baselines see the same candidates too
    again = evaluate_ranking(tiny_model, tokenizer, examples, small_log, **kwargs)
    assert again["per_user"] == result["per_user"]
    random_baseline = evaluate_baseline("random", examples, small_log, num_candidates=5, seed=7)
    assert [u["candidates"] for u in random_baseline["per_user"]] == [u["candidates"] for u in result["per_user"]]
    # each per-user score is the evaluator's score of that candidate
    item = build_ranking_prompts(small_log, examples[:1], 5, 7, conversational=True)[0]
    direct = score_candidates(tiny_model, tokenizer, item.prompt, item.completions).tolist()
    assert result["per_user"][0]["scores"] == pytest.approx(direct, abs=1e-5)
    ranks = [u["rank"] for u in result["per_user"]]
    assert metrics["mrr"] == pytest.approx(sum(1 / (r + 1) for r in ranks) / len(ranks))


def test_settings_records_and_the_keyword_form_rank_alike(tokenizer, tiny_model, small_log, tmp_path):
    """`settings=EvaluationSettings(...)`, `prompt=PromptSettings(...)`, the former keywords and the former positional
    arguments give the same result, recorded the same way."""
    examples = last_item_examples(small_log, ["u0", "u1", "u2"], max_history=3)
    keywords = evaluate_ranking(
        tiny_model, tokenizer, examples, small_log, num_candidates=4, seed=2, mode="auc", prompt_style="candidates",
        normalize=True,
        conversational=False, list_style="comma", batch_size=3, progress=False, output=tmp_path / "keywords.json",
    )  # fmt: skip
    settings = EvaluationSettings(mode="auc", num_candidates=4, seed=2, progress=False)
    prompt = PromptSettings("candidates", conversational=False, list_style="comma", normalize=True, batch_size=3)
    records = evaluate_ranking(
        tiny_model, tokenizer, examples, small_log, settings=settings, prompt=prompt, output=tmp_path / "records.json"
    )
    legacy = (4, 2, "candidates", False, "auc", True, 3, False)  # num_candidates, seed, ..., batch_size, progress
    positional = evaluate_ranking(tiny_model, tokenizer, examples, small_log, *legacy, list_style="comma")
    for result in (records, positional):
        assert result["settings"] == keywords["settings"] and result["per_user"] == keywords["per_user"]
    assert list(json.loads((tmp_path / "records.json").read_text())) == list(keywords)
    # a keyword replaces a field of the record; without `prompt` the style and the form follow the mode and tokenizer
    one = evaluate_ranking(tiny_model, tokenizer, examples, small_log, settings=settings, prompt=prompt, seed=3)
    assert one["settings"]["seed"] == 3 and settings.seed == 2
    auto = evaluate_ranking(tiny_model, tokenizer, examples, small_log, settings=EvaluationSettings(progress=False))
    assert (auto["settings"]["prompt_style"], auto["settings"]["conversational"]) == ("history", True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_history'"):
        evaluate_ranking(tiny_model, tokenizer, examples, small_log, max_history=2)
    with pytest.raises(TypeError, match="multiple values for argument 'seed'"):
        evaluate_ranking(tiny_model, tokenizer, examples, small_log, 4, 2, seed=2)


def test_plain_and_history_prompts(tokenizer, tiny_model, small_log):
    examples = last_item_examples(small_log, ["u4", "u5"], max_history=3)
    result = evaluate_ranking(
        tiny_model,
        tokenizer,
        examples,
        small_log,
        num_candidates=4,
        prompt_style="history",
        conversational=False,
        normalize=True,
        progress=False,
    )
    assert result["settings"]["prompt_style"] == "history" and result["settings"]["normalize"] is True
    assert all(0 <= u["rank"] < 4 for u in result["per_user"])


def test_auc_mode(tokenizer, tiny_model, small_log):
    examples = last_item_examples(small_log, ["u6", "u7"], max_history=3)
    result = evaluate_ranking(
        tiny_model, tokenizer, examples, small_log, num_candidates=4, mode="auc", progress=False, seed=1
    )
    assert 0.0 <= result["metrics"]["auc"] <= 1.0
    for user in result["per_user"]:
        assert len(user["wins"]) == 3 and set(user["wins"]) <= {0.0, 0.5, 1.0}
        assert user["auc"] == pytest.approx(sum(user["wins"]) / 3)
    # the pairwise prompts list exactly the target and one negative
    item = build_ranking_prompts(small_log, examples[:1], 4, 1, conversational=True)[0]
    pairs = _pairwise_prompts(small_log, item, 1, PromptSettings("candidates", conversational=True))
    target_title = small_log.titles[item.candidates[item.target_index]]
    for prompt, completions, target_index in pairs:
        assert "from the following 2 candidates" in prompt[0]["content"]
        assert completions[target_index][0]["content"] == target_title
    # a history-only prompt needs one scoring per user: the wins come from the listwise scores
    history = evaluate_ranking(
        tiny_model,
        tokenizer,
        examples,
        small_log,
        num_candidates=4,
        mode="auc",
        prompt_style="history",
        progress=False,
    )
    listwise = evaluate_ranking(
        tiny_model, tokenizer, examples, small_log, num_candidates=4, prompt_style="history", progress=False
    )
    for auc_user, rank_user in zip(history["per_user"], listwise["per_user"]):
        scores = rank_user["scores"]
        target = scores[rank_user["target_index"]]
        others = [s for k, s in enumerate(scores) if k != rank_user["target_index"]]
        assert auc_user["auc"] == pytest.approx(sum(target > s for s in others) / 3)


def test_generation_mode(tokenizer, tiny_model, small_log):
    examples = last_item_examples(small_log, ["u8", "u9", "u10"], max_history=3)
    result = evaluate_ranking(
        tiny_model,
        tokenizer,
        examples,
        small_log,
        num_candidates=4,
        mode="generation",
        max_new_tokens=6,
        batch_size=2,
        progress=False,
    )
    metrics = result["metrics"]
    assert set(metrics) >= {"hit_ratio@1", "valid_ratio"}
    assert 0 <= metrics["hit_ratio@1"] <= metrics["valid_ratio"] <= 1
    for user in result["per_user"]:
        titles = [small_log.titles[i] for i in user["candidates"]]
        assert user["named"] == named_candidates(user["answer"], titles)
    with pytest.raises(ValueError, match="mode"):
        evaluate_ranking(tiny_model, tokenizer, examples, small_log, mode="vibes")


# --- parsing generated answers ---------------------------------------------------------------------------------


TITLES = ["Heat (1995)", "Godfather, The (1972)", "Heat Wave (1990)", "Babe (1995)", "Se7en (1995)"]


def test_explain_pick_asks_about_the_pick_after_the_ranking_prompt(tokenizer, tiny_model, small_log, monkeypatch):
    [example] = last_item_examples(small_log, ["u8"], max_history=3)
    seen = []
    generate = generation.generate_answers
    monkeypatch.setattr(generation, "generate_answers", lambda *a, **k: seen.extend(a[2]) or generate(*a, **k))
    text = generation.explain_pick(tiny_model, tokenizer, example, small_log, example.target, max_new_tokens=5)
    assert isinstance(text, str) and text == text.strip()
    [[question, pick, why]] = seen
    history = [small_log.titles[i] for i in example.history]
    assert (
        all(title in question["content"] for title in history) and pick["content"] == small_log.titles[example.target]
    )
    assert small_log.titles[example.target] in why["content"] and why["role"] == "user"
    no_chat = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    with pytest.raises(ValueError, match="chat_template"):
        generation.explain_pick(tiny_model, no_chat, example, small_log, example.target)


@pytest.mark.parametrize(
    "answer, named",
    [
        ("Heat (1995)", [0]),
        ("heat", [0]),
        ("I recommend: The Godfather.", [1]),
        ("Godfather, The (1972)", [1]),
        ("Heat Wave (1990)", [2]),  # "Heat" inside "Heat Wave" does not count
        ("Heat Wave, then Heat", [2, 0]),
        ("Babe or Heat", [3, 0]),
        ("Se7en!", [4]),
        ("Babes in Toyland", []),  # no match inside a longer word
        ("", []),
        ("1. Heat (1995)\n2. Babe (1995)", [0, 3]),
    ],
)
def test_named_candidates(answer, named):
    assert named_candidates(answer, TITLES) == named


def test_generation_hit_requires_exactly_one_named_target():
    # valid = exactly one candidate named; hit = valid and it is the target (S-DPO's counting)
    assert named_candidates("Heat or Babe", TITLES) == [0, 3]  # two named: invalid, no hit
    assert named_candidates("nothing here", TITLES) == []  # none named: invalid


def test_format_table():
    table = format_table(
        {"random": {"metrics": {"hit_ratio@1": 0.05, "num_users": 3}}, "m": {"metrics": {"hit_ratio@1": 0.5}}}
    )
    assert table.splitlines() == ["model   hit_ratio@1", "random  0.0500", "m       0.5000"]


def test_shared_scoring_equals_unshared(tokenizer, tiny_model):
    prompt = tokenizer("The user watched Heat, Fargo. Choose one:")["input_ids"]
    completions = [tokenizer(t + "<|end|>")["input_ids"] for t in [" Casino", " Star Wars (1977)", " Babe", " Heat"]]
    shared, counts = score_completions(tiny_model, tokenizer, prompt, completions)
    unshared, same_counts = score_completions(tiny_model, tokenizer, prompt, completions, share_prompt=False)
    torch.testing.assert_close(shared, unshared, atol=1e-4, rtol=0)
    assert counts.tolist() == same_counts.tolist() == [len(c) for c in completions]


def test_several_users_per_forward_give_the_same_scores(tokenizer, tiny_model, small_log):
    examples = last_item_examples(small_log, [f"u{k}" for k in range(7)], max_history=3)
    kwargs = dict(num_candidates=5, seed=2, progress=False)
    one = evaluate_ranking(tiny_model, tokenizer, examples, small_log, **kwargs)
    batched = evaluate_ranking(tiny_model, tokenizer, examples, small_log, users_per_forward=3, **kwargs)
    for a, b in zip(one["per_user"], batched["per_user"]):
        torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]), atol=1e-4, rtol=0)
    assert [u["rank"] for u in one["per_user"]] == [u["rank"] for u in batched["per_user"]]


def test_popularity_prior_adds_weighted_log_counts_to_the_model_scores(tokenizer, tiny_model, small_log):
    examples = last_item_examples(small_log, [f"u{k}" for k in range(6)], max_history=3)
    kwargs = dict(num_candidates=5, seed=3, progress=False)
    plain = evaluate_ranking(tiny_model, tokenizer, examples, small_log, **kwargs)
    counts = baseline_popularity(small_log, examples)  # the popular baseline's counts: test targets left out
    prior = evaluate_ranking(tiny_model, tokenizer, examples, small_log, popularity_prior=2.0, **kwargs)
    assert prior["settings"]["popularity_prior"] == 2.0 and "popularity_prior" not in plain["settings"]
    for a, b in zip(plain["per_user"], prior["per_user"]):
        expected = [s + 2.0 * math.log1p(counts[c]) for s, c in zip(a["scores"], a["candidates"])]
        assert b["scores"] == pytest.approx(expected, abs=1e-9)
    # a huge weight ranks by popularity: the top pick is a most-counted candidate
    huge = evaluate_ranking(tiny_model, tokenizer, examples, small_log, popularity_prior=1e4, **kwargs)
    for user in huge["per_user"]:
        top = max(range(5), key=lambda k: user["scores"][k])
        assert counts[user["candidates"][top]] == max(counts[c] for c in user["candidates"])
        assert user["rank"] == sorted(user["scores"], reverse=True).index(user["scores"][user["target_index"]])
    with pytest.raises(ValueError, match="popularity_prior"):
        evaluate_ranking(tiny_model, tokenizer, examples, small_log, popularity_prior=-1.0, **kwargs)
    with pytest.raises(ValueError, match="popularity_prior"):
        evaluate_ranking(tiny_model, tokenizer, examples, small_log, mode="auc", popularity_prior=1.0, **kwargs)
