"""The tenant plane: each tenant's SLOs, costs and budgets over an HTTP API, isolated by
construction (every PromQL selector gets the tenant matcher)."""

if __name__ != "gpuslo.tenants":  # the folder is gpuslo.tenants; one module, one name
    raise ImportError(
        "import gpuslo.tenants, not tenants: this folder is part of the gpuslo package"
    )
