"""Inputs that `prepare`, `train` and `evaluate` refuse up front, each with one line and exit status 2: an output over
one of the command's own inputs, a used output folder, a bad split.json, a folder for a file (or the reverse), a push
without the Hub, an adapter folder without its weights."""

import json
import shutil

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl.cli import main
from dmpo_trl.recipe import check_split, load_interaction_log, load_split, saved_test_users, split_data_arguments


def run_cli(capsys, *argv):
    """(exit code, stderr lines) of `dmpo-trl argv` run in this process."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def refused(capsys, *argv) -> str:
    """The one stderr line of a command that must end with exit status 2."""
    code, err = run_cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and ": error: " in err[0], (code, err)
    return err[0]


@pytest.fixture(scope="module")
def log_files(tmp_path_factory):
    return write_tiny_log(tmp_path_factory.mktemp("log"))


def prepare_flags(log_files, *extra):
    interactions, items = log_files
    return [
        "prepare", "--interactions", interactions, "--items", items, "--num_train_users", "6", "--num_valid_users",
        "0", "--num_test_users", "5", "--num_candidates", "4", "--num_negatives", "2", "--no_conversational", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(log_files, tmp_path_factory):
    """A prepared data folder (5 test users, 4 candidates each)."""
    folder = tmp_path_factory.mktemp("prepared") / "data"
    assert main(prepare_flags(log_files, "--output_dir", str(folder))) == 0
    return folder


@pytest.fixture(scope="module")
def trained(log_files, tiny_model_dir, tmp_path_factory):
    """A trained LoRA run: adapter, ranker.json, split.json, results."""
    out = tmp_path_factory.mktemp("trained") / "out"
    assert main(["train", *tiny_flags(log_files, tiny_model_dir, out, "--use_peft")]) == 0
    return out


# --- 1. evaluate never writes over a file it reads ----------------------------------------------------------------


def test_evaluate_refuses_a_results_file_it_reads(prepared, trained, log_files, tmp_path, capsys):
    split = prepared / "split.json"
    before = split.read_bytes()
    line = refused(capsys, "evaluate", "--baseline", "popular", "--split_file", split, "--results_file", split)
    assert line == (
        f"dmpo-trl evaluate: error: --results_file {split} would write over the split file, which this command "
        "reads: write elsewhere"
    )
    link = tmp_path / "link.json"  # another name for the same file
    link.symlink_to(split)
    assert "the split file" in refused(
        capsys, "evaluate", "--baseline", "popular", "--split_file", split, "--results_file", link
    )
    interactions, items = log_files
    data = ["--interactions", interactions, "--items", items, "--num_test_users", "5", "--num_candidates", "4"]
    assert "would write over --items" in refused(capsys, "evaluate", "--baseline", "random", *data, "--output", items)
    assert split.read_bytes() == before
    for name in ("split.json", "ranker.json", "adapter_model.safetensors", "adapter_config.json"):
        saved = (trained / name).read_bytes()
        line = refused(capsys, "evaluate", "--model", trained, "--results_file", trained / name)
        assert f"would write over the model's {name}, which this command reads" in line
        assert (trained / name).read_bytes() == saved
    # a results file beside the model is not one of its files: written, and written again by a rerun
    for _ in range(2):
        assert (
            main(["evaluate", "--model", str(trained), "--no_show_progress", "--output", str(trained / "e.json")]) == 0
        )
    assert json.loads((trained / "e.json").read_text())["users"] == load_split(trained)["test"]


# --- 2. prepare into a used folder, or into its own data folder ---------------------------------------------------


def test_prepare_refuses_a_used_output_dir(prepared, trained, log_files, capsys):
    split = load_split(trained)
    line = refused(capsys, *prepare_flags(log_files, "--output_dir", trained))
    assert line.startswith(f"dmpo-trl prepare: error: --output_dir {trained} already holds files (README.md, ")
    assert line.endswith("pass --overwrite_output_dir to write there anyway")
    assert load_split(trained) == split  # the trained adapter keeps the split it was ranked on
    assert "already holds files (dataset_dict.json, split.json" in refused(
        capsys, *prepare_flags(log_files, "--output_dir", prepared)
    )
    assert main(prepare_flags(log_files, "--output_dir", str(prepared), "--overwrite_output_dir")) == 0
    folder = prepared.parent / "log"  # prepare's own data folder, even with --overwrite_output_dir
    folder.mkdir()
    line = refused(capsys, *prepare_flags(write_tiny_log(folder), "--overwrite_output_dir", "--output_dir", folder))
    assert line == (
        f"dmpo-trl prepare: error: --output_dir {folder} holds --interactions {folder}/interactions.csv, which this "
        "command reads: write elsewhere"
    )


# --- 3. a split.json that is not one ------------------------------------------------------------------------------


def _first_negative(record, user):
    return next(i for i, item in enumerate(record["candidates"][user]) if item != record["targets"][user])


def _rename_test_user(record):
    record["candidates"]["zz"] = record["candidates"].pop(record["test"][3])
    record["test"][3] = "zz"


def _breakages(record):
    user = record["test"][0]
    items = record["candidates"][user]
    k = _first_negative(record, user)
    other = next(i for i in range(len(items)) if i != k)
    target = items.index(record["targets"][user])
    outside = next(f"m{i}" for i in range(100) if f"m{i}" not in items)
    return {
        "no test users": (lambda r: r.update(test=[]), "test: no test users to rank"),
        "test not a list": (lambda r: r.update(test=user), f"test: {user!r} is not a list"),
        "seed a string": (lambda r: r.update(seed="0"), "seed: '0' is not an integer"),
        "user an int": (lambda r: r["test"].__setitem__(1, 7), "test[1]: 7 is not a user id (a non-empty string)"),
        "unknown user": (_rename_test_user, "test[3]: 'zz' is not a user of interactions"),
        "repeated user": (lambda r: r["test"].__setitem__(2, user), f"test[2]: {user!r} is repeated"),
        "trained user": (
            lambda r: r["train"].append(r["test"][4]),
            f"test[4]: {record['test'][4]!r} is also a training user",
        ),
        "unknown item": (
            lambda r: r["candidates"][user].__setitem__(k, "xyz"),
            f"candidates[\"{user}\"][{k}]: 'xyz' is not an item of interactions",
        ),
        "repeated item": (
            lambda r: r["candidates"][user].__setitem__(max(k, other), items[min(k, other)]),
            f'candidates["{user}"][{max(k, other)}]: {items[min(k, other)]!r} is repeated',
        ),
        "no target": (
            lambda r: r["candidates"][user].__setitem__(target, outside),
            f'candidates["{user}"]: the target {record["targets"][user]!r} is not among them',
        ),
        "short list": (
            lambda r: r["candidates"][user].pop(k),
            f'candidates["{user}"]: 3 items, but data.num_candidates is 4',
        ),
        "no candidates": (lambda r: r["candidates"].pop(user), f'candidates["{user}"]: test user {user!r} has none'),
        "bad data": (
            lambda r: r["data"].update(num_candidates=1),
            "data: num_candidates must be >= 2 (the target and a negative), got 1",
        ),
    }


def test_a_bad_split_file_is_one_line_naming_the_file_and_field(prepared, tmp_path, capsys):
    record = load_split(prepared)
    split = tmp_path / "split.json"
    for name, (breaks, problem) in _breakages(record).items():
        broken = json.loads(json.dumps(record))
        breaks(broken)
        split.write_text(json.dumps(broken))
        line = refused(capsys, "evaluate", "--baseline", "popular", "--split_file", split)
        assert line == f"dmpo-trl evaluate: error: {split}: {problem}", name
    split.write_text(json.dumps(record)[:200])  # cut short
    assert f"error: {split}: not JSON (" in refused(capsys, "evaluate", "--baseline", "popular", "--split_file", split)


def test_load_split_and_saved_test_users_raise_value_errors(prepared, tmp_path):
    record = load_split(prepared)
    log = load_interaction_log(split_data_arguments(record))
    examples, candidates = saved_test_users(record, log, prepared / "split.json")
    assert [e.user for e in examples] == record["test"] and all(e.target in c for e, c in zip(examples, candidates))
    user = record["test"][0]
    broken = json.loads(json.dumps(record))
    broken["candidates"][user][_first_negative(record, user)] = "xyz"
    check_split(broken, "s.json")  # the structure is fine; the item is checked against the log
    with pytest.raises(ValueError, match=r"^s\.json: candidates\[\"u\d+\"\]\[\d\]: 'xyz' is not an item of interact"):
        saved_test_users(broken, log, "s.json")
    (tmp_path / "split.json").write_text(json.dumps({**record, "test": "nobody"}))
    with pytest.raises(ValueError, match="split.json: test: 'nobody' is not a list"):
        load_split(tmp_path)


# --- 4. a folder where a file goes, a file where a folder goes ----------------------------------------------------


def test_a_folder_for_a_file_and_a_file_for_a_folder(prepared, log_files, tiny_model_dir, tmp_path, capsys):
    split = prepared / "split.json"
    line = refused(capsys, "evaluate", "--baseline", "popular", "--split_file", split, "--results_file", tmp_path)
    assert line == f"dmpo-trl evaluate: error: --results_file {tmp_path}: a folder; name the file to write"
    line = refused(capsys, "evaluate", "--baseline", "popular", "--split_file", tmp_path)
    assert line == f"dmpo-trl evaluate: error: {tmp_path}: a folder without a split.json"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes\n")
    line = refused(capsys, *prepare_flags(log_files, "--output_dir", a_file))
    assert line == f"dmpo-trl prepare: error: --output_dir {a_file}: a file, not a folder"
    line = refused(capsys, "train", *tiny_flags(log_files, tiny_model_dir, a_file))
    assert line == f"dmpo-trl train: error: --output_dir {a_file}: a file, not a folder"
    line = refused(capsys, "evaluate", "--split_file", split, "--model_name_or_path", a_file)
    assert line == (
        f"dmpo-trl evaluate: error: --model_name_or_path {a_file}: a file; give a model folder, a .gguf file or a "
        "Hub id"
    )
    assert a_file.read_text() == "notes\n"


# --- 5. push_to_hub without the Hub -------------------------------------------------------------------------------


def test_push_to_hub_without_the_hub_is_refused_before_anything_runs(log_files, tiny_model_dir, tmp_path, capsys):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # tests run offline (conftest)
    out = tmp_path / "out"
    line = refused(capsys, "train", *tiny_flags(log_files, tiny_model_dir, out, "--push_to_hub"))
    assert line == (
        "dmpo-trl train: error: --push_to_hub needs the Hub, but HF_HUB_OFFLINE is set: unset it, or train without "
        "--push_to_hub and upload output_dir later (`hf upload`)"
    )
    assert not out.exists()


def test_push_to_hub_with_no_connection_is_refused_before_anything_runs(
    log_files, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "out"
    flags = tiny_flags(log_files, tiny_model_dir, out, "--push_to_hub", "--hub_token", "hf_not_a_token")
    line = refused(capsys, "train", *flags)
    assert line.startswith("dmpo-trl train: error: --push_to_hub: the Hub did not accept a login check (")
    assert not out.exists()


# --- 6. an adapter folder without its weights ---------------------------------------------------------------------


def test_an_adapter_folder_without_its_weights(trained, tmp_path, capsys, monkeypatch):
    from dmpo_trl import models

    folder = tmp_path / "adapter"
    shutil.copytree(trained, folder)
    (folder / "adapter_model.safetensors").unlink()
    loads = []
    monkeypatch.setattr(models, "load_adapter_model", lambda *a, **k: loads.append(a))
    line = refused(capsys, "evaluate", "--model_name_or_path", folder)
    assert line == (
        f"dmpo-trl evaluate: error: {folder}: adapter_config.json without the adapter weights "
        "(adapter_model.safetensors or adapter_model.bin)"
    )
    assert not loads  # refused before the base model loads
