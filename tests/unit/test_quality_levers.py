"""`python -m benchmarks.quality.levers`: each lever paired with the main run on the seeds its folder holds."""

import pytest

from benchmarks.quality import levers as quality_levers
from tests.unit.test_quality_seeds import write_seed


REFERENCES = [("most popular", "popular")]


def test_each_lever_is_paired_on_the_seeds_its_folder_holds(tmp_path):
    write_seed(tmp_path / "main", 0, {"popular": 1})
    write_seed(tmp_path / "main", 1, {"popular": 1})
    write_seed(tmp_path / "main2", 2, {"popular": 4})
    write_seed(tmp_path / "two", 0, {"lever": 3})
    write_seed(tmp_path / "two", 1, {"lever": 3})
    write_seed(tmp_path / "three", 0, {"lever": 3})
    write_seed(tmp_path / "three", 1, {"lever": 3})
    write_seed(tmp_path / "three", 2, {"lever": 2})
    write_seed(tmp_path / "one", 0, {"lever": 4})
    levers = [
        quality_levers.Lever("on two seeds", "two", "lever", ""),
        quality_levers.Lever("on three seeds", "three", "lever", ""),
        quality_levers.Lever("seed 0 only", "one", "lever", ""),
    ]
    text = quality_levers.table(tmp_path, ("main", "main2"), levers, REFERENCES)
    two = next(line for line in text.splitlines() if line.startswith("| on two seeds |"))
    three = next(line for line in text.splitlines() if line.startswith("| on three seeds |"))
    assert "| 0, 1 (8) |" in two and "| 0.500 [" in two  # 6 of 8 against popular's 2 of 8
    assert "| 0, 1, 2 (12) |" in three and "| 0.167 [" in three  # 8 of 12 against 6 of 12
    assert "Not run yet: seed 0 only (`one:lever`)" in text


def test_a_lever_on_other_candidates_is_refused(tmp_path):
    write_seed(tmp_path / "main", 0, {"popular": 1})
    write_seed(tmp_path / "other", 0, {"lever": 1}, users=3)
    with pytest.raises(SystemExit, match="other users or candidates"):
        quality_levers.table(tmp_path, "main", [quality_levers.Lever("x", "other", "lever", "")], REFERENCES)
