"""What a tenant reads: its SLOs (the fleet's SLOs evaluated over its own traffic), its spend
and unit costs by model and day, and its budget with a month-end forecast.

The SLOs are the slo_engine's: each SLI query goes through the same rewriter as a tenant's
own queries (so it sees only that tenant's series), its base rates come from Prometheus and
the evaluator computes burn rates, budget remaining and firing tiers as the rules would.
Spend is the chargeback report's (``cost_model.report.build``) per UTC day, kept to the rows
of the tenant; a finished day is computed once and cached.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gpuslo.foundation.durations import format_duration, parse_duration

from .config import Plane
from .promql import Refused, Scope, enforce

DAY = 86400.0
MAX_CACHED_DAYS = 400


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _last(values: Any) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[~np.isnan(arr)]
    return _finite(ok[-1]) if len(ok) else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def month_bounds(now: float) -> tuple[float, float]:
    """The UTC calendar month holding ``now``: its start and end (Unix seconds)."""
    d = datetime.fromtimestamp(now, UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    days = calendar.monthrange(d.year, d.month)[1]
    return start.timestamp(), start.timestamp() + days * DAY


class _Ttl:
    """A small thread-safe cache of answers for ``ttl`` seconds, one per key."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._lock = threading.Lock()
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (self.clock(), value)
        return value


