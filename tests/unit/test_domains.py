import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
from recipe_helpers import write_tiny_log

from dmpo_trl.data import (
    InteractionLog,
    build_preference_dataset,
    candidate_sets,
    cross_domain_split,
    item_labels_from_table,
    load_movielens_genres,
    parse_domain,
    restrict_log,
    split_catalogue,
)


def synthetic(num_users: int = 30):
    """Items a0..a19 are 'Action', c0..c19 'Comedy', b0, b1 both; every user alternates between the domains."""
    labels = {f"a{k}": {"Action"} for k in range(20)} | {f"c{k}": {"Comedy", "Drama"} for k in range(20)}
    labels |= {"b0": {"Action", "Comedy"}, "b1": {"Sci-Fi", "Drama"}, "n0": {"Horror"}}
    sequences = {}
    for u in range(num_users):
        a = [f"a{(u + k) % 20}" for k in range(7)]
        c = [f"c{(u * 3 + k) % 20}" for k in range(7)]
        sequences[f"u{u}"] = [x for pair in zip(a, c) for x in pair] + ["b0", "n0"]
    log = InteractionLog(sequences, {i: f"Title {i}" for i in labels}, name="synthetic")
    return log, labels


def test_split_catalogue_disjoint_and_warns_about_items_in_both():
    _, labels = synthetic()
    with pytest.warns(UserWarning, match=r"2 of 43 items have labels of both domains"):
        split = split_catalogue(labels, parse_domain("Action, Sci-Fi"), parse_domain("Comedy,Drama"))
    assert split.source == {f"a{k}" for k in range(20)}
    assert split.target == {f"c{k}" for k in range(20)}
    assert split.in_both == {"b0", "b1"} and split.in_neither == {"n0"}
    assert not split.source & split.target
    with pytest.raises(ValueError, match="share the labels"):
        split_catalogue(labels, {"Action"}, {"Action", "Comedy"})
    with pytest.raises(ValueError, match="a domain is empty"):
        split_catalogue(labels, {"Western"}, {"Comedy"})


def test_cross_domain_split_users_disjoint_rows_and_candidates_in_their_domain():
    log, labels = synthetic()
    with warnings.catch_warnings(record=True):
        catalogue = split_catalogue(labels, {"Action"}, {"Comedy"})
    source, target = restrict_log(log, catalogue.source), restrict_log(log, catalogue.target)
    assert set(source.titles) == catalogue.source and set(target.titles) == catalogue.target
    assert all(set(seq) <= catalogue.target for seq in target.sequences.values())
    split = cross_domain_split(source, target, 10, 8, 6, max_history=3, min_history=3, seed=1)
    train_users = {e.user for e in split.train}
    test_users = {e.user for e in split.test}
    in_domain_users = {e.user for e in split.target_train}
    assert (len(train_users), len(test_users), len(in_domain_users)) == (10, 8, 6)
    assert not train_users & test_users and not in_domain_users & test_users and not train_users & in_domain_users
    for example in split.train:
        assert {example.target, *example.history} <= catalogue.source
        assert example.target == source.sequences[example.user][-1] and len(example.history) == 3
    for example in split.test + split.target_train:
        assert {example.target, *example.history} <= catalogue.target
    for candidates, _ in candidate_sets(target, split.test, 5, seed=0):
        assert set(candidates) <= catalogue.target and len(candidates) == 5
    rows = build_preference_dataset(source, split.train, num_negatives=4)
    source_titles = {f" {source.titles[i]}" for i in catalogue.source}
    assert all(set(row["rejected"]) | {row["chosen"]} <= source_titles for row in rows)
    # the test users depend on the seed, not on how many training users are asked for
    fewer = cross_domain_split(source, target, 2, 8, 0, max_history=3, min_history=3, seed=1)
    assert [e.user for e in fewer.test] == [e.user for e in split.test]
    other_seed = cross_domain_split(source, target, 10, 8, 6, max_history=3, min_history=3, seed=2)
    assert [e.user for e in other_seed.test] != [e.user for e in split.test]


