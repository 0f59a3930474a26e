"""The tenant plane: each tenant's SLOs, costs and budgets over an HTTP API, isolated by
construction (every PromQL selector gets the tenant matcher)."""

if __name__ != "gpuslo.tenants":  # the folder is gpuslo.tenants; one module, one name
    raise ImportError(
        "import gpuslo.tenants, not tenants: this folder is part of the gpuslo package"
    )

from .auth import Authenticator, Principal, Unauthorized
from .budget import budget_slos, forecast_rules, rule_groups
from .config import Plane, hash_token, load_plane, new_token
from .promql import Refused, Scope, enforce, enforce_selector
from .server import TenantApi
from .views import Views, forecast

__all__ = [
    "Authenticator",
    "Plane",
    "Principal",
    "Refused",
    "Scope",
    "TenantApi",
    "Unauthorized",
    "Views",
    "budget_slos",
    "enforce",
    "enforce_selector",
    "forecast",
    "forecast_rules",
    "hash_token",
    "load_plane",
    "new_token",
    "rule_groups",
]
