"""Alertmanager webhook receiver and guarded actions (not built yet)."""

__all__: list[str] = []
