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


def write_ranked_seed(folder, seed, scores_by_method):
    """A seed whose candidate lists name their items (the prior reads them), target at index 0 for every user."""
    seed_dir = folder / "runs" / f"seed{seed}"
    seed_dir.mkdir(parents=True)
    users = len(next(iter(scores_by_method.values())))
    rows = [
        {"user": f"u{seed}-{i}", "target": "a", "target_index": 0, "candidates": ["a", "b", "c"]} for i in range(users)
    ]
    (seed_dir / "candidates.json").write_text(json.dumps({regime: rows for regime in REGIMES}))
    for method, scores in scores_by_method.items():
        key = "score" if method == "popular" else "sum"
        run = {"seed": seed, "method": method, "scores": {regime: {key: scores} for regime in REGIMES}}
        (seed_dir / f"{method}.json").write_text(json.dumps(run))


def test_the_prior_row_adds_w_log_count_to_the_reference_scores(tmp_path):
    # the model prefers "c" by 0.5 nats; "a" (the target) has 100 interactions, so the prior at w = 1 lifts it first
    write_ranked_seed(tmp_path / "s", 0, {"popular": [[100, 0, 0]] * 2, "dmpo-k4": [[0.0, -1.0, 0.5]] * 2})
    plain = quality_seeds.per_seed([tmp_path / "s"], "dmpo-k4")
    lifted = quality_seeds.per_seed([tmp_path / "s"], "dmpo-k4", prior=1.0)
    assert plain[0]["uniform"]["hit_ratio@1"].tolist() == [0.0, 0.0]
    assert lifted[0]["uniform"]["hit_ratio@1"].tolist() == [1.0, 1.0]
    assert quality_seeds.per_seed([tmp_path / "s"], "dmpo-k4", prior=0.1)[0]["uniform"]["hit_ratio@1"].sum() == 0


def test_classic_rows_read_the_chosen_setting_on_the_quality_seeds_candidates(tmp_path):
    write_ranked_seed(tmp_path / "q", 0, {"dmpo-k4": [[1.0, 0.0, 0.0]] * 2})
    write_ranked_seed(tmp_path / "q2", 2, {"dmpo-k4": [[0.0, 1.0, 0.0]] * 2})
    for folder, seed in ((tmp_path / "c", 0), (tmp_path / "c2", 2)):
        (folder / "runs" / f"seed{seed}").mkdir(parents=True)
        for setting, scores in (({"n": 1}, [[2.0, 1.0, 0.0]] * 2), ({"n": 2}, [[0.0, 1.0, 2.0]] * 2)):
            result = {"seed": seed, "setting": setting, "test": {r: {"score": scores} for r in REGIMES}}
            (folder / "runs" / f"seed{seed}" / f"sasrec__n{setting['n']}.json").write_text(json.dumps(result))
    (tmp_path / "c" / "classic.json").write_text(json.dumps({"selection": {"sasrec": {"chosen": {"n": 1}}}}))
    rows = quality_seeds.classic_per_seed(
        [tmp_path / "q", tmp_path / "q2"], [tmp_path / "c", tmp_path / "c2"], "sasrec"
    )
    assert sorted(rows) == [0, 2]
    assert rows[2]["uniform"]["hit_ratio@1"].tolist() == [1.0, 1.0]  # n = 1 ranks the target first; n = 2 would not
    result = quality_seeds.summary([tmp_path / "q", tmp_path / "q2"], ("dmpo-k4",), extra={"sasrec": rows})
    assert result["rows"]["sasrec"]["uniform"]["hit_ratio@1"]["per_seed"] == {0: 1.0, 2: 1.0}
    assert result["differences"]["sasrec"]["uniform"]["hit_ratio@1"]["per_seed"][2][0] == -1.0
    paired = quality_seeds.summary([tmp_path / "q", tmp_path / "q2"], ("dmpo-k4",), extra={"sasrec": rows},
                                   pairs=[("sasrec", "dmpo-k4")])  # fmt: skip
    assert paired["pairs"][0]["difference"]["uniform"]["hit_ratio@1"]["per_seed"][2][0] == 1.0
    assert "| sasrec minus dmpo-k4 | uniform | HR@1 |" in quality_seeds.markdown(paired)


