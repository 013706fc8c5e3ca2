"""Shared inputs of the kill-and-resume tests (tests/integration/test_resume.py and the scripts it runs)."""

import random

from tiny_models import build_model, build_tokenizer

from dmpo_trl.data import InteractionLog, example_at


def evaluation_inputs(num_users: int = 9):
    """A tiny model (fixed seed), its tokenizer, `num_users` users' last items and their log."""
    rng = random.Random(0)
    items = [f"i{k}" for k in range(30)]
    log = InteractionLog(
        {f"u{u}": rng.sample(items, 5) for u in range(num_users)}, {i: f"Heat {i[1:]}" for i in items}
    )
    examples = [example_at(log, user, -1, 3) for user in log.sequences]
    tokenizer = build_tokenizer()
    return build_model(tokenizer, seed=5).eval(), tokenizer, examples, log


#: How the kill-and-resume and multi-process tests rank `evaluation_inputs()` (plus `mode`).
RANKING_SETTINGS = dict(num_candidates=5, seed=3, batch_size=2, progress=False)
