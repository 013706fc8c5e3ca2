"""`Ranker` and `dmpo-trl rank` on a run the recipe saved (tiny model): the evaluator's scores, also from the shell."""

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import Ranker, ranker_file, ranking
from dmpo_trl.cli import main
from dmpo_trl.ranking import MAX_REQUEST_BYTES, RankRequestError, read_requests
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


def test_recommend_retrieves_from_the_catalogue_then_reranks(lora_run):
    ranker = Ranker.from_pretrained(lora_run[2])
    number = {item: int(item[1:]) for item in ranker.titles}

    def by_number(history, items):  # a retriever with distinct scores: lower item numbers first
        assert set(history) == {"m1", "m2"} and not set(items) & set(history)
        return [-number[i] for i in items]

    recommended = ranker.recommend(["m1", "Heat 2"], retriever=by_number, top_m=5)
    proposed = sorted((i for i in ranker.titles if i not in {"m1", "m2"}), key=number.get)[:5]
    assert sorted(i for i, _ in recommended) == sorted(proposed)
    assert [s for _, s in recommended] == sorted(ranker.scores(["m1", "m2"], proposed), reverse=True)
    retriever_order = ranker.recommend(["m1", "m2"], retriever=by_number, top_m=5, fusion_weight=1e6)
    assert [i for i, _ in retriever_order] == proposed
    with pytest.raises(ValueError, match="needs the interaction counts"):
        ranker.recommend(["m1"], retriever="popular")
    with pytest.raises(ValueError, match="top_m must be at least 1"):
        ranker.recommend(["m1"], retriever=by_number, top_m=0)


def test_bad_requests_name_the_request_and_field(lora_run, caplog):
    ranker = Ranker.from_pretrained(lora_run[2])
    with pytest.raises(RankRequestError, match=r"request 1: `candidates` is missing"):
        ranker.rank_batch([{"history": ["m1"], "candidates": ["m2"]}, {"history": ["m1"]}])
    with pytest.raises(RankRequestError, match=r"`history` must be a non-empty list"):
        ranker.rank([], ["m2"])
    with pytest.raises(RankRequestError, match=r"`candidates\[1\]` repeats 'Heat 2', given as `candidates\[0\]`"):
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
    # the spellings every command shares (--model_name_or_path, --input_file, --output_file) mean the same
    again = tmp_path / "again.jsonl"
    flags = ["--model_name_or_path", str(output_dir), "--input_file", str(source), "--output_file", str(again)]
    assert main(["rank", *flags, "--no_show_progress"]) == 0
    assert again.read_text() == target.read_text()
    assert main(["rank", *flags[:-1], str(tmp_path)]) == 2  # a refusal names the flag as it was written
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--output_file {tmp_path} is a folder; give the path of the file to write")
    )


