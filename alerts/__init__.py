"""Alertmanager configuration for gpuslo's alerts (``gpuslo alerts config``)."""

from .config import alertmanager_config

__all__ = ["alertmanager_config"]
