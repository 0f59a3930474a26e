"""One runbook per alert (not built yet)."""

if __name__ != "gpuslo.runbooks":  # the folder is gpuslo.runbooks; one module, one name
    raise ImportError(
        "import gpuslo.runbooks, not runbooks: this folder is part of the gpuslo package"
    )


__all__: list[str] = []
