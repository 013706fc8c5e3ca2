"""dmpo-trl: Direct Multi-Preference Optimization for LLM recommenders, as a drop-in TRL `DPOTrainer`."""

__version__ = "0.1.0.dev0"
