"""Grafana dashboards as code (grafana-foundation-sdk), generated from the SLO specs."""

from .generate import all_dashboards, check, write

__all__ = ["all_dashboards", "check", "write"]
