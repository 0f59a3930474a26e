"""Lints that need the live Prometheus: latency thresholds that are not bucket boundaries, and
SLIs with too little traffic for their shortest alert window."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from gpuslo.foundation.errors import SpecProblem
from gpuslo.foundation.promql import matchers, number

from .model import SLO

DEFAULT_MIN_EVENTS = 10


class PrometheusUnreachable(Exception):
    """The Prometheus given with --prometheus did not answer a query."""


def query(url: str, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Instant query; the result vector."""
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError) as err:
        raise PrometheusUnreachable(f"cannot query Prometheus at {url}: {err}") from err
    if body.get("status") != "success":
        raise PrometheusUnreachable(f"Prometheus at {url} refused {promql!r}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def lint_live(
    slos: Iterable[SLO], url: str, min_events: int = DEFAULT_MIN_EVENTS
) -> list[SpecProblem]:
    """Warnings from the live data; PrometheusUnreachable if Prometheus does not answer."""
    out = []
    for slo in slos:
        if slo.histogram:
            sel = matchers(dict(slo.selector))
            rows = query(url, f"count by (le) ({slo.histogram}_bucket{sel})")
            bounds = sorted(float(r["metric"]["le"]) for r in rows if "le" in r["metric"])
            if not bounds:
                out.append(
                    SpecProblem(
                        *slo.source,
                        "latency",
                        (f"no {slo.histogram}_bucket series match {sel or '{}'} on {url}"),
                        "warning",
                    )
                )
            elif not any(math.isclose(b, slo.threshold, rel_tol=1e-9) for b in bounds):
                shown = ", ".join(number(b) for b in bounds if math.isfinite(b))
                out.append(
                    SpecProblem(
                        *slo.source,
                        "latency.threshold",
                        (
                            f"{number(slo.threshold)}s is not a bucket boundary of {slo.histogram} "
                            f"(boundaries: {shown}); every request would count as slow"
                        ),
                        "warning",
                    )
                )
        shortest = min((t.short_window for t in slo.tiers), default=300.0)
        rows = query(url, slo.total_query)
        rate = float(rows[0]["value"][1]) if rows else 0.0
        events = rate * shortest
        if events < min_events:
            out.append(
                SpecProblem(
                    *slo.source,
                    "traffic",
                    (
                        f"about {events:.1f} events per {number(shortest / 60)}m short window "
                        f"(fewer than {min_events}): one failure would look like an outage; "
                        "set alerting.min_events"
                    ),
                    "warning",
                )
            )
    return out
