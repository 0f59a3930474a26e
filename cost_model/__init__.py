"""GPU price catalog, allocation and unit costs (not built yet)."""

__all__: list[str] = []
