"""dmpo-trl: Direct Multi-Preference Optimization for LLM recommenders, as a drop-in TRL `DPOTrainer`.

The public names load lazily, so `import dmpo_trl.data` does not pull in torch and TRL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__


_EXPORTS = {
    "DMPOConfig": "config",
    "DMPOTrainer": "trainer",
    "DataCollatorForMultiPreference": "collator",
    "Ranker": "ranking",
    "dmpo_loss": "losses",
    "pairwise_sigmoid_loss": "losses",
    "sdpo_loss": "losses",
}

__all__ = [
    "__version__",
    "DMPOConfig",
    "DMPOTrainer",
    "DataCollatorForMultiPreference",
    "Ranker",
    "dmpo_loss",
    "pairwise_sigmoid_loss",
    "sdpo_loss",
]

if TYPE_CHECKING:
    from .collator import DataCollatorForMultiPreference
    from .config import DMPOConfig
    from .losses import dmpo_loss, pairwise_sigmoid_loss, sdpo_loss
    from .ranking import Ranker
    from .trainer import DMPOTrainer


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
