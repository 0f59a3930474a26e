"""gpuslo: SLO and cost observability for GPU inference fleets. The CLI and naming contract."""

__version__ = "0.1.0"

__all__ = ["__version__"]
