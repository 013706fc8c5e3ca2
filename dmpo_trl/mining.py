"""Hard negatives mined from the policy being trained (in the spirit of SPRec's self-play), refreshed every epoch.

For each training row and round, `NegativeMiner` draws a uniform pool of `pool_size` items the user never touched
(never the row's target, never an item in the user's sequence, never an item in `exclude`), scores every pool title
after the row's prompt with the library's likelihood scorer (`dmpo_trl.scoring`: the model in eval mode, no
gradients, the prompt shared by all titles, tokenized as the trainer tokenizes rows), and keeps the
`num_from_model` highest-scored titles as negatives: the wrong items the model likes best. The rest of the K
negatives are drawn uniformly, as `negative_strategy="uniform"` draws them. Pools and uniform draws are seeded by
(seed, round, user, target), so a run is deterministic for a seed.

`MinedNegativesTraining` trains in rounds around one `DMPOTrainer`: before each epoch the current policy mines that
epoch's negatives and the preference rows are rebuilt; the epoch then continues training the same model (the same
LoRA adapter). What carries across rounds and what is refreshed:

- refreshed every round: the pools, the mined and uniform negatives, the tokenized rows (and, with
  `precompute_ref_log_probs`, their reference log-probs), the trainer's step counter and its log;
- carried across rounds: the model and adapter weights, the optimizer (its moments included) and one learning-rate
  schedule made for the steps of all rounds (warmup once at the start, decay over all epochs), the torch random
  stream (each epoch shuffles the rows differently);
- never changed: the reference model (the base model with the adapter off, or `ref_model`).

Rows are mined for the training examples only; valid and test users are never scored. Checkpoints saved during a
round are named by that round's step, so a later round can overwrite an earlier one's; resuming mid-run is not
supported.

Example:
```python
>>> from dmpo_trl.mining import NegativeMiner
>>> log = InteractionLog({"u": ["a", "b", "c"]}, {i: f"Movie {i.upper()}" for i in "abcdefgh"})
>>> miner = NegativeMiner(log, num_negatives=2, model_fraction=0.5, pool_size=4)
>>> miner.num_from_model, len(miner.pool(UserExample("u", ("a", "b"), "c")))
(1, 4)
>>> negatives = miner.mine(model, tokenizer, [UserExample("u", ("a", "b"), "c")])  # doctest: +SKIP
```
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from datasets import Dataset
from transformers import get_scheduler
from transformers.trainer_utils import TrainOutput

from .data import InteractionLog, NegativeSampler, UserExample, build_preference_dataset
from .data.prompts import ANSWER_PREFIX, resolve_template, uses_candidates
from .evaluation import build_ranking_prompts
from .scoring import score_candidates_batch
from .trainer import DMPOTrainer


__all__ = ["DEFAULT_POOL_SIZE", "MinedNegativesTraining", "NegativeMiner"]

DEFAULT_POOL_SIZE = 30
"""Items scored per training row and round when mining."""


@dataclass
class NegativeMiner:
    """Mines each row's K negatives: the `num_from_model` highest-scored items of a uniform pool, the rest uniform.

    `model_fraction` of the `num_negatives` come from the model (rounded half up: K=4 and 0.5 give 2); 0 gives uniform
    negatives redrawn every round. Titles are ranked by summed log-probability (`normalize=True`: per token, as
    `--ranking_normalize` ranks). `exclude` lists item ids never used as negatives. `rows_per_forward` rows are
    scored in one packed forward where the model takes the packed layout.
    """

    log: InteractionLog
    num_negatives: int = 4
    model_fraction: float = 1.0
    pool_size: int = DEFAULT_POOL_SIZE
    prompt_style: str | None = None
    conversational: bool = False
    seed: int = 0
    normalize: bool = False
    exclude: Collection[str] = ()
    rows_per_forward: int = 8
    list_style: str = "numbered"
    answer_prefix: str = ANSWER_PREFIX
    _sampler: NegativeSampler = field(init=False, repr=False)

    def __post_init__(self):
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if not 0.0 <= self.model_fraction <= 1.0:
            raise ValueError(f"model_fraction must be between 0 and 1, got {self.model_fraction}")
        if self.num_from_model and self.pool_size < self.num_from_model:
            raise ValueError(
                f"pool_size={self.pool_size} must be at least the {self.num_from_model} negatives mined per row"
            )
        if self.rows_per_forward < 1:
            raise ValueError(f"rows_per_forward must be >= 1, got {self.rows_per_forward}")
        if uses_candidates(resolve_template(self.prompt_style)):
            raise ValueError(
                "model negatives need a prompt without a candidate list (prompt_style 'history' or your own template "
                "without {candidates}): a listed candidate set would fix the negatives before the model sees them"
            )
        self.exclude = frozenset(self.exclude)
        self._sampler = NegativeSampler(self.log, "uniform")

    @property
    def num_from_model(self) -> int:
        """How many of the K negatives are mined: `model_fraction * num_negatives`, rounded half up."""
        return math.floor(self.model_fraction * self.num_negatives + 0.5)

    def _rng(self, what: str, example: UserExample, round_index: int) -> random.Random:
        return random.Random(f"dmpo-trl-mining|{what}|{self.seed}|{round_index}|{example.user}|{example.target}")

    def pool(self, example: UserExample, round_index: int = 0) -> list[str]:
        """The `pool_size` items scored for `example` in round `round_index`: uniform, untouched, not excluded."""
        return self._sampler.sample(example, self.pool_size, self._rng("pool", example, round_index), self.exclude)

    def score_pools(
        self, model, tokenizer, examples: Sequence[UserExample], pools: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        """Each pool item's log-likelihood after its row's prompt (the evaluator's prompts and scorer)."""
        prompts = build_ranking_prompts(
            self.log,
            examples,
            prompt_style=self.prompt_style,
            conversational=self.conversational,
            list_style=self.list_style,
            answer_prefix=self.answer_prefix,
            candidates=[[example.target, *pool] for example, pool in zip(examples, pools)],
        )
        requests = [(item.prompt, item.completions[1:]) for item in prompts]  # the target is never scored
        scores: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, len(requests), self.rows_per_forward):
                chunk = requests[start : start + self.rows_per_forward]
                scores += score_candidates_batch(model, tokenizer, chunk, normalize=self.normalize)
        return scores

    def mine(self, model, tokenizer, examples: Sequence[UserExample], round_index: int = 0) -> list[list[str]]:
        """Each example's K negative item ids: the mined ones (highest score first), then the uniform ones."""
        examples = list(examples)
        mined: list[list[str]] = [[] for _ in examples]
        if self.num_from_model:
            pools = [self.pool(example, round_index) for example in examples]
            for index, (pool, scores) in enumerate(zip(pools, self.score_pools(model, tokenizer, examples, pools))):
                order = sorted(range(len(pool)), key=lambda k: (-float(scores[k]), k))
                mined[index] = [pool[k] for k in order[: self.num_from_model]]
        rest = self.num_negatives - self.num_from_model
        return [
            hard
            + self._sampler.sample(example, rest, self._rng("uniform", example, round_index), {*hard, *self.exclude})
            for example, hard in zip(examples, mined)
        ]

    def rows(self, examples: Sequence[UserExample], negatives: Sequence[Sequence[str]]) -> Dataset:
        """`build_preference_dataset` rows for `examples` with the given negatives (e.g. from `mine`)."""
        return build_preference_dataset(
            self.log,
            examples,
            self.num_negatives,
            self.prompt_style,
            conversational=self.conversational,
            seed=self.seed,
            list_style=self.list_style,
            answer_prefix=self.answer_prefix,
            negatives=negatives,
        )


