"""`python -m benchmarks.quality.seeds`: the main comparison per training seed, from saved runs in two folders."""

import json

import pytest

from benchmarks.quality import seeds as quality_seeds
from benchmarks.quality.config import REGIMES


def write_seed(folder, seed, hits_by_method, users=4):
    """A seed's candidates and one run per method; the target (index 0) ranks first for the first `hits` users."""
    seed_dir = folder / "runs" / f"seed{seed}"
    seed_dir.mkdir(parents=True)
    rows = [{"user": f"u{seed}-{i}", "target": f"t{i}", "target_index": 0} for i in range(users)]
    (seed_dir / "candidates.json").write_text(json.dumps({regime: rows for regime in REGIMES}))
    for method, hits in hits_by_method.items():
        scores = [[1.0, 0.0, -1.0] if i < hits else [-1.0, 0.0, 1.0] for i in range(users)]
        run = {"seed": seed, "method": method, "scores": {regime: {"sum": scores} for regime in REGIMES}}
        (seed_dir / f"{method}.json").write_text(json.dumps(run))


def test_per_seed_means_their_spread_and_the_pooled_difference(tmp_path):
    main, more = tmp_path / "main", tmp_path / "more"
    write_seed(main, 0, {"popular": 1, "dmpo-k4": 3})
    write_seed(main, 1, {"popular": 2, "dmpo-k4": 2})
    write_seed(more, 2, {"popular": 0, "dmpo-k4": 4})
    result = quality_seeds.summary([main, more], ("popular", "dmpo-k4"))
    row = result["rows"]["dmpo-k4"]["uniform"]["hit_ratio@1"]
    assert result["seeds"] == [0, 1, 2]
    assert row["per_seed"] == {0: 0.75, 1: 0.5, 2: 1.0}
    assert (row["lowest"], row["highest"], row["users"]) == (0.5, 1.0, 12)
    assert row["mean_of_seeds"] == pytest.approx(0.75)
    difference = result["differences"]["popular"]["uniform"]["hit_ratio@1"]
    assert difference["pooled"][0] == pytest.approx((9 - 3) / 12)
    assert difference["per_seed"][1][0] == pytest.approx(0.0)
    text = quality_seeds.markdown(result)
    assert "| dmpo-k4 | 0.750 | 0.500 | 1.000 | 0.750 [0.500, 1.000] |" in text


def test_a_seed_in_two_folders_or_a_method_missing_a_seed_is_refused(tmp_path):
    write_seed(tmp_path / "a", 0, {"popular": 1, "dmpo-k4": 3})
    write_seed(tmp_path / "b", 0, {"popular": 1, "dmpo-k4": 3})
    with pytest.raises(SystemExit, match="seed 0 of 'popular' is in more than one folder"):
        quality_seeds.summary([tmp_path / "a", tmp_path / "b"], ("popular", "dmpo-k4"))
    write_seed(tmp_path / "c", 1, {"popular": 1, "dmpo-k4": 2})
    write_seed(tmp_path / "c", 3, {"popular": 1})
    with pytest.raises(SystemExit, match=r"'dmpo-k4' ran seeds \[0, 1\], 'popular' ran \[0, 1, 3\]"):
        quality_seeds.summary([tmp_path / "a", tmp_path / "c"], ("popular", "dmpo-k4"))
