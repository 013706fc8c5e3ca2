"""Every way to get an `InteractionLog`, and the name -> loader registry the CLI uses.

The loaders live in `tables` (any CSV/TSV/parquet pair) and `movielens` (GroupLens, RecBole, download);
this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..cache import dataset_cache_dir as default_cache_dir  # the old name of the datasets' cache
from .download import ChecksumError, DownloadError
from .log import InteractionLog
from .movielens import MOVIELENS, load_grouplens, load_movielens, load_recbole_atomic, recbole_example_dir
from .tables import load_interactions


__all__ = [
    "DATASETS",
    "ChecksumError",
    "DownloadError",
    "default_cache_dir",
    "load_dataset_by_name",
    "load_grouplens",
    "load_interactions",
    "load_movielens",
    "load_recbole_atomic",
    "recbole_example_dir",
    "register_dataset",
    "registered_name",
]

DATASETS: dict[str, Callable[..., InteractionLog]] = {name: partial(load_movielens, name) for name in MOVIELENS}
_ALIASES = {"ml-100k": "movielens-100k", "ml-1m": "movielens-1m", "ml100k": "movielens-100k", "ml1m": "movielens-1m"}


def register_dataset(name: str, loader: Callable[..., InteractionLog]) -> None:
    """Make `load_dataset_by_name(name, **kwargs)` call `loader(**kwargs)`."""
    DATASETS[name.lower()] = loader


def registered_name(name: str) -> str | None:
    """The registry key `name` stands for ("ml-100k" -> "movielens-100k"), or None when it names no dataset.

    Example:
    ```python
    >>> registered_name("ML-100K"), registered_name("my/preference-data")
    ('movielens-100k', None)
    ```
    """
    key = _ALIASES.get(name.lower(), name.lower())
    return key if key in DATASETS else None


def load_dataset_by_name(name: str, **kwargs) -> InteractionLog:
    """Load a registered dataset: "movielens-100k" or "movielens-1m" (also "ml-100k", "ml-1m"), or your own.

    Keyword arguments go to the loader, e.g. `data_dir=`, `cache_dir=`, `download=`, `min_rating=` for MovieLens
    (see `load_movielens`).

    Example:
    ```python
    >>> sorted(DATASETS)
    ['movielens-100k', 'movielens-1m']
    >>> load_dataset_by_name("ml-100k").num_users  # doctest: +SKIP
    943
    ```
    """
    key = registered_name(name)
    if key is None:
        raise ValueError(f"Unknown dataset {name!r}; choose from {sorted(DATASETS)} or call register_dataset()")
    return DATASETS[key](**kwargs)
