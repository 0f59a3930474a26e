"""Grafana dashboards as code (not built yet)."""

__all__: list[str] = []
