"""Interaction logs -> user examples -> TRL preference datasets."""

from .log import InteractionLog, UserExample


__all__ = ["InteractionLog", "UserExample"]