class Views:
    """The tenant plane's computed answers, over one Prometheus."""

    def __init__(self, plane: Plane, url: str | None = None) -> None:
        self.plane = plane
        self.url = url or plane.spec.prometheus
        self.label = plane.spec.tenant_label
        self._cache = _Ttl(parse_duration(plane.spec.cache))
        self._days: dict[float, list[dict[str, Any]]] = {}
        self._days_lock = threading.Lock()
        self._slos: list[Any] | None = None
        self._catalog: Any = None

    # ------------------------------------------------------------------ SLOs
    def slos(self) -> list[Any]:
        if self._slos is None:
            from gpuslo.slo_engine.specs import load_specs

            found, _ = load_specs(self.plane.slo_paths) if self.plane.slo_paths else ([], [])
            self._slos = found
        return self._slos

    def tenant_slos(self, tenant: str, now: float | None = None) -> list[dict[str, Any]]:
        return list(
            self._cache.get(("slos", tenant), lambda: self._tenant_slos(tenant, now or time.time()))
        )

    def evaluate(self, slo: Any, mine: Any, now: float) -> dict[str, Any]:
        """One SLO (``mine``: its queries already restricted to the tenant) evaluated as its
        rules would record it, up to ``now``."""
        from gpuslo.slo_engine.evaluator import evaluate
        from gpuslo.slo_engine.history import sli_from_prometheus
        from gpuslo.slo_engine.rules import period_name

        step = parse_duration(self.plane.spec.slo_step)
        # a calendar month can be 31 days: read a day more than the nominal period
        longest = max([slo.period + DAY, *(t.long_window for t in slo.tiers)])
        end = now  # the grid ends now, so a young series has its last evaluation
        start = end - math.ceil(longest / step) * step
        data = sli_from_prometheus(self.url, mine, start, end, step)
        ev = evaluate(mine, data)
        period = period_name(slo)
        ratio = _last(ev.error_ratio[period])
        return {
            "name": slo.name,
            "service": slo.service,
            "kind": slo.kind,
            "description": slo.description,
            "objective": slo.objective,
            "period": period,
            "sli": None if ratio is None else 1.0 - ratio,
            "error_ratio": ratio,
            "budget_remaining": _last(ev.budget_remaining),
            "burn_rates": {w: _last(v) for w, v in ev.burn_rate.items()},
            "firing": sorted(name for name, cond in ev.firing.items() if cond[-1:].any()),
            "tiers": [
                {
                    "name": t.name,
                    "severity": t.severity,
                    "long_window": format_duration(t.long_window),
                    "short_window": format_duration(t.short_window),
                    "factor": t.factor(slo.period),
                }
                for t in slo.tiers
            ],
            "at": _iso(end),
        }

    def _tenant_slos(self, tenant: str, now: float) -> list[dict[str, Any]]:
        wanted = self.plane.tenant(tenant).slos
        scope = Scope(tenant, self.label)
        out = []
        for slo in self.slos():
            if slo.kind == "cost" or (wanted is not None and slo.name not in wanted):
                continue  # cost SLOs price models, not tenants: the budget is the tenant's
            try:
                mine = dataclasses.replace(
                    slo,
                    errors_query=enforce(slo.errors_query, scope),
                    total_query=enforce(slo.total_query, scope),
                )
            except Refused:
                continue  # an SLO whose selector names another tenant is not this one's
            out.append(self.evaluate(slo, mine, now))
        return out

    # ------------------------------------------------------------------ costs
    def catalog(self) -> Any:
        if self._catalog is None and self.plane.catalog_path is not None:
            from gpuslo.cost_model.catalog import load_catalog

            self._catalog = load_catalog(self.plane.catalog_path)
        return self._catalog

    def _day_rows(self, day: float, now: float) -> list[dict[str, Any]]:
        """Every chargeback row of one UTC day (up to ``now`` for today)."""
        from gpuslo.cost_model.report import Window, build

        finished = day + DAY <= now
        with self._days_lock:
            if finished and day in self._days:
                return self._days[day]
        step = parse_duration(self.plane.spec.cost_step)
        end = min(day + DAY, now)
        n = math.floor((end - day) / step)
        if n < 1:
            return []
        _, rows = build(self.url, self.catalog(), Window(end - (n - 1) * step, end, step))
        if finished:
            with self._days_lock:
                if len(self._days) >= MAX_CACHED_DAYS:
                    self._days.pop(min(self._days))
                self._days[day] = rows
        return rows

    def costs(self, tenant: str, days: int = 0, now: float | None = None) -> dict[str, Any]:
        """Spend and unit costs by model and UTC day, this month so far (or the last ``days``)."""
        now = now or time.time()
        return dict(
            self._cache.get(("costs", tenant, days), lambda: self._costs(tenant, days, now))
        )

    def _costs(self, tenant: str, days: int, now: float) -> dict[str, Any]:
        today = math.floor(now / DAY) * DAY
        first = today - (days - 1) * DAY if days > 0 else month_bounds(now)[0]
        out_days = []
        total = 0.0
        by_model: dict[str, dict[str, float]] = {}
        day = first
        while day <= today:
            entries = []
            for row in self._day_rows(day, now):
                if row.get("tenant") != tenant:
                    continue
                entries.append(_unit_row(row))
                total += float(row["allocated_dollars"])
                agg = by_model.setdefault(
                    row["model"],
                    {"dollars": 0.0, "requests": 0.0, "input_tokens": 0.0, "output_tokens": 0.0},
                )
                agg["dollars"] += float(row["allocated_dollars"])
                for k in ("requests", "input_tokens", "output_tokens"):
                    agg[k] += float(row.get(k) or 0.0)
            out_days.append(
                {
                    "day": _iso(day)[:10],
                    "dollars": sum(e["dollars"] for e in entries),
                    "models": entries,
                }
            )
            day += DAY
        models = [
            _unit_row({"model": m, "allocated_dollars": a["dollars"], **a})
            for m, a in sorted(by_model.items())
        ]
        return {
            "tenant": tenant,
            "currency": self.catalog().currency,
            "from": _iso(first),
            "to": _iso(now),
            "dollars": total,
            "models": models,
            "days": out_days,
        }

    def budget(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        """Spend this month against the budget, and the day it runs out at the month's rate."""
        now = now or time.time()
        cfg = self.plane.tenant(tenant).budget
        if cfg is None:
            return {"tenant": tenant, "budget": None}
        costs = self.costs(tenant, now=now)
        spent = float(costs.get("dollars", 0.0))
        start, end = month_bounds(now)
        return {
            "tenant": tenant,
            **forecast(cfg.monthly, spent, start, end, now),
            "slo": self._cache.get(("budget-slo", tenant), lambda: self._budget_slo(tenant, now)),
        }

    def _budget_slo(self, tenant: str, now: float) -> dict[str, Any] | None:
        """The budget's cost SLO (``budget.budget_slos``) as its rules would record it; its
        values are None until the cost recording rules run in Prometheus."""
        from .budget import budget_slos

        for slo in budget_slos(self.plane):
            if dict(slo.labels).get(self.label) == tenant:
                return self.evaluate(slo, slo, now)
        return None


def forecast(budget: float, spent: float, start: float, end: float, now: float) -> dict[str, Any]:
    """The month's projected spend at its rate so far, and the day of the month the budget is
    gone at that rate (None when it lasts the month)."""
    elapsed = max(now - start, 1.0)
    rate = spent / elapsed  # per second
    projected = spent + rate * max(end - now, 0.0)
    gone_day = None
    gone_at = None
    if spent >= budget:
        gone_at = now
    elif rate > 0:
        t = now + (budget - spent) / rate
        if t < end:
            gone_at = t
    if gone_at is not None:
        gone_day = datetime.fromtimestamp(gone_at, UTC).day
    return {
        "budget": budget,
        "spent": spent,
        "remaining": budget - spent,
        "remaining_ratio": 1.0 - spent / budget,
        "month_start": _iso(start),
        "month_end": _iso(end),
        "rate_per_hour": rate * 3600.0,
        "projected_month_spend": projected,
        "exhausted_on_day": gone_day,
        "exhausted_at": None if gone_at is None else _iso(gone_at),
        "over_budget": spent >= budget,
    }


def _unit_row(row: dict[str, Any]) -> dict[str, Any]:
    dollars = float(row["allocated_dollars"])
    requests = float(row.get("requests") or 0.0)
    tokens = float(row.get("input_tokens") or 0.0) + float(row.get("output_tokens") or 0.0)
    return {
        "model": row["model"],
        "dollars": dollars,
        "requests": requests,
        "input_tokens": float(row.get("input_tokens") or 0.0),
        "output_tokens": float(row.get("output_tokens") or 0.0),
        "dollars_per_1m_tokens": dollars / tokens * 1e6 if tokens else None,
        "dollars_per_1k_requests": dollars / requests * 1e3 if requests else None,
    }
