"""Samples of each side from Prometheus: instant queries over a window, on the canonical
request series and the cost recording rules (``gpuslo cost rules``)."""

from __future__ import annotations

import math

from gpuslo.foundation import conventions as c
from gpuslo.foundation import prometheus
from gpuslo.foundation.promql import matchers, number, quote

from .analysis import Sample
from .spec import CanarySpec, Side

HISTOGRAMS = {
    "ttft": c.TIME_TO_FIRST_TOKEN,
    "tpot": c.TIME_PER_OUTPUT_TOKEN,
    "e2e": c.REQUEST_DURATION,
}


def pod_matchers(side: Side) -> str:
    parts = [f"{k}=~{quote(v)}" for k, v in side.pods.items()]
    return "{" + ",".join(parts) + "}"


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def queries(spec: CanarySpec, side: Side, window: float) -> dict[str, str]:
    """The PromQL of every measurement of a side over ``window`` seconds, ending now."""
    sel = matchers(side.selector)
    w = _range(window)
    interval = spec.seconds("rule_interval")
    step = _range(interval)
    out = {
        "requests": f"sum by ({c.LABEL_OUTCOME}) (increase({c.REQUESTS_TOTAL}{sel}[{w}]))",
        "tokens": f"sum(increase({c.TOKEN_USAGE_TOTAL}{sel}[{w}]))",
    }
    for key, name in HISTOGRAMS.items():
        out[key] = f"sum by (le) (increase({name}_bucket{sel}[{w}]))"
    if side.pods:
        pods = pod_matchers(side)
        out["dollars"] = f"sum_over_time(sum({c.COST_POD}{pods})[{w}:{step}]) * {number(interval)}"
        out["gpu_seconds"] = (
            f"sum_over_time(sum({c.COST_POD_SHARE}{pods})[{w}:{step}]) * {number(interval)}"
        )
    return out


def check_queries(spec: CanarySpec, window: float) -> dict[str, list[str]]:
    """For each check, the PromQL its evidence comes from (baseline first, then canary)."""
    sides = [queries(spec, spec.baseline, window), queries(spec, spec.canary, window)]
    out: dict[str, list[str]] = {}
    for ch in spec.checks:
        if ch.kind == "latency":
            keys = [str(ch.metric)]
        elif ch.kind in ("error_ratio", "rejection_ratio"):
            keys = ["requests"]
        else:
            keys = ["dollars" if ch.kind == "cost_per_1m_tokens" else "gpu_seconds", "tokens"]
        out[ch.id] = [q[k] for q in sides for k in keys if k in q]
    return out


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


class PrometheusSource:
    """Reads a side's sample over a window ending at ``end`` from a Prometheus."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout

    def _scalar(self, expr: str, at: float) -> float | None:
        found = prometheus.instant(self.url, expr, at, self.timeout)
        if not found:
            return None
        return sum(float(s["value"][1]) for s in found)

    def sample(self, spec: CanarySpec, side: Side, window: float, end: float) -> Sample:
        q = queries(spec, side, window)
        out = Sample()
        for s in prometheus.instant(self.url, q["requests"], end, self.timeout):
            value = float(s["value"][1])
            if not math.isnan(value):
                out.outcomes[s["metric"].get(c.LABEL_OUTCOME, "")] = value
        out.tokens = self._scalar(q["tokens"], end) or 0.0
        for key in HISTOGRAMS:
            rows = prometheus.instant(self.url, q[key], end, self.timeout)
            merged: dict[float, float] = {}  # le="1" and le="1.0" are one bucket
            for s in rows:
                value = float(s["value"][1])
                if not math.isnan(value):
                    le = _le(s["metric"].get("le", "+Inf"))
                    merged[le] = merged.get(le, 0.0) + value
            buckets = sorted(merged.items())
            if buckets and math.isinf(buckets[-1][0]):
                out.histograms[key] = buckets
        if "dollars" in q:
            out.dollars = self._scalar(q["dollars"], end)
            out.gpu_seconds = self._scalar(q["gpu_seconds"], end)
        return out