class MinedNegativesTraining:
    """Train a `DMPOTrainer` in rounds of one epoch, each on negatives mined by the model as it is at that round.

    `args.num_train_epochs` (a whole number) is the number of rounds; `max_steps` must be unset. The trainer is built
    here (`self.trainer`, trained one epoch per round) from `model`, `args` and `trainer_kwargs` (`ref_model`,
    `processing_class`, `peft_config`, `eval_dataset`, `callbacks`, ...). `train()` returns the last round's
    `TrainOutput` with the steps of all rounds; `log_history` holds every round's log, each entry with its
    `mining_round`, and `negatives` each round's negative ids per example. See the module docstring for what is
    refreshed and what carries across rounds.

    Example:
    ```python
    >>> miner = NegativeMiner(log, num_negatives=4, model_fraction=0.5)  # doctest: +SKIP
    >>> training = MinedNegativesTraining(model, miner, split.train, DMPOConfig("out", num_train_epochs=3),
    ...                                   processing_class=tokenizer, peft_config=LoraConfig())  # doctest: +SKIP
    >>> training.train().global_step  # doctest: +SKIP
    75
    ```
    """

    def __init__(self, model, miner: NegativeMiner, examples: Sequence[UserExample], args, **trainer_kwargs: Any):
        epochs = args.num_train_epochs
        if args.max_steps is not None and args.max_steps > 0:
            raise ValueError(
                f"model negatives train whole epochs: set num_train_epochs, not max_steps={args.max_steps}"
            )
        if epochs < 1 or epochs != int(epochs):
            raise ValueError(f"model negatives need a whole number of epochs (one mining round each), got {epochs}")
        adapter = trainer_kwargs.get("peft_config") is not None or hasattr(model, "peft_config")
        if (
            getattr(args, "precompute_ref_log_probs", False)
            and trainer_kwargs.get("ref_model") is None
            and not adapter
        ):
            raise ValueError(
                "precompute_ref_log_probs with model negatives needs a reference that stays available after the "
                "first round: a LoRA adapter (peft_config) or an explicit ref_model"
            )
        tokenizer = trainer_kwargs.get("processing_class")
        if tokenizer is None:
            raise ValueError("MinedNegativesTraining needs processing_class (the tokenizer the miner scores with)")
        self.miner, self.examples, self.num_rounds = miner, list(examples), int(epochs)
        self.negatives: list[list[list[str]]] = []
        self.log_history: list[dict[str, Any]] = []
        rows = self._rows(model, tokenizer, 0)
        self.trainer = DMPOTrainer(model, args=replace(args, num_train_epochs=1), train_dataset=rows, **trainer_kwargs)

    def _rows(self, model, tokenizer, round_index: int) -> Dataset:
        negatives = self.miner.mine(model, tokenizer, self.examples, round_index)
        self.negatives.append(negatives)
        return self.miner.rows(self.examples, negatives)

    def _schedule(self) -> None:
        """One optimizer and one learning-rate schedule over the steps of all rounds, kept by every round."""
        trainer, args = self.trainer, self.trainer.args
        per_round = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
        total = per_round * self.num_rounds
        trainer.create_optimizer()
        trainer.lr_scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=trainer.optimizer,
            num_warmup_steps=args.get_warmup_steps(total),
            num_training_steps=total,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )

    def train(self):
        """Run every round: mine (from round 2 on; round 1's rows were mined when the trainer was built), train one
        epoch. Returns the last round's `TrainOutput` with `global_step` counting the steps of all rounds."""
        trainer = self.trainer
        self._schedule()
        steps, loss_sum, output = 0, 0.0, None
        for round_index in range(self.num_rounds):
            if round_index:
                rows = self._rows(trainer.model, trainer.processing_class, round_index)
                trainer.train_dataset = trainer.prepare_dataset(rows, "train")
            output = trainer.train()
            steps += output.global_step
            loss_sum += output.training_loss * output.global_step
            self.log_history += [{**entry, "mining_round": round_index} for entry in trainer.state.log_history]
        return TrainOutput(steps, loss_sum / max(steps, 1), output.metrics)
