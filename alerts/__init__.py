"""Alertmanager configuration for gpuslo's alerts (``gpuslo alerts config``)."""

if __name__ != "gpuslo.alerts":  # the folder is gpuslo.alerts; one module, one name
    raise ImportError("import gpuslo.alerts, not alerts: this folder is part of the gpuslo package")


from .config import alertmanager_config

__all__ = ["alertmanager_config"]
