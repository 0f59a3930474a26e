"""Alertmanager webhook receiver and guarded actions (not built yet)."""

if __name__ != "gpuslo.remediation":  # the folder is gpuslo.remediation; one module, one name
    raise ImportError(
        "import gpuslo.remediation, not remediation: this folder is part of the gpuslo package"
    )


__all__: list[str] = []
