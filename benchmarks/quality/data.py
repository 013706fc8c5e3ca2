"""The quality study's data: the log, the disjoint train / valid / test users of a seed, the users a run ranks and
their candidate lists (`Study`, one seed's data and result files)."""

from __future__ import annotations

import json
from pathlib import Path

from .config import MIN_HISTORY, REGIMES, QualityConfig


def load_log(cfg: QualityConfig):
    from dmpo_trl.recipe import RecDataArguments, load_interaction_log

    return load_interaction_log(
        RecDataArguments(dataset_name=cfg.dataset_name, interactions=cfg.interactions, items=cfg.items)
    )


def split_users(cfg: QualityConfig, log, seed: int):
    """Disjoint train / valid / test users. The first `num_test_users` test users depend on the seed only, the
    training users on the seed and `num_train_users`; the validation users and then the `more_test_users` come
    after the training users in the seeded order, so adding them changes none of the others."""
    from dataclasses import replace

    from dmpo_trl.data import few_shot_split, sample_examples

    split = few_shot_split(
        log,
        num_train_users=cfg.num_train_users + cfg.num_valid_users + cfg.more_test_users,
        num_valid_users=0,
        num_test_users=cfg.num_test_users,
        max_history=cfg.max_history,
        min_history=MIN_HISTORY,
        seed=seed,
    )
    train_end, valid_end = cfg.num_train_users, cfg.num_train_users + cfg.num_valid_users
    train = split.train[:train_end]
    if cfg.targets_per_user != 1:  # the training users' latest items, as few_shot_split(targets_per_user=...) does
        from dmpo_trl.data import example_at, target_positions

        per_user = cfg.targets_per_user or None
        train = [
            example_at(log, e.user, position, cfg.max_history)
            for e in train
            for position in target_positions(len(log.sequences[e.user]), MIN_HISTORY, per_user)
        ]
    train = sample_examples(train, cfg.num_train_rows, seed)
    return replace(
        split,
        train=train,
        valid=split.train[train_end:valid_end],
        test=split.test + split.train[valid_end:],
    )


def ranked_users(cfg: QualityConfig, split):
    """The users a run ranks: the test users, or the validation users (`evaluate_on="valid"`)."""
    return split.valid if cfg.evaluate_on == "valid" else split.test


class Study:
    """Data, candidates and result files of one seed."""

    def __init__(self, cfg: QualityConfig, seed: int):
        from dmpo_trl.data import candidate_sets

        self.cfg, self.seed = cfg, seed
        self.log = load_log(cfg)
        self.split = split_users(cfg, self.log, seed)
        self.users = ranked_users(cfg, self.split)
        self.candidates = {
            regime: candidate_sets(self.log, self.users, cfg.num_candidates, seed, regime) for regime in REGIMES
        }
        self.dir = Path(cfg.results_dir) / "runs" / f"seed{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_candidates()

    def _write_candidates(self) -> None:
        rows = {
            regime: [
                {"user": e.user, "target": e.target, "candidates": c, "target_index": t}
                for e, (c, t) in zip(self.users, sets)
            ]
            for regime, sets in self.candidates.items()
        }
        path, text = self.dir / "candidates.json", json.dumps(rows) + "\n"
        if path.is_file() and path.read_text() != text:
            raise ValueError(
                f"{path} holds other candidates than these settings draw: the saved results come from another "
                "configuration. Use another --results_dir, or delete that folder to start over."
            )
        if not path.is_file():
            path.write_text(text)

    def ranking_prompts(self, tokenizer) -> dict[str, list]:
        """Each regime's `RankingPrompt`s for the test users (the evaluator's prompts and candidate lists)."""
        from dmpo_trl.evaluation import build_ranking_prompts

        return {
            regime: build_ranking_prompts(
                self.log,
                self.users,
                self.cfg.num_candidates,
                self.seed,
                self.cfg.prompt_style,
                conversational(tokenizer),
                regime,
            )
            for regime in REGIMES
        }

    def path(self, method: str) -> Path:
        return self.dir / f"{method}.json"


def conversational(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None
