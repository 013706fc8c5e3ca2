"""`dmpo-trl rank --retriever sasrec` on a tiny run: SASRec, fitted at startup on the run's interaction log without
the test users' targets, proposes each request's top M unseen items from its history, and the model reranks them;
a run whose log cannot be found, and BPR, are refused in one line."""

import json
import shutil
from pathlib import Path

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import Ranker
from dmpo_trl.cli import main
from dmpo_trl.cli.rank import fit_history_retriever, load_run_log
from dmpo_trl.recipe import parse_recipe_arguments, run_recipe


pytest.importorskip("cornac", reason='the classic retrievers need the "classic" extra')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """The output folder of a tiny LoRA run trained on a tiny CSV log (24 users, 30 items)."""
    folder = tmp_path_factory.mktemp("rank_classic_retriever")
    flags = tiny_flags(write_tiny_log(folder), tiny_model_dir, folder / "out", "--use_peft")
    run_recipe(*parse_recipe_arguments(flags), verbose=False)
    return folder / "out"


def rank(model, source, target, *flags):
    return main(["rank", "--model", str(model), "--input", str(source), "--output", str(target), *flags])


def write_requests(path: Path, requests: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dmpo-trl rank: error: "), err
    return err.strip().removeprefix("dmpo-trl rank: error: ")


def test_sasrec_proposes_unseen_items_from_the_history_and_the_model_reranks_them(run_dir, tmp_path, capsys):
    requests = [
        {"user": "a", "history": ["m1", "m2", "m3"]},
        {"user": "b", "history": ["Heat 7", "m9", {"title": "A film outside the catalogue"}]},  # a user of no log
        {"user": "c", "history": ["m1"], "candidates": ["m3", "m4"]},  # its own candidates, ranked as before
    ]
    source = write_requests(tmp_path / "requests.jsonl", requests)
    target = tmp_path / "ranked.jsonl"
    assert rank(run_dir, source, target, "--retriever", "sasrec", "--retrieve_top", "5") == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in target.read_text().splitlines()]

    run = load_run_log(run_dir)
    model = fit_history_retriever(run, "sasrec")  # the same fit, refitted: same seed, same data
    split = run_dir / "split.json"
    assert out.splitlines()[0] == (
        f"Fitting sasrec on {model.num_interactions} interactions of {run.source} (the targets of the test users "
        f"of {split}, and what follows them, left out)"
    )
    assert (
        Path(run.source).name == "interactions.csv" and len(run.held_out) == 5
    )  # no held-out target, nor anything after it, was trained on
    for example in run.held_out:
        assert model.sequences[example.user] == run.log.sequences[example.user][: example.extra["position"]]
    assert model.num_interactions == sum(map(len, run.log.sequences.values())) - len(run.held_out)

    ranker = Ranker.from_pretrained(run_dir)
    expected = ranker.rank_batch(requests, retriever=model.score_history, top_m=5)
    assert [[(entry["item"], entry["score"]) for entry in row["ranking"]] for row in rows] == expected
    for request, row, seen in zip(requests[:2], rows, ({"m1", "m2", "m3"}, {"m7", "m9"})):
        items = [entry["item"] for entry in row["ranking"]]
        assert len(items) == len(set(items)) == 5
        assert not set(items) & seen and set(items) <= set(ranker.titles)
        # SASRec's top 5 unseen items after this history: none left out scores higher than one proposed
        left_out = sorted(set(ranker.titles) - seen - set(items))
        retrieved = model.score_history(sorted(seen), items + left_out)
        assert min(retrieved[:5]) >= max(retrieved[5:])
        assert [entry["score"] for entry in row["ranking"]] == sorted(ranker.scores(request["history"], items),
                                                                      reverse=True)  # fmt: skip
    assert [(entry["item"], entry["score"]) for entry in rows[2]["ranking"]] == ranker.rank(["m1"], ["m3", "m4"])


def test_bpr_and_a_run_without_its_log_are_refused_in_one_line(run_dir, tmp_path, capsys):
    source = write_requests(tmp_path / "requests.jsonl", [{"history": ["m1"]}])
    target = tmp_path / "ranked.jsonl"
    assert rank(run_dir, source, target, "--retriever", "bpr") == 2
    assert one_line_error(capsys).startswith(
        "argument --retriever: invalid choice: 'bpr' (choose from 'popular', 'sasrec', 'gru4rec')"
    )
    # no split.json: nothing records the log the run was made from
    bare = Path(shutil.copytree(run_dir, tmp_path / "bare"))
    (bare / "split.json").unlink()
    assert rank(bare, source, target, "--retriever", "gru4rec") == 2
    assert one_line_error(capsys) == (
        f"{bare} has no split.json: it records the interaction log the run was made from, which a classic "
        "retriever is fitted on"
    )
    # a split.json whose log has moved away
    moved = Path(shutil.copytree(run_dir, tmp_path / "moved"))
    record = json.loads((moved / "split.json").read_text())
    record["data"]["interactions"] = str(tmp_path / "gone.csv")
    (moved / "split.json").write_text(json.dumps(record))
    assert rank(moved, source, target, "--retriever", "sasrec") == 2
    assert one_line_error(capsys) == (
        f"the interaction log {moved / 'split.json'} records cannot be loaded: No such file: {tmp_path / 'gone.csv'}"
    )
    # the log is read: the ranking is never written over it
    interactions = load_run_log(run_dir).inputs
    log_file = next(path for path, flag in interactions.items() if flag == "--interactions")
    assert rank(run_dir, source, log_file, "--retriever", "sasrec") == 2
    assert one_line_error(capsys).endswith("which this command reads; write the ranking to another file")
    assert not target.exists()
