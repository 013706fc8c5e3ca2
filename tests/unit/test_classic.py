"""Classic baselines (Cornac's SASRec, GRU4Rec, BPR) as candidate scorers, on a tiny synthetic log (seconds)."""

import random

import pytest
import torch

from dmpo_trl import classic
from dmpo_trl.data import InteractionLog, candidate_sets, few_shot_split
from dmpo_trl.evaluation import BASELINES, CLASSIC_BASELINES, evaluate_baseline
from dmpo_trl.metrics import rank_of_target


pytest.importorskip("cornac", reason='the classic baselines need the "classic" extra')

NUM_CANDIDATES = 10
# Few epochs, small models: enough to learn the planted signal in seconds on one thread.
TINY = {
    "sasrec": {
        "embedding_dim": 16,
        "n_epochs": 6,
        "max_len": 8,
        "batch_size": 64,
        "n_sample": 64,
        "learning_rate": 5e-3,
    },
    "gru4rec": {"layers": [32], "n_epochs": 6, "batch_size": 32, "n_sample": 64},
    "bpr": {"k": 8, "max_iter": 60, "learning_rate": 0.05},
}


def chain_log(num_users: int = 150, groups: int = 4, group_size: int = 10, seed: int = 0) -> InteractionLog:
    """Each user walks their group's items in a fixed cycle (item k -> k+1) from a random start, 12 steps: the next
    item follows from the last one (sequential models), and from the user's group (BPR). One extra user ends with
    "lonely", an item seen nowhere else."""
    rng = random.Random(seed)
    sequences = {}
    for u in range(num_users):
        g, start = u % groups, rng.randrange(group_size)
        sequences[f"u{u}"] = [f"g{g}i{(start + t) % group_size}" for t in range(12)]
    sequences["lonely_user"] = ["g0i0", "g0i1", "g0i2", "g0i3", "g0i4", "g0i5", "lonely"]
    items = {i for seq in sequences.values() for i in seq}
    return InteractionLog(sequences, {i: i for i in items}, name="chain")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_baselines_listed_beside_random_and_popular():
    assert CLASSIC_BASELINES == classic.CLASSIC_BASELINES
    assert BASELINES == ("random", "popular", "sasrec", "gru4rec", "bpr")


def test_training_sequences_leave_out_held_out_targets_and_what_follows():
    log = chain_log()
    test = few_shot_split(log, num_train_users=0, num_valid_users=0, num_test_users=30, min_history=5, seed=0).test
    sequences = classic.training_sequences(log, test)
    for example in test:
        position = example.extra["position"]
        assert sequences[example.user] == log.sequences[example.user][:position]
        assert tuple(sequences[example.user][-len(example.history) :]) == example.history
    untouched = set(log.sequences) - {e.user for e in test}
    assert all(sequences[u] == log.sequences[u] for u in untouched)
    held = sum(len(log.sequences[e.user]) - e.extra["position"] for e in test)
    assert sum(map(len, sequences.values())) == sum(map(len, log.sequences.values())) - held


@pytest.mark.slow
@pytest.mark.parametrize("name", classic.CLASSIC_BASELINES)
def test_baseline_scores_shape_signal_and_no_leak(name):
    log = chain_log()
    split = few_shot_split(log, num_train_users=0, num_valid_users=0, num_test_users=40, min_history=5, seed=1)
    test = [e for e in split.test if e.user != "lonely_user"]
    lonely = [e for e in few_shot_split(log, 0, 0, len(log.sequences), min_history=5, seed=0).test]
    test.append(next(e for e in lonely if e.user == "lonely_user"))
    sets = candidate_sets(log, test, NUM_CANDIDATES, seed=0)

    sequences = classic.training_sequences(log, test)
    model = classic.ClassicRecommender(name, seed=0, **TINY[name]).fit(sequences)
    # train and test never meet: the model saw exactly the cut sequences, and an item seen only as a held-out target
    # is unknown to it
    expected = sum(len(set(s)) for s in sequences.values()) if name == "bpr" else sum(map(len, sequences.values()))
    assert model.num_interactions == expected
    assert model.unknown_items(["lonely", "g0i0"]) == ["lonely"]

    scores = [model.score(e.user, c) for e, (c, _) in zip(test, sets)]
    assert [len(s) for s in scores] == [NUM_CANDIDATES] * len(test)
    assert all(isinstance(v, float) for s in scores for v in s)
    lonely_scores, (lonely_candidates, lonely_target) = scores[-1], sets[-1]
    assert lonely_scores[lonely_target] < min(s for c, s in zip(lonely_candidates, lonely_scores) if c != "lonely")

    ranks = [rank_of_target(s, t, ties="random", seed=k) for k, (s, (_, t)) in enumerate(zip(scores[:-1], sets))]
    hit_rate = sum(r == 0 for r in ranks) / len(ranks)
    assert hit_rate >= 0.5, (name, hit_rate)  # chance is 1 / NUM_CANDIDATES; all three reach 1.0 on this log


