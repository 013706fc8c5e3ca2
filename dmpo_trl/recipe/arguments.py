"""The recipe's own settings, beside TRL's `DMPOConfig` and `RecModelConfig`: `RecDataArguments` (which log, which
users, how prompts and negatives are built) and `RecipeArguments` (what is ranked, logged and saved around training).
Every field is a `dmpo-trl train` flag (`trl.TrlParser`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..data import STRATEGIES, registered_name
from ..data.prompts import DEFAULT_ITEM_NOUN, builtin_template, item_nouns, resolve_template, uses_candidates
from ..evaluation import BASELINES
from ..mining import DEFAULT_POOL_SIZE
from ..retrieval import RETRIEVERS


__all__ = ["LEARNED_NEGATIVES", "TRAINING_NEGATIVES", "RecDataArguments", "RecipeArguments"]

TRAINING_NEGATIVES = (*STRATEGIES, "model", "retriever")
"""`negative_strategy` values: the drawn ones (also used for the evaluation candidates), "model" (mined) and
"retriever" (the wrong items among a retriever's top ones, `dmpo_trl.retrieval.retriever_negatives`)."""
LEARNED_NEGATIVES = ("model", "retriever")
"""The strategies that pick training negatives with a model; evaluation candidates are then uniform."""


@dataclass
class RecDataArguments:
    """Which interactions, which users, and how prompts and negatives are built (`dmpo_trl.data`).

    Example:
    ```python
    >>> RecDataArguments(num_train_users=64, num_candidates=10).num_negatives
    4
    ```
    """

    dataset_name: str = field(
        default="movielens-100k",
        metadata={
            "help": "A registered interaction log (movielens-100k, movielens-1m, or one added with register_dataset), "
            "or a preference dataset with prompt/chosen/rejected: a `dmpo-trl prepare` or save_to_disk folder, "
            "JSON/JSONL/parquet files or a folder of them, or a Hub id.",
            "aliases": ["--dataset"],
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with the dataset's files (GroupLens or RecBole layout)."}
    )
    interactions: str | None = field(
        default=None,
        metadata={"help": "Your own interaction file (CSV/TSV/parquet: user_id,item_id,timestamp); needs --items."},
    )
    items: str | None = field(default=None, metadata={"help": "Your own item file (item_id,title)."})
    user_col: str = field(default="user_id", metadata={"help": "User column of --interactions."})
    item_col: str = field(default="item_id", metadata={"help": "Item column of --interactions and --items."})
    time_col: str = field(
        default="timestamp",
        metadata={"help": "Time column of --interactions (numbers or dates); empty: keep the file's order."},
    )
    title_col: str = field(default="title", metadata={"help": "Title column of --items."})
    item_noun: str = field(
        default=DEFAULT_ITEM_NOUN,
        metadata={"help": "What the built-in prompts call the items, plural ('books'; 'person/people' if irregular)."},
    )
    num_train_users: int = field(default=100, metadata={"help": "Users whose latest items are training rows."})
    targets_per_user: int = field(
        default=1,
        metadata={
            "help": "Training rows per training user: their latest items with at least min_history items before "
            "them, each a target (1: the last item; 0: every such item). Valid and test users give one row each."
        },
    )
    num_train_rows: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many training rows (a seeded sample, nested across sizes)."},
    )
    num_valid_users: int = field(
        default=50,
        metadata={
            "help": "Validation users: the trainer's preference eval set (eval_strategy), and the users the "
            "popularity prior's weight is chosen on (0: no prior)."
        },
    )
    num_test_users: int = field(default=500, metadata={"help": "Users for the ranking evaluation."})
    num_negatives: int = field(default=4, metadata={"help": "K rejected titles per training row."})
    num_candidates: int = field(
        default=20, metadata={"help": "Titles listed per prompt (target + negatives), also for evaluation."}
    )
    prompt_style: str | None = field(
        default=None,
        metadata={
            "help": "'history' (the user's items, then the question), 'candidates' (the S-DPO prompt that also lists "
            "the candidates), or a template with {history} and optionally {candidates}. Default: 'history' for "
            "likelihood ranking, the best measured; 'candidates' for generation mode."
        },
    )
    negative_strategy: str = field(
        default="uniform",
        metadata={
            "help": "How candidates/negatives are drawn; 'model': training negatives mined each epoch from the model "
            "being trained (the highest-scored wrong items of a uniform pool, see dmpo_trl.mining); 'retriever': "
            "drawn from the wrong items among --negative_retriever's top --retriever_pool (the items a reranker "
            "behind it faces); with either, evaluation candidates are uniform.",
            "choices": list(TRAINING_NEGATIVES),
        },
    )
    model_negative_fraction: float = field(
        default=1.0,
        metadata={
            "help": "With --negative_strategy model: the share of the K negatives mined from the model (rounded "
            "half up); the rest are drawn uniformly each epoch."
        },
    )
    mining_pool_size: int = field(
        default=DEFAULT_POOL_SIZE,
        metadata={"help": "With --negative_strategy model: uniform items scored per training row and epoch."},
    )
    negative_retriever: str = field(
        default="sasrec",
        metadata={
            "help": "With --negative_strategy retriever: the retriever ('sasrec', 'gru4rec' and 'bpr' need the "
            "classic extra), fitted without the training, validation and test targets.",
            "choices": list(RETRIEVERS),
        },
    )
    retriever_pool: int = field(
        default=20,
        metadata={"help": "With --negative_strategy retriever: negatives come from the retriever's top this many."},
    )
    conversational: bool | None = field(
        default=None,
        metadata={"help": "Chat-format prompts (message lists); default: when the tokenizer has a chat template."},
    )
    max_history: int = field(default=10, metadata={"help": "History items shown per prompt."})
    min_history: int = field(default=5, metadata={"help": "Skip users with fewer items before their last one."})
    split_seed: int | None = field(
        default=0,
        metadata={
            "help": "Seed of the user split, candidate lists and negatives (None: the training --seed). The same "
            "default in prepare, train and evaluate, so they hold out the same test users."
        },
    )

    def __post_init__(self):
        item_nouns(self.item_noun)
        counts = {name: getattr(self, name) for name in ("num_train_users", "num_valid_users", "num_test_users")}
        if min(counts.values()) < 0:
            raise ValueError(f"User counts must be >= 0, got {counts}")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (the target and a negative), got {self.num_candidates}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.negative_strategy not in TRAINING_NEGATIVES:
            raise ValueError(f"Unknown negative_strategy {self.negative_strategy!r}; choose from {TRAINING_NEGATIVES}")
        if not 0.0 <= self.model_negative_fraction <= 1.0:
            raise ValueError(f"model_negative_fraction must be between 0 and 1, got {self.model_negative_fraction}")
        if self.negative_retriever not in RETRIEVERS:
            raise ValueError(f"Unknown negative_retriever {self.negative_retriever!r}; choose from {RETRIEVERS}")
        if self.negative_strategy == "retriever" and self.retriever_pool <= self.num_negatives:
            raise ValueError(
                f"retriever_pool={self.retriever_pool} must exceed num_negatives={self.num_negatives}: the target "
                "may be among the retriever's top items"
            )
        if self.mining_pool_size < 1:
            raise ValueError(f"mining_pool_size must be >= 1, got {self.mining_pool_size}")
        if self.targets_per_user < 0:
            raise ValueError(f"targets_per_user must be >= 0 (0: every position), got {self.targets_per_user}")
        if self.num_train_rows is not None and self.num_train_rows < 1:
            raise ValueError(f"num_train_rows must be >= 1 (or unset: all rows), got {self.num_train_rows}")
        if self.interactions and not self.items:
            raise ValueError("--interactions needs --items (the file with item_id and title)")
        self._check_negatives(self.prompt_style or "history")

    def _check_negatives(self, prompt_style: str) -> None:
        with_candidates = uses_candidates(resolve_template(prompt_style))
        if with_candidates and self.negative_strategy in LEARNED_NEGATIVES:
            raise ValueError(
                f"--negative_strategy {self.negative_strategy} needs a prompt without a candidate list (prompt_style "
                "'history'): the negatives are chosen after the prompt is fixed"
            )
        if with_candidates and self.num_negatives > self.num_candidates - 1:
            raise ValueError(
                f"num_negatives={self.num_negatives} must be at most num_candidates - 1 = {self.num_candidates - 1}: "
                "the negatives are drawn from the candidates the prompt lists"
            )

    def for_mode(self, ranking_mode: str = "likelihood") -> RecDataArguments:
        """These arguments with `prompt_style` set: as given, else "candidates" for generation, "history" otherwise.

        Example:
        ```python
        >>> args = RecDataArguments()
        >>> args.for_mode("likelihood").prompt_style, args.for_mode("generation").prompt_style
        ('history', 'candidates')
        ```
        """
        style = self.prompt_style or ("candidates" if ranking_mode == "generation" else "history")
        self._check_negatives(style)
        return replace(self, prompt_style=style)

    @property
    def candidate_strategy(self) -> str:
        """How evaluation candidates (and candidate-prompt lists) are drawn: `negative_strategy`, or "uniform" when
        the training negatives are mined from the model or taken from a retriever.

        Example:
        ```python
        >>> RecDataArguments(negative_strategy="model").candidate_strategy
        'uniform'
        ```
        """
        return "uniform" if self.negative_strategy in LEARNED_NEGATIVES else self.negative_strategy

    @property
    def template(self) -> str:
        """The prompt template to render: `prompt_style`, with a built-in one speaking of `item_noun`."""
        style = self.prompt_style or "history"
        return style if self.item_noun == DEFAULT_ITEM_NOUN else builtin_template(style, self.item_noun)

    @property
    def is_interaction_log(self) -> bool:
        """Whether the data is an interaction log (own files or a registered name), not a preference dataset."""
        return bool(self.interactions) or registered_name(self.dataset_name) is not None


@dataclass
class RecipeArguments:
    """What the recipe evaluates, logs and saves around training.

    Example:
    ```python
    >>> RecipeArguments(baselines=["random"]).evaluate_before
    True
    ```
    """

    evaluate_before: bool = field(default=True, metadata={"help": "Rank the test users before training."})
    evaluate_after: bool = field(default=True, metadata={"help": "Rank the test users after training."})
    baselines: list[str] = field(
        default_factory=list,
        metadata={"help": "Baselines ranked on the same candidates: random, popular (none by default)."},
    )
    ranking_mode: str = field(
        default="likelihood",
        metadata={"help": "How the model ranks (see dmpo_trl.evaluation).", "choices": ["likelihood", "generation"]},
    )
    ranking_batch_size: int = field(default=20, metadata={"help": "Sequences per forward when ranking."})
    ranking_normalize: bool = field(
        default=False, metadata={"help": "Rank by mean log-prob per token instead of the sum."}
    )
    popularity_prior: float | None = field(
        default=None,
        metadata={
            "help": "Also rank the trained model by log-likelihood + this x log(1 + the item's interaction count), "
            "and save the weight in ranker.json. Default: chosen on the validation users (--num_valid_users) from "
            "dmpo_trl.prior.PRIOR_WEIGHTS by their NDCG@5 under uniform and popularity-matched candidates, or 0 "
            "(the model alone) without validation users."
        },
    )
    num_logged_examples: int = field(
        default=16, metadata={"help": "Users per model in the wandb table of example recommendations."}
    )
    save_final_model: bool = field(
        default=True, metadata={"help": "Save the trained model (or adapter) and tokenizer to output_dir."}
    )
    results_file: str | None = field(
        default="ranking_results.json",
        metadata={"help": "Ranking results JSON, relative to output_dir (empty: do not write)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Progress bars while ranking."})

    def __post_init__(self):
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"Unknown baselines {sorted(unknown)}; choose from {list(BASELINES)}")
        if self.ranking_batch_size < 1:
            raise ValueError(f"ranking_batch_size must be >= 1, got {self.ranking_batch_size}")
        if self.popularity_prior is not None and self.popularity_prior < 0:
            raise ValueError(f"popularity_prior must be >= 0, got {self.popularity_prior}")
        if self.popularity_prior and self.ranking_mode != "likelihood":
            raise ValueError(f"The popularity prior ranks by likelihood, not ranking_mode={self.ranking_mode!r}")
