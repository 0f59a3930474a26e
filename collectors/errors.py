"""Typed collector outcomes, kept apart the way node_exporter keeps ErrNoData from errors."""

from __future__ import annotations

import logging


class CollectorUnavailable(Exception):
    """The source is absent on this node (no driver, no InfiniBand): not a broken collector.

    The agent reports the collector's success as 0, logs the reason once at ``level`` and keeps
    serving every other collector.
    """

    def __init__(self, message: str, level: int = logging.WARNING) -> None:
        super().__init__(message)
        self.level = level
