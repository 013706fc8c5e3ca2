import json

import pytest

from benchmarks import few_shot_seeds


def row(value: float) -> dict:
    metric = {
        "mean_of_seeds": value,
        "lowest": value - 0.01,
        "highest": value + 0.01,
        "pooled": [value] * 3,
        "users": 6,
    }
    return {regime: {"hit_ratio@1": metric, "ndcg@5": metric} for regime in few_shot_seeds.REGIMES}


def difference(value: float) -> dict:
    metric = {"pooled": [value, value - 0.1, value + 0.1], "per_seed": {}}
    return {regime: {"hit_ratio@1": metric, "ndcg@5": metric} for regime in few_shot_seeds.REGIMES}


def write_report(folder, stem, sasrec, seeds=(0, 1, 2)):
    report = {
        "seeds": list(seeds),
        "rows": {"dmpo-k4": row(0.2), "sasrec": row(sasrec)},
        "differences": {"sasrec": difference(0.2 - sasrec)},
    }
    (folder / f"{stem}.json").write_text(json.dumps(report))


def test_the_curve_takes_each_size_from_its_own_report(tmp_path):
    for stem, sasrec in (("seeds", 0.4), ("seeds-n200", 0.45), ("seeds-nall", 0.5)):
        write_report(tmp_path, stem, sasrec)
    text = few_shot_seeds.main(["--dir", str(tmp_path)])
    assert "| sasrec | 200 | 0.450 [0.440, 0.460] |" in text
    assert "| sasrec | all | 0.500 [0.490, 0.510] |" in text
    assert "-0.300 [-0.400, -0.200]" in text  # DMPO K=4 minus SASRec at N = all, pooled
    saved = json.loads((tmp_path / "sample_efficiency_seeds.json").read_text())
    assert list(saved["models"]["sasrec"]) == ["100", "200", "all"]
    assert (tmp_path / "sample_efficiency_seeds.png").stat().st_size > 0


def test_reports_on_different_seeds_are_refused(tmp_path):
    write_report(tmp_path, "seeds", 0.4)
    write_report(tmp_path, "seeds-n200", 0.45, seeds=(0, 1))
    with pytest.raises(SystemExit, match="different seeds"):
        few_shot_seeds.load(tmp_path)
