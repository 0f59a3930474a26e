"""GPU price catalog, allocation and unit costs (not built yet)."""

if __name__ != "gpuslo.cost_model":  # the folder is gpuslo.cost_model; one module, one name
    raise ImportError(
        "import gpuslo.cost_model, not cost_model: this folder is part of the gpuslo package"
    )


__all__: list[str] = []
