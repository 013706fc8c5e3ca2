"""Prompt templates and the TRL preference / SFT dataset builders."""

import re
from collections import Counter

import pytest

from dmpo_trl.data import (
    CANDIDATES_TEMPLATE,
    HISTORY_TEMPLATE,
    InteractionLog,
    build_preference_dataset,
    build_sft_dataset,
    candidate_sets,
    few_shot_split,
    leave_last_out,
    load_movielens,
    recbole_example_dir,
    render_prompt,
    resolve_template,
)
from dmpo_trl.rows import check_row


def synthetic_log(num_users=120, num_items=80):
    """User u walks the catalog from item u % num_items: the next item is always the successor (planted pattern)."""
    titles = {f"i{k}": f"Film {k} ({1960 + k % 40})" for k in range(num_items)}
    sequences = {f"u{u}": [f"i{(u + j) % num_items}" for j in range(4 + u % 9)] for u in range(num_users)}
    return InteractionLog(sequences, titles, name="walks")


@pytest.fixture(scope="module")
def log():
    return synthetic_log()


@pytest.fixture(scope="module")
def examples(log):
    return leave_last_out(log, max_history=5)["test"]


def listed_titles(prompt, section):
    """Titles of a numbered list that follows the line containing `section`."""
    block = prompt.split(section, 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\d+\. (.*)$", block, flags=re.M)


def test_candidate_prompt_rows(log, examples):
    ds = build_preference_dataset(log, examples, num_negatives=4, num_candidates=10, seed=1, prompt_style="candidates")
    assert len(ds) == len(examples)
    assert {"prompt", "chosen", "rejected", "user", "target"} <= set(ds.column_names)
    sets = candidate_sets(log, examples, num_candidates=10, seed=1)
    positions = Counter()
    for row, example, (candidates, _) in zip(ds, examples, sets):
        assert row["user"] == example.user and row["target"] == example.target
        assert row["prompt"].endswith("Answer with the title only.\nAnswer:")
        assert row["chosen"] == " " + log.titles[example.target]
        assert listed_titles(row["prompt"], "in order:") == [log.titles[i] for i in example.history]
        shown = listed_titles(row["prompt"], "10 candidates:")
        assert shown == [log.titles[i] for i in candidates]  # the evaluator's candidate list, in the same order
        assert len(row["rejected"]) == 4 == len(set(row["rejected"]))
        assert all(r.startswith(" ") and r[1:] in shown and r != row["chosen"] for r in row["rejected"])
        positions[shown.index(row["chosen"][1:])] += 1
        check_row(row, 0)
    assert len(positions) == 10 and max(positions.values()) < 3 * len(examples) / 10  # position leaks nothing


def test_preference_rows_are_deterministic_per_seed(log, examples):
    first = build_preference_dataset(log, examples, seed=5, num_candidates=12, prompt_style="candidates")
    again = build_preference_dataset(log, examples, seed=5, num_candidates=12, prompt_style="candidates")
    other = build_preference_dataset(log, examples, seed=6, num_candidates=12, prompt_style="candidates")
    assert first.to_list() == again.to_list()
    assert first["prompt"] != other["prompt"]


def test_conversational_rows(log, examples):
    ds = build_preference_dataset(log, examples[:20], num_negatives=3, num_candidates=8, conversational=True)
    for row, example in zip(ds, examples):
        assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
        assert not row["prompt"][0]["content"].endswith("Answer:")
        assert row["chosen"] == [{"role": "assistant", "content": log.titles[example.target]}]
        assert len(row["rejected"]) == 3
        assert all(
            r[0]["role"] == "assistant" and r[0]["content"] != row["chosen"][0]["content"] for r in row["rejected"]
        )
        assert check_row(row, 0)[0] is True


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "popularity_matched"])
def test_history_prompt_draws_negatives_from_the_catalog(log, examples, strategy):
    ds = build_preference_dataset(log, examples, num_negatives=6, prompt_style="history", negative_strategy=strategy)
    for row, example in zip(ds, examples):
        assert "candidates" not in row["prompt"] and row["prompt"].startswith("The user has watched")
        seen = {log.titles[i] for i in log.sequences[example.user]}
        assert len(set(row["rejected"])) == 6 and not seen & {r[1:] for r in row["rejected"]}


def test_custom_template_and_comma_lists(log, examples):
    template = "History: {history}\nOptions ({num_candidates}): {candidates}\nNext:"
    ds = build_preference_dataset(
        log,
        examples[:5],
        num_negatives=2,
        prompt_style=template,
        num_candidates=5,
        list_style="comma",
        answer_prefix="",
    )
    row = ds[0]
    assert row["prompt"].startswith("History: ") and row["prompt"].endswith("Next:")
    options = row["prompt"].split("Options (5): ")[1].split("\n")[0].split(", ")
    assert len(options) == 5 and row["chosen"][1:] in options


