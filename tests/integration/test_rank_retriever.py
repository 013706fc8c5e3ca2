"""`dmpo-trl rank --retriever popular` on a tiny run saved with a popularity prior: a request without candidates gets
the retriever's top M unseen items, reranked by the model; what cannot be ranked that way is refused in one line."""

import json
import shutil
from pathlib import Path

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import Ranker
from dmpo_trl.cli import main
from dmpo_trl.recipe import parse_recipe_arguments, run_recipe


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, tiny_model_dir):
    """The output folder of a LoRA run whose ranker.json saves the interaction counts (a popularity prior of 2)."""
    folder = tmp_path_factory.mktemp("rank_retriever")
    args = parse_recipe_arguments(
        tiny_flags(write_tiny_log(folder), tiny_model_dir, folder / "out", "--use_peft", "--popularity_prior", "2")
    )
    run_recipe(*args, verbose=False)
    return folder / "out"


@pytest.fixture(scope="module")
def ranker(prior_run):
    return Ranker.from_pretrained(prior_run)


def rank(model, source, target, *flags):
    return main(["rank", "--model", str(model), "--input", str(source), "--output", str(target), *flags])


def write_requests(path: Path, requests: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def test_requests_without_candidates_are_ranked_two_stage(prior_run, ranker, tmp_path, capsys):
    assert ranker.popularity and ranker.prompt.popularity_prior == 2.0
    requests = [
        {"user": "a", "history": ["m1", "m2"]},
        {"user": "b", "history": ["Heat 7", "m9", {"title": "A film outside the catalogue"}]},
        {"user": "c", "history": ["m1"], "candidates": ["m3", "m4"]},  # its own candidates, ranked as before
    ]
    source = write_requests(tmp_path / "requests.jsonl", requests)
    target = tmp_path / "ranked.jsonl"
    assert rank(prior_run, source, target, "--retriever", "popular", "--retrieve_top", "5") == 0
    assert "Ranked 3 requests" in capsys.readouterr().out
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["user"] for row in rows] == ["a", "b", "c"]
    for request, row, seen in zip(requests[:2], rows, ({"m1", "m2"}, {"m7", "m9"})):
        items = [entry["item"] for entry in row["ranking"]]
        assert len(items) == len(set(items)) == 5
        assert not set(items) & seen and set(items) <= set(ranker.titles)
        assert [entry["title"] for entry in row["ranking"]] == [ranker.titles[i] for i in items]
        # the retriever's top 5: no unseen item left out is more popular than one proposed
        left_out = set(ranker.titles) - seen - set(items)
        assert min(ranker.popularity.get(i, 0) for i in items) >= max(ranker.popularity.get(i, 0) for i in left_out)
        # the model's scores, as Ranker.recommend gives them
        expected = ranker.recommend(request["history"], "popular", top_m=5)
        assert [(entry["item"], entry["score"]) for entry in row["ranking"]] == expected
        assert [entry["score"] for entry in row["ranking"]] == sorted(ranker.scores(request["history"], items),
                                                                      reverse=True)  # fmt: skip
    assert [(entry["item"], entry["score"]) for entry in rows[2]["ranking"]] == ranker.rank(["m1"], ["m3", "m4"])
    # a fusion weight large enough orders the proposed items by the retriever's counts
    fused = tmp_path / "fused.jsonl"
    flags = ["--retriever", "popular", "--retrieve_top", "5", "--fusion_weight", "1e6"]
    assert rank(prior_run, source, fused, *flags) == 0
    for row in [json.loads(line) for line in fused.read_text().splitlines()][:2]:
        counts = [ranker.popularity.get(entry["item"], 0) for entry in row["ranking"]]
        assert counts == sorted(counts, reverse=True)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dmpo-trl rank: error: "), err
    return err.strip().removeprefix("dmpo-trl rank: error: ")


def test_what_cannot_be_ranked_two_stage_is_refused_in_one_line(prior_run, tmp_path, capsys):
    source = write_requests(tmp_path / "requests.jsonl", [{"history": ["m1"]}])
    target = tmp_path / "ranked.jsonl"
    # a run that saved no interaction counts: nothing for `popular` to rank by
    plain = Path(shutil.copytree(prior_run, tmp_path / "plain"))
    config = json.loads((plain / "ranker.json").read_text())
    config["prompt"]["popularity_prior"] = 0.0
    del config["catalogue"]["popularity"]
    (plain / "ranker.json").write_text(json.dumps(config))
    assert rank(plain, source, target, "--retriever", "popular") == 2
    assert one_line_error(capsys) == (
        "--retriever popular ranks by the interaction counts ranker.json saves with a popularity prior; "
        f"{plain / 'ranker.json'} has none (the run ranks without the prior)"
    )
    # without --retriever a request needs its candidates, as before
    assert rank(prior_run, source, target) == 2
    assert one_line_error(capsys) == f"{source} line 1: `candidates` is missing"
    for flags, message in [
        (["--fusion_weight", "1"], "--fusion_weight 1.0 fuses the retriever's scores: give --retriever too"),
        (["--retriever", "popular", "--retrieve_top", "0"], "--retrieve_top 0: the retriever proposes at least one"),
        (["--retriever", "bpr"], "argument --retriever: invalid choice: 'bpr' (choose from 'popular', 'sasrec',"),
    ]:
        assert rank(prior_run, source, target, *flags) == 2
        assert one_line_error(capsys).startswith(message)
    assert not target.exists()
