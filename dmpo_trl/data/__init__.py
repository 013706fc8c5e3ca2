"""Interaction logs -> user examples -> TRL preference datasets.

```python
from dmpo_trl.data import load_movielens, few_shot_split, build_preference_dataset

log = load_movielens("movielens-100k")                      # 943 users, 1682 items
split = few_shot_split(log, num_train_users=100, seed=0)     # user-disjoint; target = each user's last item
train = build_preference_dataset(log, split.train, num_negatives=4, prompt_style="candidates")
```
"""

from ..cache import dataset_cache_dir
from . import loaders
from .builder import build_preference_dataset, build_sft_dataset
from .domains import (
    CatalogueSplit,
    CrossDomainSplit,
    cross_domain_split,
    item_labels_from_table,
    parse_domain,
    restrict_log,
    split_catalogue,
)
from .loaders import *  # noqa: F403 (loaders.__all__: the loaders, their registry and their errors)
from .log import InteractionLog, UserExample
from .movielens import load_movielens_genres
from .negatives import STRATEGIES, NegativeSampler, candidate_sets, example_rng, sample_negatives
from .prompts import (
    ANSWER_PREFIX,
    CANDIDATES_TEMPLATE,
    HISTORY_TEMPLATE,
    TEMPLATES,
    builtin_template,
    render_prompt,
    render_titles,
    resolve_template,
)
from .splits import FewShotSplit, example_at, few_shot_split, leave_last_out, sample_examples, target_positions


__all__ = [
    *loaders.__all__,
    "ANSWER_PREFIX",
    "CANDIDATES_TEMPLATE",
    "HISTORY_TEMPLATE",
    "STRATEGIES",
    "TEMPLATES",
    "CatalogueSplit",
    "CrossDomainSplit",
    "FewShotSplit",
    "InteractionLog",
    "NegativeSampler",
    "UserExample",
    "build_preference_dataset",
    "build_sft_dataset",
    "builtin_template",
    "candidate_sets",
    "cross_domain_split",
    "dataset_cache_dir",
    "example_at",
    "example_rng",
    "few_shot_split",
    "item_labels_from_table",
    "leave_last_out",
    "load_movielens_genres",
    "parse_domain",
    "render_prompt",
    "render_titles",
    "resolve_template",
    "restrict_log",
    "sample_examples",
    "sample_negatives",
    "split_catalogue",
    "target_positions",
]
