"""A tenant's monthly spend budget as rules: a cost SLO (burn-rate alerts, as any SLO) and a
forecast alert.

The cost SLO is the slo_engine's time-slice cost SLI (docs/cost.md, "Cost SLOs") over the
tenant's spend rate: each evaluation is bad while ``gpuslo:tenant_cost:dollars_per_second``
of the tenant, times 3600, is above the budget spread evenly over a 30-day month. Its period
is the UTC calendar month, so the budget resets with the bill. The forecast alert fires
while the recent spend rate (``forecast_window``), kept up for a whole month, would spend
more than the budget; the budget endpoint names the day it runs out.

Both read the cost recording rules (``gpuslo cost rules``) in the same Prometheus.
"""

from __future__ import annotations

from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_range
from gpuslo.foundation.promql import number, quote

from .config import Plane

MONTH_SECONDS = 30 * 86400.0  # the nominal month of calendar SLOs (slo_engine.model)


def _series(plane: Plane, tenant: str) -> str:
    return f"sum({c.COST_TENANT}{{{plane.spec.tenant_label}={quote(tenant)}}})"


def budget_slos(plane: Plane) -> list[Any]:
    """One cost SLO per tenant with a budget."""
    from gpuslo.slo_engine.model import CALENDAR_PERIODS, SLO
    from gpuslo.slo_engine.windows import load_tiers

    tiers = load_tiers()
    out = []
    for t in plane.spec.tenants:
        if t.budget is None:
            continue
        per_hour = t.budget.monthly / (MONTH_SECONDS / 3600.0)
        spend = _series(plane, t.name)
        month = CALENDAR_PERIODS["month"]
        out.append(
            SLO(
                name=f"{t.name}-budget",
                service=c.SERVICE_TENANT_BUDGET,
                objective=round(t.budget.objective / 100.0, 12),
                period=month.nominal,
                calendar=month,
                errors_query=f"({spend} * 3600) > bool {number(per_hour)}",
                total_query=f"({spend}) >= bool 0",
                tiers=tiers,
                description=f"tenant {t.name} spends at most {number(t.budget.monthly)} a month",
                labels=((plane.spec.tenant_label, t.name),),
                source=(str(plane.path), 1, 1),
                kind="cost",
                unit="time slices",
            )
        )
    return out


def forecast_rules(plane: Plane) -> list[dict[str, Any]]:
    """Per tenant with a budget: alert while the recent rate would overspend the month."""
    rules = []
    for t in plane.spec.tenants:
        if t.budget is None:
            continue
        window = format_range(_seconds(t.budget.forecast_window))
        spend = _series(plane, t.name)
        expr = (
            f"avg_over_time(({spend})[{window}:1m]) * {number(MONTH_SECONDS)} "
            f"> {number(t.budget.monthly)}"
        )
        rules.append(
            {
                "alert": c.ALERT_TENANT_BUDGET_FORECAST,
                "expr": expr,
                "for": "15m",
                "labels": {
                    plane.spec.tenant_label: t.name,
                    "severity": "ticket",
                    "slo": f"{t.name}-budget",
                },
                "annotations": {
                    "summary": f"tenant {t.name} is on course to overspend its monthly budget",
                    "description": (
                        f"At the last {t.budget.forecast_window}'s rate, a month costs "
                        "{{ $value | humanize }}, over the budget of "
                        f"{number(t.budget.monthly)}."
                    ),
                },
            }
        )
    return rules


def rule_groups(plane: Plane) -> list[dict[str, Any]]:
    """The budget SLOs' groups (slo_engine) and one group of forecast alerts."""
    from gpuslo.slo_engine.rules import rule_groups as slo_groups

    groups = slo_groups(budget_slos(plane))
    forecasts = forecast_rules(plane)
    if forecasts:
        groups.append({"name": c.RULE_GROUP_TENANT_BUDGETS, "rules": forecasts})
    return groups


def _seconds(duration: str) -> float:
    from gpuslo.foundation.durations import parse_duration

    return parse_duration(duration)
