"""The popularity prior applied to saved scores and chosen on validation users, in the recipe and the `Ranker`."""

import json
import random

import pytest
from recipe_helpers import tiny_flags, write_tiny_log

from dmpo_trl import Ranker, prior
from dmpo_trl.cli import main
from dmpo_trl.data import InteractionLog, example_at
from dmpo_trl.evaluation import evaluate_ranking
from dmpo_trl.metrics import ndcg
from dmpo_trl.prior import PRIOR_REGIMES, choose_popularity_prior, result_with_prior
from dmpo_trl.recipe import load_interaction_log, parse_recipe_arguments, run_recipe, split_users


@pytest.fixture
def popular_log():
    """Twelve users over 30 items; items i0-i4 are in most histories, so the prior has something to find."""
    rng = random.Random(0)
    items = [f"i{k}" for k in range(30)]
    sequences = {f"u{u}": rng.sample(items[:5], 2) + rng.sample(items[5:], 3) for u in range(12)}
    return InteractionLog(sequences, {i: f"Heat {i[1:]}" for i in items}, name="popular")


def test_prior_on_saved_scores_equals_the_evaluators(tokenizer, tiny_model, popular_log):
    examples = [example_at(popular_log, u, -1, 3) for u in ["u0", "u1", "u2", "u3", "u4", "u5"]]
    kwargs = dict(num_candidates=6, seed=3, progress=False)
    plain = evaluate_ranking(tiny_model, tokenizer, examples, popular_log, **kwargs)
    for weight in (0.5, 2.0, 50.0):
        expected = evaluate_ranking(tiny_model, tokenizer, examples, popular_log, popularity_prior=weight, **kwargs)
        got = result_with_prior(plain, popular_log, examples, weight)
        assert [u["rank"] for u in got["per_user"]] == [u["rank"] for u in expected["per_user"]]
        for a, b in zip(got["per_user"], expected["per_user"]):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-9)
        assert got["metrics"] == expected["metrics"]  # same ranks, same metrics
        assert got["settings"]["popularity_prior"] == weight
    assert plain["per_user"][0]["scores"] != got["per_user"][0]["scores"]  # the input is left as it was
    assert result_with_prior(plain, popular_log, examples, 0.0)["metrics"] == plain["metrics"]
    with pytest.raises(ValueError, match="other users"):
        result_with_prior(plain, popular_log, examples[::-1], 1.0)
    with pytest.raises(ValueError, match="without a prior"):
        result_with_prior(expected, popular_log, examples, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        result_with_prior(plain, popular_log, examples, -1.0)


@pytest.mark.slow
def test_choice_is_the_weight_with_the_best_mean_ndcg(tokenizer, tiny_model, popular_log):
    examples = [example_at(popular_log, f"u{k}", -1, 3) for k in range(8)]
    kwargs = dict(num_candidates=6, seed=1, progress=False)
    results = [
        evaluate_ranking(tiny_model, tokenizer, examples, popular_log, negative_strategy=regime, **kwargs)
        for regime in PRIOR_REGIMES
    ]
    weights = (0.0, 0.3, 1.0, 3.0, 1000.0)
    chosen, curve = choose_popularity_prior(results, popular_log, examples, weights)
    for weight in weights:  # by hand: rank each regime with the evaluator's own prior
        ranked = [
            evaluate_ranking(
                tiny_model,
                tokenizer,
                examples,
                popular_log,
                negative_strategy=regime,
                popularity_prior=weight,
                **kwargs,
            )
            for regime in PRIOR_REGIMES
        ]
        assert curve[weight] == pytest.approx(sum(ndcg([u["rank"] for u in r["per_user"]], 5) for r in ranked) / 2)
    assert curve[chosen] == max(curve.values())
    assert chosen == next(w for w in weights if curve[w] == max(curve.values()))  # the first best wins a tie
    assert curve[1000.0] > curve[0.0]  # popularity is the signal here; the untrained model has none
    with pytest.raises(ValueError, match="at least one"):
        choose_popularity_prior([], popular_log, examples)


@pytest.mark.slow
def test_recipe_chooses_the_weight_on_validation_users_and_the_ranker_keeps_it(tiny_model_dir, tmp_path):
    log_files = write_tiny_log(tmp_path)
    flags = tiny_flags(log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--no_evaluate_before")
    args = parse_recipe_arguments([*flags, "--num_valid_users", "6"])  # the default: the weight chosen on them
    result = run_recipe(*args, verbose=False)
    data_args, training_args = args[0], args[1]
    plain = result.results["dmpo (lora)"]
    chosen = plain["settings"]["popularity_prior_validation"]
    assert chosen["users"] == 6 and chosen["regimes"] == list(PRIOR_REGIMES)
    curve = {float(w): v for w, v in chosen["ndcg@5_by_weight"].items()}
    assert chosen["chosen"] in prior.PRIOR_WEIGHTS and curve[chosen["chosen"]] == max(curve.values())
    config = json.loads((tmp_path / "out" / "ranker.json").read_text())
    assert config["prompt"]["popularity_prior"] == chosen["chosen"]
    # the validation users' ranking the weight was chosen on: the evaluator's, under both regimes
    log = load_interaction_log(data_args)
    split = split_users(data_args, log, training_args.seed)
    ranker = Ranker.from_pretrained(tmp_path / "out")
    valid = [
        evaluate_ranking(
            ranker.model, ranker.tokenizer, split.valid, log, num_candidates=4, seed=plain["settings"]["seed"],
            negative_strategy=regime, progress=False,
        )
        for regime in PRIOR_REGIMES
    ]  # fmt: skip
    assert choose_popularity_prior(valid, log, split.valid)[1] == pytest.approx(curve)
    assert not {e.user for e in split.valid} & {e.user for e in split.test}


@pytest.mark.slow
def test_recipe_with_a_given_weight_ranks_and_serves_with_it(tiny_model_dir, tmp_path):
    log_files = write_tiny_log(tmp_path)
    flags = tiny_flags(log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--no_evaluate_before")
    args = parse_recipe_arguments([*flags, "--num_valid_users", "4", "--popularity_prior", "2"])
    result = run_recipe(*args, verbose=False)
    plain, with_prior = result.results["dmpo (lora)"], result.results["dmpo (lora) + popularity prior"]
    assert with_prior["settings"]["popularity_prior"] == 2.0 and "popularity_prior" not in plain["settings"]
    assert "popularity_prior_validation" not in plain["settings"]  # a given weight is not chosen again
    log = load_interaction_log(args[0])
    test = split_users(args[0], log, args[1].seed).test
    ranker = Ranker.from_pretrained(tmp_path / "out")
    assert ranker.prompt.popularity_prior == 2.0 and ranker.popularity
    seed = plain["settings"]["seed"]
    expected = evaluate_ranking(
        ranker.model, ranker.tokenizer, test, log, num_candidates=4, seed=seed, popularity_prior=2.0, progress=False
    )
    assert with_prior["metrics"] == expected["metrics"]
    for example, user in zip(test, with_prior["per_user"]):
        assert ranker.scores(list(example.history), user["candidates"]) == pytest.approx(user["scores"], abs=1e-9)
        titles = [ranker.title(c) for c in user["candidates"]]  # titles get the prior of their ids
        assert ranker.scores(list(example.history), titles) == pytest.approx(user["scores"], abs=1e-9)
    # `dmpo-trl evaluate` on the folder ranks its split's test users with the saved weight unless told otherwise
    for extra, reference in [([], with_prior), (["--popularity_prior", "0"], plain)]:
        out = tmp_path / f"evaluated{len(extra)}.json"
        command = ["evaluate", "--model_name_or_path", str(tmp_path / "out"), "--results_file", str(out)]
        assert main([*command, "--no-progress", *extra]) == 0
        evaluated = json.loads(out.read_text())
        assert [u["rank"] for u in evaluated["per_user"]] == [u["rank"] for u in reference["per_user"]]
        assert evaluated["settings"].get("popularity_prior", 0.0) == (0.0 if extra else 2.0)


@pytest.mark.slow
def test_weight_zero_ranks_and_serves_the_model_alone(tiny_model_dir, tmp_path):
    log_files = write_tiny_log(tmp_path)
    flags = tiny_flags(log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--no_evaluate_before")
    result = run_recipe(*parse_recipe_arguments([*flags, "--num_valid_users", "4", "--popularity_prior", "0"]))
    assert list(result.results) == ["dmpo (lora)"]
    assert "popularity_prior_validation" not in result.results["dmpo (lora)"]["settings"]
    config = json.loads((tmp_path / "out" / "ranker.json").read_text())
    assert config["prompt"]["popularity_prior"] == 0.0 and "popularity" not in config["catalogue"]


def test_prior_flags_refuse_what_they_cannot_do(tiny_model_dir, tmp_path, capsys):
    log_files = write_tiny_log(tmp_path)
    flags = tiny_flags(log_files, tiny_model_dir, tmp_path / "out")
    for extra, message in [
        (["--popularity_prior", "-1"], "popularity_prior must be >= 0"),
        (["--popularity_prior", "3", "--ranking_mode", "generation"], "ranks by likelihood"),
    ]:
        assert main(["train", *flags, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
