"""`Ranker` and `dmpo-trl rank` on a run the recipe saved (tiny model): the evaluator's scores, also from the shell."""

import json

import pytest
from docstring_examples import run_docstring_examples
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import Ranker, ranking
from dmpo_trl.cli import main
from dmpo_trl.ranking import RankRequestError
from dmpo_trl.recipe import load_interaction_log, parse_recipe_arguments, run_recipe, split_users


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    """A LoRA run of the recipe: its arguments, its result and its output folder."""
    folder = tmp_path_factory.mktemp("ranking")
    log_files = write_tiny_log(folder)
    args = parse_recipe_arguments(tiny_flags(log_files, tiny_model_dir, folder / "out", "--use_peft"))
    return args, run_recipe(*args, verbose=False), folder / "out"


def test_ranker_scores_equal_the_evaluators(lora_run):
    (data_args, training_args, _, _), result, output_dir = lora_run
    ranker = Ranker.from_pretrained(output_dir)
    assert ranker.prompt.max_history == 3 and ranker.prompt.conversational  # the tiny tokenizer has a chat template
    test = split_users(data_args, load_interaction_log(data_args), training_args.seed).test
    evaluated = result.results["dmpo (lora)"]["per_user"]
    assert len(evaluated) == len(test) == 5
    for example, user in zip(test, evaluated):
        assert example.user == user["user"]
        ranking = ranker.rank(list(example.history), user["candidates"])
        assert ranker.scores(list(example.history), user["candidates"]) == user["scores"]  # exactly
        assert sorted(c for c, _ in ranking) == sorted(user["candidates"])
        assert [s for _, s in ranking] == sorted(user["scores"], reverse=True)


def test_ranker_takes_titles_and_ids_alike(lora_run):
    ranker = Ranker.from_pretrained(lora_run[2])
    ids = ["m3", "m4", "m5"]
    by_id = ranker.rank(["m1", "m2"], ids)
    by_title = ranker.rank(["Heat 1", "Heat 2"], [ranker.title(i) for i in ids])
    assert [ranker.title(c) for c, _ in by_id] == [c for c, _ in by_title]
    assert [s for _, s in by_id] == [s for _, s in by_title]
    assert sorted(c for c, _ in by_id) == ids  # a permutation of the candidates, as given
    batch = ranker.rank_batch([{"history": ["m1", "m2"], "candidates": ids}, {"history": ["m1"], "candidates": ids}])
    assert batch[0] == by_id and len(batch[1]) == 3


def test_bad_requests_name_the_request_and_field(lora_run, caplog):
    ranker = Ranker.from_pretrained(lora_run[2])
    with pytest.raises(RankRequestError, match=r"request 1: missing field 'candidates'"):
        ranker.rank_batch([{"history": ["m1"], "candidates": ["m2"]}, {"history": ["m1"]}])
    with pytest.raises(RankRequestError, match=r"field 'history' must be a non-empty list"):
        ranker.rank([], ["m2"])
    with pytest.raises(RankRequestError, match=r"field 'candidates' lists 'Heat 2' more than once"):
        ranker.rank(["m1"], ["m2", "Heat 2"])
    with caplog.at_level("WARNING"):
        ranker.rank(["m1", "m2", "m3", "m4", "m5"], ["m6", "m7"])
    assert "kept the last 3 of 5 history items" in caplog.text and "2 earlier ones dropped" in caplog.text


def test_rank_command_writes_the_rankers_results(lora_run, tmp_path, capsys):
    output_dir = lora_run[2]
    requests = [
        {"user": "a", "history": ["m1", "m2"], "candidates": ["m3", "m4", "m5"]},
        {"user": "b", "history": ["Heat 7"], "candidates": ["Heat 8", "m9"]},
    ]
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in requests))
    target = tmp_path / "ranked.jsonl"
    assert main(["rank", "--model", str(output_dir), "--input", str(source), "--output", str(target)]) == 0
    ranked = [json.loads(line) for line in target.read_text().splitlines()]
    ranker = Ranker.from_pretrained(output_dir)
    for request, row in zip(requests, ranked):
        assert row["user"] == request["user"]
        expected = ranker.rank(request["history"], request["candidates"])
        assert [(r["item"], r["score"]) for r in row["ranking"]] == expected
        assert row["ranking"][0]["title"] == ranker.title(expected[0][0])
    assert "Ranked 2 requests" in capsys.readouterr().out


def test_rank_command_user_errors_are_one_line_and_exit_2(lora_run, tmp_path, capsys):
    source = tmp_path / "requests.jsonl"
    source.write_text('{"history": ["m1"], "candidates": ["m2"]}\n{"history": ["m1"]}\n')
    args = ["rank", "--model", str(lora_run[2]), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"dmpo-trl rank: error: {source} line 2: missing field 'candidates'"
    source.write_text('{"history": ["m1"], "candidates": "m2"}\n')
    assert main(args) == 2
    assert f"{source} line 1: field 'candidates' must be a non-empty list" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Ranker.from_pretrained(tmp_path / "missing")
    args[2] = str(tmp_path)  # a folder without ranker.json
    assert main(args) == 2
    assert "holds no ranker.json" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_full_finetuned_run_ranks_too(tiny_model_dir, tmp_path):
    log_files = write_tiny_log(tmp_path)
    args = parse_recipe_arguments(tiny_flags(log_files, tiny_model_dir, tmp_path / "out", "--no_evaluate_before"))
    result = run_recipe(*args, verbose=False)
    ranker = Ranker.from_pretrained(tmp_path / "out")
    assert not hasattr(ranker.model, "peft_config")
    test = split_users(args[0], load_interaction_log(args[0]), args[1].seed).test
    user = result.results["dmpo"]["per_user"][0]
    assert ranker.scores(list(test[0].history), user["candidates"]) == user["scores"]


def test_prompt_defaults_are_the_evaluators():
    from dmpo_trl.data import ANSWER_PREFIX

    assert ranking.PromptSettings().answer_prefix == ANSWER_PREFIX


def test_docstring_examples():
    assert run_docstring_examples(ranking) == 0


def test_rank_command_in_two_processes_equals_one(lora_run, tmp_path):
    """`torchrun --nproc_per_node 2 -m dmpo_trl.cli rank ...`: each process ranks its share, the first writes all."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    output_dir = lora_run[2]
    requests = [{"history": [f"m{k}"], "candidates": [f"m{k + 1}", f"m{k + 2}", "m9"]} for k in range(5)]
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in requests))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29535", "-m", "dmpo_trl.cli", "rank"]
    command += ["--model", str(output_dir), "--input", str(source), "--output", str(tmp_path / "two.jsonl")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        main(["rank", "--model", str(output_dir), "--input", str(source), "--output", str(tmp_path / "one.jsonl")])
        == 0
    )
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
