"""Drift jobs: request feature distributions against a reference window (Evidently)."""

from .job import DriftResult, run

__all__ = ["DriftResult", "run"]