def test_rank_command_user_errors_are_one_line_and_exit_2(lora_run, tmp_path, capsys):
    source = tmp_path / "requests.jsonl"
    source.write_text('{"history": ["m1"], "candidates": ["m2"]}\n{"history": ["m1"]}\n')
    args = ["rank", "--model", str(lora_run[2]), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"dmpo-trl rank: error: {source} line 2: `candidates` is missing"
    source.write_text('{"history": ["m1"], "candidates": "m2"}\n')
    assert main(args) == 2
    assert f"{source} line 1: `candidates` must be a non-empty list" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Ranker.from_pretrained(tmp_path / "missing")
    args[2] = str(tmp_path)  # a folder without ranker.json
    assert main(args) == 2
    assert "holds no ranker.json" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- bad inputs: refused with one clear line, before the model loads -------------------------------------------


def rank_error(capsys, model, source, target) -> str:
    """Run `dmpo-trl rank`, which must refuse: exit status 2 and one line on stderr, returned without its prefix."""
    assert main(["rank", "--model", str(model), "--input", str(source), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dmpo-trl rank: error: "), err
    return err.strip().removeprefix("dmpo-trl rank: error: ")


@pytest.fixture
def model_copy(lora_run, tmp_path):
    """A copy of the LoRA run's folder, to break."""
    return Path(shutil.copytree(lora_run[2], tmp_path / "model"))


@pytest.fixture
def requests_file(tmp_path):
    source = tmp_path / "requests.jsonl"
    source.write_text('{"history": ["m1"], "candidates": ["m2", "m3"]}\n')
    return source


def test_items_outside_the_catalogue_rank_only_as_free_text(lora_run):
    ranker = Ranker.from_pretrained(lora_run[2])
    for bad, problem in [
        (None, "`candidates[1]` is null"),
        ("", "`candidates[1]` is an empty string"),
        ("  ", "`candidates[1]` is blank"),
        ("m99", "`candidates[1]` 'm99' is not in the catalogue (no such id or title); free text is {\"title\""),
        (1.5, "`candidates[1]` must be an item id or title (a string), got float: '1.5'"),
        ({"name": "Heat 3"}, '`candidates[1]` has keys [\'name\']; free text is {"title": "..."}'),
        ({"title": " "}, "`candidates[1].title` must be a title (a non-blank string), got str: ' '"),
    ]:
        with pytest.raises(RankRequestError) as caught:
            ranker.rank(["m1"], ["m2", bad])
        assert str(caught.value).startswith(f"request: {problem}"), caught.value
    with pytest.raises(RankRequestError, match=r"^request: `history\[1\]` 'Heat 99' is not in the catalogue"):
        ranker.rank(["m1", "Heat 99"], ["m2"])
    with pytest.raises(RankRequestError, match=r"^request 1: `history\[0\]` is null"):
        ranker.rank_batch([{"history": ["m1"], "candidates": ["m2"]}, {"history": [None], "candidates": ["m2"]}])
    # free text, said so: scored as the title it gives, with the prior of the catalogue item of that title if any
    free = [{"title": "Heat 3"}, {"title": "A film of 2031"}]
    # the same title in a batch padded to another length: equal up to float rounding
    assert ranker.scores([{"title": "Heat 1"}], free)[0] == pytest.approx(ranker.scores(["m1"], ["m3", "m4"])[0])
    assert sorted(c["title"] for c, _ in ranker.rank(["m1"], free)) == ["A film of 2031", "Heat 3"]


def test_rank_command_refuses_unknown_items_before_loading_the_model(lora_run, model_copy, tmp_path, capsys):
    config = json.loads((model_copy / "ranker.json").read_text())
    config["base_model"]["model_name_or_path"] = str(tmp_path / "no-such-base")  # loading would fail: it never runs
    (model_copy / "ranker.json").write_text(json.dumps(config))
    source = tmp_path / "requests.jsonl"
    source.write_text(
        '{"history": ["m1"], "candidates": ["m2"]}\n\n{"history": ["m1"], "candidates": ["m2", "m99"]}\n'
    )
    assert rank_error(capsys, model_copy, source, tmp_path / "out.jsonl") == (
        f"{source} line 3: `candidates[1]` 'm99' is not in the catalogue (no such id or title); "
        'free text is {"title": "..."}'
    )
    source.write_text('{"history": ["m1"], "candidates": ["m2", {"title": "A film of 2031"}]}\n')
    assert (
        main(["rank", "--model", str(lora_run[2]), "--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 0
    )
    ranked = json.loads((tmp_path / "o.jsonl").read_text())["ranking"]
    assert [r["item"] for r in ranked if r["title"] == "A film of 2031"] == [{"title": "A film of 2031"}]


def test_rank_command_never_writes_over_what_it_reads(lora_run, requests_file, tmp_path, capsys, monkeypatch):
    model = lora_run[2]
    before = requests_file.read_text()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.jsonl").symlink_to(requests_file)
    for output in ["./requests.jsonl", str(requests_file), "link.jsonl"]:
        message = rank_error(capsys, model, "requests.jsonl", output)
        assert (
            message
            == f"--output {output} is requests.jsonl, which this command reads; write the ranking to another file"
        )
    base = Path(json.loads((model / "ranker.json").read_text())["base_model"]["model_name_or_path"])
    for path in [model / "ranker.json", model / "adapter_model.safetensors", base / "model.safetensors"]:
        message = rank_error(capsys, model, requests_file, path)
        assert message.startswith(f"--output {path} is {path}, which this command reads")
    assert requests_file.read_text() == before and json.loads((model / "ranker.json").read_text())["format"] == 1


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"titles"', None, "not valid JSON (Unterminated string starting at: line "),  # cut short in a key
        ('"format": 1', '"format": 2', "`format` is 2; this version of dmpo-trl reads format 1"),
        ('"batch_size"', '"batch"', "`prompt.batch` is not a prompt setting (prompt_style, conversational, "),
        ('"titles"', '"title"', "`catalogue.titles` is missing"),
        ('"max_history": 3', '"max_history": "3"', "`prompt.max_history` must be int | null, got str: '3'"),
        ('"conversational": true', '"conversational": 1', "`prompt.conversational` must be bool, got int: '1'"),
    ],
)
def test_a_damaged_ranker_json_is_refused_naming_the_field(
    model_copy, requests_file, tmp_path, capsys, old, new, message
):
    path = model_copy / "ranker.json"
    text = json.dumps(json.loads(path.read_text()), indent=1)
    path.write_text(text[: text.index(old) + 4] if new is None else text.replace(old, new))
    with pytest.raises(ValueError) as caught:
        Ranker.from_pretrained(model_copy)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value
    assert rank_error(capsys, model_copy, requests_file, tmp_path / "out.jsonl").startswith(f"{path}: {message}")


def test_ranker_json_without_a_format_is_format_1(model_copy):
    path = model_copy / "ranker.json"
    config = json.loads(path.read_text())
    assert config.pop("format") == 1  # save_ranker_config writes it
    path.write_text(json.dumps(config))
    assert Ranker.from_pretrained(model_copy).titles == config["catalogue"]["titles"]


def test_a_folder_without_weights_is_refused_before_loading(
    model_copy, tiny_model_dir, requests_file, tmp_path, capsys
):
    config = json.loads((model_copy / "ranker.json").read_text())
    config["base_model"]["model_name_or_path"] = None  # the embedded default model: no reason to refuse
    (model_copy / "ranker.json").write_text(json.dumps(config))
    ranker_file._check_weights(model_copy)
    (model_copy / "adapter_model.safetensors").unlink()
    expected = (
        f"{model_copy}: adapter_config.json without the adapter's weights "
        "(adapter_model.safetensors or adapter_model.bin)"
    )
    with pytest.raises(ValueError, match="adapter_config.json without"):
        Ranker.from_pretrained(model_copy)
    assert rank_error(capsys, model_copy, requests_file, tmp_path / "out.jsonl") == expected
    (model_copy / "adapter_config.json").unlink()
    assert rank_error(capsys, model_copy, requests_file, tmp_path / "out.jsonl") == (
        f"{model_copy}: neither a model (config.json) nor a LoRA adapter (adapter_config.json)"
    )
    shutil.copy(Path(tiny_model_dir) / "config.json", model_copy)
    assert rank_error(capsys, model_copy, requests_file, tmp_path / "out.jsonl").startswith(
        f"{model_copy}: config.json without the model's weights (model.safetensors, "
    )


def test_files_and_folders_in_each_others_place_are_refused(lora_run, requests_file, tmp_path, capsys):
    model = lora_run[2]
    assert rank_error(capsys, model, tmp_path, tmp_path / "out.jsonl") == (
        f"{tmp_path} is a folder, not a JSON-lines file of requests"
    )
    assert rank_error(capsys, model, requests_file, tmp_path) == (
        f"--output {tmp_path} is a folder; give the path of the file to write"
    )
    assert rank_error(capsys, model, requests_file, requests_file / "out.jsonl") == (
        f"--output {requests_file / 'out.jsonl'}: {requests_file} is a file, not a folder"
    )
    ranker_json = model / "ranker.json"
    assert rank_error(capsys, ranker_json, requests_file, tmp_path / "out.jsonl") == (
        f"{ranker_json} is a file, not a folder saved by `dmpo-trl train` (its model and ranker.json)"
    )
    with pytest.raises(ValueError, match="is a file, not a folder"):
        Ranker.from_pretrained(ranker_json)
    assert not (tmp_path / "out.jsonl").exists()


def test_request_lines_are_bounded_and_numbered(lora_run, tmp_path, capsys):
    source = tmp_path / "requests.jsonl"
    good = '{"history": ["m1"], "candidates": ["m2"]}\n'
    long = '{"history": ["m1"], "candidates": ["' + "x" * MAX_REQUEST_BYTES + '"]}\n'
    source.write_text(good + long + good)
    assert rank_error(capsys, lora_run[2], source, tmp_path / "out.jsonl") == (
        f"{source} line 2: longer than 1048576 bytes (MAX_REQUEST_BYTES, 1 MiB); a request is one history and its "
        "candidates"
    )
    source.write_text(good + "x" * (20 * MAX_REQUEST_BYTES) + "\n")  # read a limit's worth, no more
    tracemalloc.start()
    with pytest.raises(RankRequestError, match="line 2: longer than"):
        read_requests(source, {"m1": "Heat 1", "m2": "Heat 2"})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MAX_REQUEST_BYTES
    source.write_text(good + '{"history": ["m1"], "candidates": ["m2"]\n')
    assert rank_error(capsys, lora_run[2], source, tmp_path / "out.jsonl") == (
        f"{source} line 2: not JSON (Expecting ',' delimiter, column 41)"
    )
    source.write_text(good + '{"candidates": ["m2"]}\n')
    assert rank_error(capsys, lora_run[2], source, tmp_path / "out.jsonl") == f"{source} line 2: `history` is missing"
    source.write_text(good + '{"history": ["m1"], "candidates": ["m2"], "ranking": []}\n')
    assert rank_error(capsys, lora_run[2], source, tmp_path / "out.jsonl") == (
        f"{source} line 2: `ranking` is the field `dmpo-trl rank` writes; rename it"
    )


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_rank_output_is_written_atomically_with_the_umasks_mode(lora_run, requests_file, tmp_path, umask):
    target = tmp_path / "out" / "ranked.jsonl"
    target.parent.mkdir()
    target.write_text("an earlier ranking\n")
    previous = os.umask(umask)
    try:
        assert main(["rank", "--model", str(lora_run[2]), "--input", str(requests_file), "--output", str(target)]) == 0
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [path.name for path in target.parent.iterdir()] == ["ranked.jsonl"]  # no temporary file left
    assert json.loads(target.read_text())["ranking"][0]["item"] in ("m2", "m3")