def test_classic_size_reads_the_few_shot_curve_runs_at_their_own_chosen_setting(tmp_path):
    write_ranked_seed(tmp_path / "q", 0, {"dmpo-k4": [[1.0, 0.0, 0.0]] * 2})
    for folder, setting, scores in (
        ("seed0", {"n": 1}, [[2.0, 1.0, 0.0]] * 2),
        ("n200/seed0", {"n": 2}, [[0.0, 1.0, 2.0]] * 2),
    ):
        result = {"seed": 0, "setting": setting, "test": {r: {"score": scores} for r in REGIMES}}
        (tmp_path / "c" / "runs" / folder).mkdir(parents=True)
        (tmp_path / "c" / "runs" / folder / f"sasrec__n{setting['n']}.json").write_text(json.dumps(result))
    (tmp_path / "c" / "classic.json").write_text(json.dumps({"selection": {"sasrec": {"chosen": {"n": 1}}}}))
    curve = {"sizes": {"200": {"models": {"sasrec": {"setting": {"n": 2}}}}}}
    (tmp_path / "c" / "sample_efficiency.json").write_text(json.dumps(curve))
    assert quality_seeds.classic_choices(tmp_path / "c", "200") == {"sasrec": {"n": 2}}
    at_100 = quality_seeds.classic_per_seed([tmp_path / "q"], [tmp_path / "c"], "sasrec")
    at_200 = quality_seeds.classic_per_seed([tmp_path / "q"], [tmp_path / "c"], "sasrec", size="200")
    assert at_100[0]["uniform"]["hit_ratio@1"].tolist() == [1.0, 1.0]
    assert at_200[0]["uniform"]["hit_ratio@1"].tolist() == [0.0, 0.0]  # the N = 200 run ranks the target last


def test_against_pairs_each_method_with_its_run_at_another_setting_on_the_same_candidates(tmp_path):
    write_ranked_seed(tmp_path / "long", 0, {"popular": [[3, 2, 1]] * 2, "dmpo-k4": [[1.0, 0.0, 0.0]] * 2})
    write_ranked_seed(tmp_path / "short", 0, {"dmpo-k4": [[0.0, 1.0, 0.0]] * 2})
    argv = [str(tmp_path / "long"), "--methods", "popular", "dmpo-k4", "--out", str(tmp_path)]
    text = quality_seeds.main([*argv, "--against", str(tmp_path / "short"), "--against_methods", "dmpo-k4",
                               "--against_label", "5 titles"])  # fmt: skip
    assert "| dmpo-k4 minus dmpo-k4 (5 titles) | uniform | HR@1 | 1.000 [1.000, 1.000] |" in text
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["pairs"][0]["a"] == "dmpo-k4" and saved["pairs"][0]["b"] == "dmpo-k4 (5 titles)"
    text = quality_seeds.main([*argv, "--pair", "popular", "dmpo-k4"])
    assert "| popular minus dmpo-k4 | uniform | HR@1 | 0.000 [0.000, 0.000] |" in text  # both rank "a" first
    write_ranked_seed(tmp_path / "other", 0, {"dmpo-k4": [[0.0, 1.0]] * 2})  # other users: refused
    (tmp_path / "other" / "runs" / "seed0" / "candidates.json").write_text(json.dumps({r: [] for r in REGIMES}))
    with pytest.raises(SystemExit, match="seed 0: .* do not hold the users and candidates"):
        quality_seeds.main([*argv, "--against", str(tmp_path / "other"), "--against_methods", "dmpo-k4"])
