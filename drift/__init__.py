"""Drift jobs: request feature distributions against a reference window (Evidently)."""

if __name__ != "gpuslo.drift":  # the folder is gpuslo.drift; one module, one name
    raise ImportError("import gpuslo.drift, not drift: this folder is part of the gpuslo package")


from .job import DriftResult, run

__all__ = ["DriftResult", "run"]