def test_cross_domain_split_two_logs_and_too_many_users():
    games = InteractionLog({f"g{k}": ["x", "y", "z", "w"] for k in range(5)}, {i: f"Game {i}" for i in "xyzw"})
    movies = InteractionLog({f"m{k}": ["p", "q", "r"] for k in range(4)}, {i: f"Movie {i}" for i in "pqrs"})
    split = cross_domain_split(games, movies, 5, 4, max_history=2, min_history=2)
    assert {e.target for e in split.train} == {"w"} and {e.target for e in split.test} == {"r"}
    with pytest.raises(ValueError, match=r"asked for 5 test users but only 4 users of 'custom'"):
        cross_domain_split(games, movies, 1, 5, min_history=2)


def test_item_labels_from_table_and_grouplens_genres(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,genres\n1,Heat,Action|Crime\n2,Fargo,\n")
    assert item_labels_from_table(tmp_path / "items.csv") == {"1": {"Action", "Crime"}, "2": frozenset()}
    flags = ["0"] * 19
    flags[1] = flags[15] = "1"  # Action, Sci-Fi
    (tmp_path / "u.item").write_text("1|Star Wars (1977)|01-Jan-1977||http://x|" + "|".join(flags) + "\n")
    (tmp_path / "u.data").write_text("1\t1\t5\t1\n")
    assert load_movielens_genres(tmp_path) == {"1": {"Action", "Sci-Fi"}}


def load_cross_domain():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cross_domain.py"
    spec = importlib.util.spec_from_file_location("cross_domain_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains two tiny models
def test_cross_domain_study_two_logs_runs_resumes_and_refuses_bad_flags(tmp_path, tiny_model_dir, capsys):
    cross_domain = load_cross_domain()
    movies, movie_items = write_tiny_log(tmp_path)
    games = tmp_path / "games.csv"
    games.write_text(
        "user_id,item_id,timestamp\n" + "".join(f"g{u},x{(u + t) % 12},{t}\n" for u in range(10) for t in range(6))
    )
    game_items = tmp_path / "game_items.csv"
    game_items.write_text("item_id,title\n" + "".join(f"x{k},Game {k}\n" for k in range(12)))
    results = tmp_path / "results"
    methods = ["random", "popular", "zero-shot", "dmpo-k2-cross", "dmpo-k2-in"]
    argv = [
        "--model", str(tiny_model_dir), "--train_interactions", str(games), "--train_items", str(game_items),
        "--test_interactions", movies, "--test_items", movie_items, "--methods", *methods,
        "--num_train_users", "6", "--num_test_users", "5", "--num_candidates", "4", "--max_history", "3",
        "--min_history", "3", "--num_train_epochs", "1", "--learning_rate", "1e-2",
        "--results_dir", str(results), "--work_dir", str(tmp_path / "work"),
    ]  # fmt: skip
    cross_domain.main(argv)
    summary = json.loads((results / "cross_domain.json").read_text())
    assert list(summary["methods"]) == methods and all(m["num_users"] == 5 for m in summary["methods"].values())
    assert summary["provenance"]["libraries"]["trl"] and summary["config"]["num_train_users"] == 6
    pairs = [(c["a"], c["b"]) for c in summary["comparisons"] if c["metric"] == "hit_ratio@1"]
    assert pairs[:2] == [("dmpo-k2-cross", "zero-shot"), ("dmpo-k2-cross", "dmpo-k2-in")]
    runs = {m: json.loads((results / "runs" / f"{m}.json").read_text()) for m in methods}
    test_users = {u["user"] for u in runs["zero-shot"]["ranking"]["per_user"]}
    movie_ids = {f"m{k}" for k in range(30)}
    for name in methods:
        assert all(set(u["candidates"]) <= movie_ids for u in runs[name]["ranking"]["per_user"])
    cross, within = runs["dmpo-k2-cross"]["train"], runs["dmpo-k2-in"]["train"]
    assert cross["domain"] == "games" and cross["rows"] == 6 and set(cross["users"]) <= {f"g{u}" for u in range(10)}
    assert within["domain"] == "interactions" and not set(within["users"]) & test_users
    assert "| dmpo-k2-cross | 6 rows of games | 5 |" in (results / "cross_domain.md").read_text()

    capsys.readouterr()
    cross_domain.main(argv)  # a rerun finds every result and trains nothing
    assert capsys.readouterr().out.count("done already") == len(methods)

    with pytest.raises(SystemExit) as exit_info:
        cross_domain.main(["--train_interactions", str(games), "--results_dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "two logs need all of" in capsys.readouterr().err