def test_bad_arguments(log, examples):
    with pytest.raises(ValueError, match="num_negatives=20 must be at most num_candidates - 1 = 19"):
        build_preference_dataset(log, examples, num_negatives=20, prompt_style="candidates")
    with pytest.raises(ValueError, match="prompt_style must be one of"):
        build_preference_dataset(log, examples, prompt_style="Pick one of {candidates}")  # no {history}
    with pytest.raises(ValueError, match="fields \\['history', 'user'\\]"):
        resolve_template("{user} saw {history}")
    with pytest.raises(ValueError, match="Unknown list style"):
        render_prompt(HISTORY_TEMPLATE, ["A"], list_style="bullets")


def test_sft_rows_match_preference_prompts(log, examples):
    for conversational in (False, True):
        kwargs = dict(num_candidates=10, seed=3, conversational=conversational)
        sft = build_sft_dataset(log, examples, **kwargs)
        pref = build_preference_dataset(log, examples, **kwargs)
        assert sft.column_names == ["prompt", "completion", "user", "target"]
        assert sft["prompt"] == pref["prompt"] and sft["completion"] == pref["chosen"]


def test_templates_have_the_documented_fields():
    assert resolve_template("candidates") == CANDIDATES_TEMPLATE and resolve_template("history") == HISTORY_TEMPLATE
    text = render_prompt(CANDIDATES_TEMPLATE, ["Heat (1995)"], ["Fargo (1996)", "Babe (1995)"])
    assert "from the following 2 candidates:\n1. Fargo (1996)\n2. Babe (1995)" in text


def test_movielens_100k_end_to_end():
    if recbole_example_dir() is None:
        pytest.skip("recbole is not installed (pip install --no-deps recbole ships MovieLens-100K)")
    log = load_movielens("movielens-100k")
    split = few_shot_split(log, num_train_users=100, num_valid_users=20, num_test_users=50, seed=0)
    ds = build_preference_dataset(log, split.train, num_negatives=4, num_candidates=20)
    assert len(ds) == 100 and len(set(ds["user"])) == 100
    for index, row in enumerate(ds):
        check_row(row, index)
        assert row["target"] == log.sequences[row["user"]][-1] and row["chosen"] == " " + log.titles[row["target"]]


def test_item_noun_changes_only_the_noun():
    from dmpo_trl.data import builtin_template
    from dmpo_trl.data.prompts import item_nouns

    for style, movies in (("candidates", CANDIDATES_TEMPLATE), ("history", HISTORY_TEMPLATE)):
        assert builtin_template(style) == movies == builtin_template(style, "movie/movies")
        books = builtin_template(style, "books")
        assert "movie" not in books and books == movies.replace("movies", "books").replace("movie", "book")
        assert builtin_template(style, "person/people").count("people") == movies.count("movies")
    assert builtin_template("Seen: {history}", "books") == "Seen: {history}"  # your own template is left alone
    assert resolve_template(None) == HISTORY_TEMPLATE  # the default prompt
    with pytest.raises(ValueError, match="item_noun"):
        item_nouns("/")


def test_default_prompt_is_the_history_prompt(log, examples):
    """The default is the best measured prompt for likelihood ranking: the history, without a candidate list."""
    ds = build_preference_dataset(log, examples[:5], num_negatives=3)
    assert (
        ds["prompt"] == build_preference_dataset(log, examples[:5], num_negatives=3, prompt_style="history")["prompt"]
    )
    assert all("candidates:" not in prompt for prompt in ds["prompt"])


def test_given_negatives_replace_the_drawn_ones(log, examples):
    chosen = [[f"i{(int(e.target[1:]) + 40) % 80}", f"i{(int(e.target[1:]) + 41) % 80}"] for e in examples]
    rows = build_preference_dataset(log, examples, num_negatives=2, negatives=chosen)
    drawn = build_preference_dataset(log, examples, num_negatives=2)
    assert rows["prompt"] == drawn["prompt"] and rows["chosen"] == drawn["chosen"]
    assert rows["rejected"] == [[f" {log.titles[i]}" for i in items] for items in chosen]
    first = examples[0]
    bad = [
        (chosen[:-1], "lists for"),
        ([[first.target, chosen[0][1]], *chosen[1:]], rf"negatives\[0\] \(user '{first.user}'\): item"),
        ([[chosen[0][0], chosen[0][0]], *chosen[1:]], r"negatives\[0\].*2 distinct"),
        ([["nope", chosen[0][1]], *chosen[1:]], "has no title"),
    ]
    for negatives, message in bad:
        with pytest.raises(ValueError, match=message):
            build_preference_dataset(log, examples, num_negatives=2, negatives=negatives)
    with pytest.raises(ValueError, match="without a candidate list"):
        build_preference_dataset(log, examples, 2, prompt_style="candidates", negatives=chosen)
