"""Generated alert rules and Alertmanager config (not built yet)."""

__all__: list[str] = []
