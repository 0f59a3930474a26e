"""Input/output distribution drift jobs (not built yet)."""

__all__: list[str] = []
