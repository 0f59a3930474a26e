"""Digital twin of a GPU fleet (not built yet)."""

__all__: list[str] = []
