"""The cost model: a validated price catalog, GPU (and CPU pod) time allocated to pods, models
and tenants, unit costs, cost recording rules and chargeback reports."""

if __name__ != "gpuslo.cost_model":  # the folder is gpuslo.cost_model; one module, one name
    raise ImportError(
        "import gpuslo.cost_model, not cost_model: this folder is part of the gpuslo package"
    )

from .allocation import Costs, CpuPod, GpuHistory, Holding, UnitCosts, allocate
from .catalog import PriceCatalog, load_catalog
from .rules import check_regexes, rule_groups

__all__ = [
    "Costs",
    "CpuPod",
    "GpuHistory",
    "Holding",
    "PriceCatalog",
    "UnitCosts",
    "allocate",
    "check_regexes",
    "load_catalog",
    "rule_groups",
]
