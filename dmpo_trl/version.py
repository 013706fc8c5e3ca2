"""The version of dmpo-trl (read by setup.cfg, recorded in every results file)."""

__version__ = "0.1.0.dev0"
