"""dmpo-trl: Direct Multi-Preference Optimization for LLM recommenders, as a drop-in TRL `DPOTrainer`."""

from .collator import DataCollatorForMultiPreference
from .config import DMPOConfig
from .losses import dmpo_loss, pairwise_sigmoid_loss, sdpo_loss
from .trainer import DMPOTrainer


__version__ = "0.1.0.dev0"

__all__ = [
    "DMPOConfig",
    "DMPOTrainer",
    "DataCollatorForMultiPreference",
    "dmpo_loss",
    "pairwise_sigmoid_loss",
    "sdpo_loss",
]
