"""The quality study (`python -m benchmarks.quality`) in miniature: every kind of method on a tiny model and a
synthetic log."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import write_tiny_log

from dmpo_trl.evaluation import evaluate_baseline, evaluate_ranking
from dmpo_trl.models import load_model_and_tokenizer
from dmpo_trl.recipe import RecDataArguments, load_interaction_log


ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `python -m pytest` from the root has it already; plain `pytest` may not
    sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402
from benchmarks.quality import compare as quality_compare  # noqa: E402
from benchmarks.quality import levers as quality_levers  # noqa: E402
from benchmarks.quality import prior as quality_prior  # noqa: E402
from benchmarks.quality import selection as quality_selection  # noqa: E402


METHODS = ["random", "popular", "zero-shot", "sft", "dpo", "dmpo-k2", "sdpo-k2", "sft+dmpo-k2"]


def fake_methods(*names):
    """Summary entries with per-user HitRatio@1 of 4 users, enough for `comparisons`."""
    per_user = {"hit_ratio@1": np.array([1.0, 0.0, 1.0, 0.0])}
    entry = {f"{r}/sum": {"hit_ratio@1": (0.5, 0.0, 1.0)} for r in quality.REGIMES}
    entry.update({f"{r}/sum/per_user": per_user for r in quality.REGIMES})
    return {name: entry for name in names}


def test_method_names():
    assert quality.parse_method("sft+dmpo-k8") == quality.Method("sft+dmpo-k8", "preference", "dmpo", 8, True)
    assert quality.parse_method("dpo").loss == "sigmoid" and quality.parse_method("sdpo-k4").k == 4
    assert quality.parse_method("pl-k4") == quality.Method("pl-k4", "preference", "plackett_luce", 4)
    assert {(c["a"], c["b"]) for c in quality.comparisons(fake_methods("dmpo-k2", "dmpo-k2-ln", "dpo"))} >= {
        ("dmpo-k2-ln", "dmpo-k2")
    }
    normalized = quality.parse_method("dmpo-k4-ln@model50")
    assert normalized.length_normalize and normalized.k == 4 and normalized.negatives == "model"
    assert not quality.parse_method("dmpo-k4").length_normalize
    for bad in ("dmpo", "dmpo-k0", "ipo-k2", "dpo-ln", "dmpo-k4-ln-ln"):
        with pytest.raises(ValueError, match="Unknown method"):
            quality.parse_method(bad)
    with pytest.raises(ValueError, match="generation_methods"):
        quality.QualityConfig(methods=["random"], generation_methods=["sft"])
    cfg = quality.QualityConfig(method_settings=["dpo:3e-3:2"])
    assert cfg.training_settings("dpo") == (3e-3, 2.0) and cfg.training_settings("sft") == (1e-3, 1.0)
    for bad in ("dpo:3e-3", "dpo:fast:1", "ipo:1e-3:1"):
        with pytest.raises(ValueError, match="method_settings entry"):
            quality.QualityConfig(method_settings=[bad])


def test_training_negatives_per_method():
    method = quality.parse_method("sft+dmpo-k4@model50")
    assert (method.base, method.loss, method.k, method.after_sft) == ("sft+dmpo-k4", "dmpo", 4, True)
    assert (method.negatives, method.model_fraction) == ("model", 0.5)
    assert quality.parse_method("dpo@popularity_matched").negatives == "popularity_matched"
    assert (
        quality.parse_method("dmpo-k2@model").model_fraction == 1.0
        and quality.parse_method("dmpo-k2").negatives is None
    )
    for bad in ("sft@model", "dmpo-k2@hard", "dmpo-k2@model150", "dmpo-k2@uniform50", "popular@uniform"):
        with pytest.raises(ValueError, match="Unknown method"):
            quality.parse_method(bad)


def test_several_targets_per_user_and_a_row_cap(tmp_path):
    interactions, items = write_tiny_log(tmp_path)  # 24 users with 7 items each
    log = load_interaction_log(RecDataArguments(interactions=interactions, items=items))
    settings = dict(interactions=interactions, items=items, num_train_users=8, num_test_users=5, max_history=3)
    one = quality.split_users(quality.QualityConfig(**settings), log, seed=3)
    every = quality.split_users(quality.QualityConfig(**settings, targets_per_user=0), log, seed=3)
    assert every.test == one.test and len(every.train) == 8 * 2  # positions 5 and 6 have 5+ items before them
    assert {e.user for e in every.train} == {e.user for e in one.train}
    assert not {e.user for e in every.train} & {e.user for e in every.test}
    for example in every.train:
        position = example.extra["position"]
        assert list(example.history) == log.sequences[example.user][position - 3 : position]
    capped = quality.split_users(quality.QualityConfig(**settings, targets_per_user=0, num_train_rows=5), log, 3)
    more = quality.split_users(quality.QualityConfig(**settings, targets_per_user=0, num_train_rows=10), log, 3)
    assert len(capped.train) == 5 and set(capped.train) <= set(more.train) <= set(every.train)
    assert (
        quality.split_users(quality.QualityConfig(**settings, targets_per_user=0, num_train_rows=5), log, 3) == capped
    )
    with pytest.raises(ValueError, match="targets_per_user"):
        quality.QualityConfig(targets_per_user=-1)


@pytest.mark.slow
def test_study_compares_training_negatives(tmp_path, tiny_model_dir):
    interactions, items = write_tiny_log(tmp_path)
    results = tmp_path / "results"
    methods = ["dmpo-k2", "dmpo-k2@popularity_matched", "dmpo-k2@model50"]
    argv = [
        "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items, "--methods", *methods,
        "--generation_methods", "none", "--seeds", "0", "--num_train_users", "8", "--num_test_users", "5",
        "--num_candidates", "4", "--max_history", "3", "--learning_rate", "1e-2", "--num_train_epochs", "2",
        "--targets_per_user", "0", "--num_train_rows", "12", "--mining_pool_size", "6", "--explain_users", "0",
        "--results_dir", str(results), "--work_dir", str(tmp_path / "work"),
    ]  # fmt: skip
    quality.main(argv)
    summary = json.loads((results / "quality.json").read_text())
    assert list(summary["methods"]) == methods
    runs = {name: json.loads((results / "runs" / "seed0" / f"{name}.json").read_text()) for name in methods}
    assert all(run["train"]["rows"] == 12 and run["train"]["steps"] == 6 for run in runs.values())  # 2 epochs x 3
    rounds = [entry["mining_round"] for entry in runs["dmpo-k2@model50"]["train"]["log_history"] if "loss" in entry]
    assert rounds == [0, 0, 0, 1, 1, 1]
    pairs = {(c["regime"], c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("uniform", "dmpo-k2@model50", "dmpo-k2") in pairs and (
        "uniform",
        "dmpo-k2@popularity_matched",
        "dmpo-k2",
    ) in pairs
    assert "every item with 5+ items before, at most 12 rows" in (results / "quality.md").read_text()

    rows = quality_compare.main([f"{results}:dmpo-k2@model50", f"{results}:dmpo-k2", "--json"])
    assert len(rows) == 8 and {(r["regime"], r["scoring"], r["metric"]) for r in rows} >= {
        ("popularity_matched", "mean", "ndcg@5")
    }
    reported = next(c for c in summary["comparisons"] if (c["regime"], c["a"]) == ("uniform", "dmpo-k2@model50"))
    hits = next(r for r in rows if (r["regime"], r["scoring"], r["metric"]) == ("uniform", "sum", "hit_ratio@1"))
    assert hits["diff"] == pytest.approx(reported["diff"]) and hits["ci95"] == pytest.approx(reported["ci95"])
    other = tmp_path / "other" / "runs" / "seed0"
    other.mkdir(parents=True)
    candidates = json.loads((results / "runs" / "seed0" / "candidates.json").read_text())
    candidates["uniform"] = candidates["uniform"][::-1]
    (other / "candidates.json").write_text(json.dumps(candidates))
    (other / "dmpo-k2.json").write_text((results / "runs" / "seed0" / "dmpo-k2.json").read_text())
    with pytest.raises(SystemExit, match="other users or candidates"):
        quality_compare.main([f"{results}:dmpo-k2@model50", f"{tmp_path / 'other'}:dmpo-k2"])

    levers = [
        quality_levers.Lever("mined", "results", "dmpo-k2@model50", "1e-2 x 2"),
        quality_levers.Lever("not run", "missing", "dmpo-k2", "1e-2 x 2"),
    ]
    text = quality_levers.table(tmp_path, "results", levers, [("plain", "dmpo-k2")])
    row = next(line for line in text.splitlines() if line.startswith("| mined |"))
    assert quality.fmt(hits["diff"], *hits["ci95"]) in row  # the same pair as quality_compare's
    assert "Not run yet: not run (`missing:dmpo-k2`)" in text
    with pytest.raises(SystemExit, match="other users or candidates"):
        quality_levers.table(
            tmp_path, "results", [quality_levers.Lever("x", "other", "dmpo-k2", "")], [("p", "dmpo-k2")]
        )


def test_validation_users_leave_train_and_test_users_unchanged(tmp_path):
    interactions, items = write_tiny_log(tmp_path)
    log = load_interaction_log(RecDataArguments(interactions=interactions, items=items))
    settings = dict(interactions=interactions, items=items, num_train_users=8, num_test_users=5)
    plain = quality.split_users(quality.QualityConfig(**settings), log, seed=3)
    cfg = quality.QualityConfig(**settings, num_valid_users=4, evaluate_on="valid")
    split = quality.split_users(cfg, log, seed=3)
    assert split.train == plain.train and split.test == plain.test and len(split.valid) == 4
    users = [{e.user for e in part} for part in (split.train, split.valid, split.test)]
    assert sum(map(len, users)) == len(set().union(*users))  # disjoint
    assert quality.ranked_users(cfg, split) == split.valid
    more = quality.split_users(quality.QualityConfig(**settings, num_valid_users=4, more_test_users=6), log, seed=3)
    assert more.train == split.train and more.valid == split.valid and more.test[:5] == split.test
    assert len(more.test) == 11 and not {e.user for e in more.test} & {e.user for e in split.train + split.valid}
    with pytest.raises(ValueError, match="num_valid_users"):
        quality.QualityConfig(evaluate_on="valid")


@pytest.mark.slow
def test_study_smoke_runs_resumes_and_scores_like_the_evaluator(tmp_path, tiny_model_dir, capsys):
    interactions, items = write_tiny_log(tmp_path)
    results = tmp_path / "results"
    argv = [
        "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items,
        "--methods", *METHODS, "--generation_methods", "zero-shot", "dmpo-k2",
        "--seeds", "0", "1", "--num_train_users", "8", "--num_test_users", "5", "--num_candidates", "4",
        "--max_history", "3", "--learning_rate", "1e-2", "--explain_users", "1", "--max_new_tokens", "4",
        "--method_settings", "dpo:2e-2:2", "--results_dir", str(results), "--work_dir", str(tmp_path / "work"),
    ]  # fmt: skip
    quality.main(argv)
    summary = json.loads((results / "quality.json").read_text())
    assert list(summary["methods"]) == METHODS
    assert all(entry["num_users"] == 10 for entry in summary["methods"].values())  # 5 test users x 2 seeds
    assert (results / "quality.png").stat().st_size > 0
    table = (results / "quality.md").read_text()
    assert "| sft+dmpo-k2 | 10 |" in table and "popularity_matched" in table

    runs = {name: json.loads((results / "runs" / "seed1" / f"{name}.json").read_text()) for name in METHODS}
    assert all(runs[name]["train"]["steps"] == 2 for name in ("sft", "dmpo-k2", "sdpo-k2", "sft+dmpo-k2"))
    assert runs["dpo"]["train"]["steps"] == 4 and runs["dpo"]["train"]["learning_rate"] == 2e-2  # its own settings
    assert runs["sft"]["train"]["learning_rate"] == 1e-2 and "dpo lr 0.02, 2 epoch(s)" in table
    assert runs["dmpo-k2"]["generation"]["uniform"]["valid"] and len(runs["dmpo-k2"]["answers"]) == 5
    [explained] = runs["sft"]["explanations"]
    assert explained["pick"] and isinstance(explained["explanation"], str)

    # the baselines and the zero-shot model score exactly what the library's evaluator scores on those candidates
    log = load_interaction_log(RecDataArguments(interactions=interactions, items=items))
    study = quality.Study(quality.QualityConfig(model=str(tiny_model_dir), interactions=interactions, items=items,
                                                num_train_users=8, num_test_users=5, num_candidates=4, max_history=3,
                                                results_dir=str(tmp_path / "again")), seed=1)  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    for regime in quality.REGIMES:
        expected = evaluate_ranking(model, tokenizer, study.split.test, log, num_candidates=4, seed=1,
                                    prompt_style="history", negative_strategy=regime, progress=False)  # fmt: skip
        got = runs["zero-shot"]["scores"][regime]["sum"]
        np.testing.assert_allclose(got, [u["scores"] for u in expected["per_user"]], atol=2e-4)
        popular = evaluate_baseline("popular", study.split.test, log, 4, 1, regime)
        assert runs["popular"]["scores"][regime]["score"] == [u["scores"] for u in popular["per_user"]]

    # a second run finds every result on disk and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json")}
    capsys.readouterr()
    quality.main(argv)
    assert capsys.readouterr().out.count("done already") == 2 * len(METHODS)
    assert stamps == {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json")}

    # results of other settings are not mixed in
    with pytest.raises(ValueError, match="other candidates"):
        quality.Study(quality.QualityConfig(model=str(tiny_model_dir), interactions=interactions, items=items,
                                            num_train_users=8, num_test_users=5, num_candidates=3, max_history=3,
                                            results_dir=str(results)), seed=1)  # fmt: skip


@pytest.mark.slow
def test_selection_reads_validation_runs_and_picks_per_method(tmp_path, tiny_model_dir):
    interactions, items = write_tiny_log(tmp_path)
    common = [
        "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items, "--seeds", "0",
        "--methods", "random", "dpo", "--generation_methods", "none", "--explain_users", "0", "--report", "false",
        "--num_train_users", "8", "--num_test_users", "5", "--num_candidates", "4", "--max_history", "3",
    ]  # fmt: skip
    valid = ["--num_valid_users", "4", "--evaluate_on", "valid"]
    for lr in ("1e-4", "3e-2"):
        quality.main([*common, *valid, "--learning_rate", lr, "--results_dir", str(tmp_path / f"lr{lr}"),
                      "--work_dir", str(tmp_path / "work" / lr)])  # fmt: skip
    out = tmp_path / "selection.md"
    quality_selection.main([str(tmp_path / "lr1e-4"), str(tmp_path / "lr3e-2"), "--out", str(out)])
    text = out.read_text()
    cells = quality_selection.validation_cells([tmp_path / "lr1e-4", tmp_path / "lr3e-2"])
    dpo = [c for c in cells if c["method"] == "dpo"]
    assert sorted(c["learning_rate"] for c in dpo) == [1e-4, 3e-2] and all(c["users"] == 4 for c in dpo)
    best = max(dpo, key=lambda c: c["criterion"])
    assert f"--method_settings dpo:{best['learning_rate']:g}:1" in text
    assert text.count("| random |") == 1  # a baseline repeated in every dir is listed once

    quality.main([*common, "--results_dir", str(tmp_path / "test"), "--work_dir", str(tmp_path / "work" / "test")])
    with pytest.raises(ValueError, match="validation runs only"):
        quality_selection.validation_cells([tmp_path / "test"])


@pytest.mark.slow
def test_sft_stage_is_reused_only_with_the_same_settings(tmp_path, tiny_model_dir, capsys):
    interactions, items = write_tiny_log(tmp_path)
    work = tmp_path / "work"

    def run(results: str, *settings: str) -> str:
        quality.main([
            "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items,
            "--methods", "sft+dmpo-k2", "--generation_methods", "none", "--seeds", "0", "--num_train_users", "8",
            "--num_test_users", "5", "--num_candidates", "4", "--max_history", "3", "--explain_users", "0",
            "--report", "false", "--results_dir", str(tmp_path / results), "--work_dir", str(work), *settings,
        ])  # fmt: skip
        return capsys.readouterr().out

    run("a")
    saved = work / "seed0" / "sft" / quality.SFT_SETTINGS_FILE
    assert json.loads(saved.read_text())["learning_rate"] == 1e-3
    assert "training it again" not in run("b")  # same settings: the saved adapter is reused
    assert "training it again" in run("c", "--method_settings", "sft:2e-2:1")
    assert json.loads(saved.read_text())["learning_rate"] == 2e-2


def test_popularity_prior_on_saved_scores_ranks_like_the_evaluator(tmp_path, tiny_model_dir):
    from dmpo_trl.metrics import hits_at_k, ndcg_at_k

    interactions, items = write_tiny_log(tmp_path)
    common = [
        "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items, "--seeds", "0",
        "--methods", "popular", "zero-shot", "--generation_methods", "none", "--explain_users", "0",
        "--report", "false", "--num_train_users", "8", "--num_test_users", "5", "--num_candidates", "4",
        "--max_history", "3", "--work_dir", str(tmp_path / "work"),
    ]  # fmt: skip
    quality.main([*common, "--num_valid_users", "4", "--evaluate_on", "valid", "--results_dir", str(tmp_path / "v")])
    quality.main([*common, "--results_dir", str(tmp_path / "t")])
    weights = (0.0, 0.5, 3.0)
    config = quality_prior.Prior("zero-shot", "v:zero-shot", "t:zero-shot")
    result = quality_prior.study([config], weights, root=tmp_path)
    [row] = result["rows"]
    assert row["weight"] == max(weights, key=lambda w: (row["curve"][w], -weights.index(w)))
    assert set(row["curve"]) == set(weights) and "| zero-shot |" in quality_prior.report(result)

    # the prior on saved scores ranks as the evaluator's popularity_prior does, on the same users and candidates
    log = load_interaction_log(RecDataArguments(interactions=interactions, items=items))
    study = quality.Study(quality.QualityConfig(model=str(tiny_model_dir), interactions=interactions, items=items,
                                                num_train_users=8, num_test_users=5, num_candidates=4, max_history=3,
                                                results_dir=str(tmp_path / "again")), seed=0)  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    plain, _ = quality_prior.metrics("t:zero-shot", 0.0, tmp_path)
    heavy, _ = quality_prior.metrics("t:zero-shot", 3.0, tmp_path)
    assert any((plain[r]["ndcg@5"] != heavy[r]["ndcg@5"]).any() for r in quality.REGIMES)  # the prior moved ranks
    for weight, saved in ((0.0, plain), (3.0, heavy)):
        for regime in quality.REGIMES:
            expected = evaluate_ranking(model, tokenizer, study.split.test, log, num_candidates=4, seed=0,
                                        prompt_style="history", negative_strategy=regime, progress=False,
                                        popularity_prior=weight)  # fmt: skip
            ranks = [u["rank"] for u in expected["per_user"]]
            np.testing.assert_array_equal(saved[regime]["hit_ratio@1"], hits_at_k(ranks, 1))
            np.testing.assert_allclose(saved[regime]["ndcg@5"], ndcg_at_k(ranks, 5))


@pytest.mark.slow
def test_stopped_preference_training_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, capsys):
    interactions, items = write_tiny_log(tmp_path)

    def run(results: str, work: str, *settings: str) -> tuple[dict, str]:
        quality.main([
            "--model", str(tiny_model_dir), "--interactions", interactions, "--items", items,
            "--methods", "dmpo-k2", "--generation_methods", "none", "--seeds", "0", "--num_train_users", "8",
            "--num_test_users", "5", "--num_candidates", "4", "--max_history", "3", "--explain_users", "0",
            "--learning_rate", "1e-2", "--num_train_epochs", "2", "--save_steps", "1", "--report", "false",
            "--results_dir", str(tmp_path / results), "--work_dir", str(tmp_path / work), *settings,
        ])  # fmt: skip
        result = json.loads((tmp_path / results / "runs" / "seed0" / "dmpo-k2.json").read_text())
        return result, capsys.readouterr().out

    whole, _ = run("whole", "work")
    assert whole["train"]["steps"] == 4 and whole["train"]["resumed_from_step"] is None
    checkpoints = tmp_path / "work" / "seed0" / "dmpo-k2"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]

    # a run stopped after step 3: its work dir holds that checkpoint only, and its result is not written yet
    shutil.copytree(tmp_path / "work", tmp_path / "stopped")
    shutil.rmtree(tmp_path / "stopped" / "seed0" / "dmpo-k2" / "checkpoint-4")
    resumed, out = run("resumed", "stopped")
    assert "resuming training from" in out and resumed["train"]["resumed_from_step"] == 3
    assert resumed["train"]["steps"] == 4
    losses = [[e["loss"] for e in r["train"]["log_history"] if "loss" in e] for r in (whole, resumed)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for regime in quality.REGIMES:
        np.testing.assert_allclose(resumed["scores"][regime]["sum"], whole["scores"][regime]["sum"], atol=2e-4)

    # checkpoints of other settings are not resumed from
    shutil.rmtree(tmp_path / "stopped" / "seed0" / "dmpo-k2" / "checkpoint-4")
    other, out = run("other", "stopped", "--method_settings", "dmpo-k2:2e-2:2")
    assert "other (or unrecorded) settings; starting again" in out and other["train"]["resumed_from_step"] is None
    assert not np.allclose(other["scores"]["uniform"]["sum"], whole["scores"]["uniform"]["sum"], atol=2e-4)


def test_results_paths_named_in_the_docs_exist_and_manifests_are_current():
    """Every results path README.md, docs/ and benchmarks/README.md name exists, every run folder has its notes.md
    and manifest.json, and each manifest is what `python -m benchmarks.manifests` writes from the folder's files."""
    from benchmarks import manifests

    assert manifests.check() == []
    folders = manifests.run_folders()
    assert len(folders) >= 38
    for folder in folders:
        saved = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert saved == manifests.manifest(folder), f"{folder}: rerun `python -m benchmarks.manifests`"