def test_evaluate_baseline_dispatches_to_classic():
    log = chain_log(num_users=40)
    test = few_shot_split(log, num_train_users=0, num_valid_users=0, num_test_users=10, min_history=5, seed=0).test
    result = evaluate_baseline("bpr", test, log, num_candidates=NUM_CANDIDATES, seed=0)
    assert result["settings"]["model"] == "baseline:bpr"
    assert [len(u["scores"]) for u in result["per_user"]] == [NUM_CANDIDATES] * len(test)
    assert 0.0 <= result["metrics"]["hit_ratio@1"] <= 1.0


def test_unknown_name_and_scoring_before_fit_are_refused():
    with pytest.raises(ValueError, match="Unknown classic baseline"):
        classic.ClassicRecommender("caser")
    with pytest.raises(RuntimeError, match="fit"):
        classic.ClassicRecommender("bpr").score("u0", ["a"])


def test_missing_cornac_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cornac(name, *args, **kwargs):
        if name == "cornac" or name.startswith("cornac."):
            raise ImportError("No module named 'cornac'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cornac)
    with pytest.raises(ImportError, match=r"dmpo-trl\[classic\]"):
        classic.ClassicRecommender("bpr").fit({"u": ["a", "b"]})


def test_few_shot_sequences_hold_only_training_users_and_shown_histories():
    sequences = {f"u{k}": [f"i{(k + j) % 30}" for j in range(12)] for k in range(20)}
    log = InteractionLog(sequences, {f"i{j}": f"Title {j}" for j in range(30)})
    split = few_shot_split(log, num_train_users=5, num_valid_users=3, num_test_users=6, max_history=4, seed=0)
    data = classic.few_shot_sequences(log, split.train, split.valid + split.test)
    assert set(data) == {e.user for e in split.train + split.valid + split.test}
    for e in split.train:
        assert data[e.user] == log.sequences[e.user][: e.extra["position"] + 1]
    for e in split.valid + split.test:
        assert data[e.user] == list(e.history) and e.target not in data[e.user][-1:]
    with pytest.raises(ValueError, match="both a training and a held-out user"):
        classic.few_shot_sequences(log, split.train, split.train[:1])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_score_history_scores_any_history_as_score_does_a_training_users(name):
    log = chain_log(num_users=40)
    model = classic.ClassicRecommender(name, seed=0, **{**TINY[name], "n_epochs": 1}).fit(log.sequences)
    candidates = ["g0i3", "g1i5", "g2i0", "g3i9", "lonely", "never-seen"]
    for user in ["u0", "u7", "lonely_user"]:
        assert model.score_history(log.sequences[user], candidates) == model.score(user, candidates)
    # a history no training user has: items the model never saw are left out of it
    history = ["g1i2", "g1i3", "never-seen", "g1i4"]
    scores = model.score_history(history, candidates)
    assert scores == model.score_history(["g1i2", "g1i3", "g1i4"], candidates)
    assert scores != model.score_history(["g2i7", "g2i8"], candidates)  # the history is what the model reads
    assert len(scores) == len(candidates) and scores[-1] < min(scores[:-1])  # an unseen candidate scores lowest
    nothing_known = model.score_history(["never-seen"], candidates)
    assert len(set(nothing_known[:-1])) == 1 and nothing_known[-1] < nothing_known[0]


def test_score_history_is_refused_for_bpr_and_before_fit():
    model = classic.ClassicRecommender("bpr", seed=0, **TINY["bpr"]).fit({"u1": ["a", "b"], "u2": ["b", "c"]})
    with pytest.raises(ValueError, match="bpr cannot score a history"):
        model.score_history(["a"], ["b", "c"])
    with pytest.raises(RuntimeError, match="fit"):
        classic.ClassicRecommender("sasrec").score_history(["a"], ["b"])


def test_gru4rec_trains_on_fewer_users_than_its_batch_size():
    model = classic.ClassicRecommender("gru4rec", seed=0, layers=[8], n_epochs=1)  # batch_size 256 by default
    model.fit({"u1": ["a", "b", "c"], "u2": ["b", "c", "a"]})
    assert model.settings["batch_size"] == classic.DEFAULT_SETTINGS["gru4rec"]["batch_size"]
    assert len(model.score("u1", ["a", "b", "c"])) == 3
