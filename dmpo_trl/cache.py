"""Where dmpo-trl keeps what it fetches or converts once: downloaded datasets and GGUF models converted to checkpoints.

One root, `$DMPO_TRL_CACHE`, else `$XDG_CACHE_HOME/dmpo-trl`, else `~/.cache/dmpo-trl`: datasets are unpacked into the
root itself (`dataset_cache_dir`), converted models into its `models` folder (`model_cache_dir`).

Example:
```python
>>> model_cache_dir() == dataset_cache_dir() / "models"
True
```
"""

from __future__ import annotations

import os
from pathlib import Path


__all__ = ["CACHE_ENV", "cache_root", "dataset_cache_dir", "model_cache_dir"]

CACHE_ENV = "DMPO_TRL_CACHE"
"""The environment variable naming the cache root."""


def cache_root() -> Path:
    """`$DMPO_TRL_CACHE`, else `$XDG_CACHE_HOME/dmpo-trl`, else `~/.cache/dmpo-trl`.

    Example:
    ```python
    >>> import os
    >>> cache_root().name == "dmpo-trl" or bool(os.environ.get(CACHE_ENV))
    True
    ```
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dmpo-trl"


def dataset_cache_dir() -> Path:
    """Where downloaded datasets are unpacked (`dmpo_trl.data.load_movielens`): the cache root itself."""
    return cache_root()


def model_cache_dir() -> Path:
    """Where GGUF models are converted into plain checkpoints (`dmpo_trl.models.resolve_model_path`): the cache
    root's `models` folder.

    Example:
    ```python
    >>> model_cache_dir().name
    'models'
    ```
    """
    return cache_root() / "models"
