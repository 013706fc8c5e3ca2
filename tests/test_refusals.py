"""Inputs that `train` and the split readers refuse up front: a split.json that is not one, a push without the Hub."""

import json

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


# --- a split.json that is not one ---------------------------------------------------------------------------------


def _first_negative(record, user):
    return next(i for i, item in enumerate(record["candidates"][user]) if item != record["targets"][user])


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
