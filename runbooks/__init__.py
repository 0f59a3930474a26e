"""One runbook per alert (not built yet)."""

__all__: list[str] = []
