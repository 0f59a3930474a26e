"""Grafana dashboards as code (grafana-foundation-sdk), generated from the SLO specs."""

if __name__ != "gpuslo.dashboards":  # the folder is gpuslo.dashboards; one module, one name
    raise ImportError(
        "import gpuslo.dashboards, not dashboards: this folder is part of the gpuslo package"
    )


from .generate import all_dashboards, check, write

__all__ = ["all_dashboards", "check", "write"]
