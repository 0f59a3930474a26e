"""The same checks for Argo Rollouts and Flagger: an ``AnalysisTemplate`` (argoproj.io/v1alpha1)
and ``MetricTemplate`` objects (flagger.app/v1beta1) whose Prometheus queries compute, per
check, the canary's value relative to the baseline's over the spec's window.

What they carry is the point estimate against the tolerance (``result[0] <= 1.1``); the
sequential test and its false-rollback rate need the counts of every look, which neither
provider keeps, so they run only in gpuslo's controller (``gpuslo canary run``). A minimum
sample metric makes Argo's analysis inconclusive (the rollout pauses) rather than decide on
a quiet window; Flagger's ``thresholdRange`` has no inconclusive state, so there it is a
failed check that Flagger retries up to the canary's ``threshold``.
"""

from __future__ import annotations

from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.promql import matchers, number

from .prom import HISTOGRAMS, pod_matchers
from .spec import CanarySpec, Check, Side


def _w(spec: CanarySpec) -> str:
    return spec.window


def _unit(spec: CanarySpec, side: Side, kind: str) -> str:
    w = _w(spec)
    step = spec.rule_interval
    series = c.COST_POD if kind == "cost_per_1m_tokens" else c.COST_POD_SHARE
    num = f"sum_over_time(sum({series}{pod_matchers(side)})[{w}:{step}])"
    return f"({num} / sum(increase({c.TOKEN_USAGE_TOTAL}{matchers(side.selector)}[{w}])))"


def _ratio_of(spec: CanarySpec, side: Side, outcome: str) -> str:
    sel = matchers(side.selector)
    w = _w(spec)
    good = matchers({**side.selector, c.LABEL_OUTCOME: outcome})
    return (
        f"(sum(increase({c.REQUESTS_TOTAL}{good}[{w}])) or vector(0))"
        f" / sum(increase({c.REQUESTS_TOTAL}{sel}[{w}]))"
    )


def _quantile(spec: CanarySpec, side: Side, metric: str, q: float) -> str:
    name = HISTOGRAMS[metric]
    return (
        f"histogram_quantile({number(q)}, sum by (le) "
        f"(increase({name}_bucket{matchers(side.selector)}[{_w(spec)}])))"
    )


def metrics(spec: CanarySpec) -> list[dict[str, Any]]:
    """One entry per test: name, query (a single value), the upper bound it must stay at or
    under, and the condition in words."""
    out: list[dict[str, Any]] = []
    for ch in spec.checks:
        out += _check_metrics(spec, ch)
    return out


def _check_metrics(spec: CanarySpec, ch: Check) -> list[dict[str, Any]]:
    b, k = spec.baseline, spec.canary
    if ch.kind == "latency":
        assert ch.metric is not None and ch.tolerance is not None
        return [
            {
                "name": f"{ch.id}-p{format(q * 100, 'g').replace('.', '-')}",
                "query": _quantile(spec, k, ch.metric, q)
                + "\n/\n"
                + _quantile(spec, b, ch.metric, q),
                "max": 1 + ch.tolerance,
                "what": f"canary p{format(q * 100, 'g')} {ch.metric} / baseline's",
            }
            for q in ch.quantiles
        ]
    if ch.kind in ("error_ratio", "rejection_ratio"):
        assert ch.max_increase is not None
        outcome = "error" if ch.kind == "error_ratio" else "rejected"
        return [
            {
                "name": ch.id,
                "query": f"({_ratio_of(spec, k, outcome)})\n-\n({_ratio_of(spec, b, outcome)})",
                "max": ch.max_increase,
                "what": f"canary {outcome} ratio minus baseline's",
            }
        ]
    assert ch.tolerance is not None
    return [
        {
            "name": ch.id,
            "query": f"{_unit(spec, k, ch.kind)}\n/\n{_unit(spec, b, ch.kind)}",
            "max": 1 + ch.tolerance,
            "what": f"canary {ch.kind.replace('_', ' ')} / baseline's",
        }
    ]


def _sample_query(spec: CanarySpec) -> str:
    sel = matchers(spec.canary.selector)
    return f"sum(increase({c.REQUESTS_TOTAL}{sel}[{spec.window}]))"


def argo_analysis_template(
    spec: CanarySpec, prometheus: str, namespace: str | None = None
) -> dict[str, Any]:
    """An Argo Rollouts ``AnalysisTemplate`` running every check through the Prometheus
    provider at the spec's analysis interval."""
    interval = spec.analysis.interval
    rows: list[dict[str, Any]] = [
        {
            "name": "min-sample",
            "interval": interval,
            # Neither condition true below the minimum: inconclusive, the rollout pauses.
            "successCondition": f"result[0] >= {spec.min_requests}",
            "failureCondition": "result[0] < 0",
            "inconclusiveLimit": 0,
            "provider": {"prometheus": {"address": prometheus, "query": _sample_query(spec)}},
        }
    ]
    for m in metrics(spec):
        rows.append(
            {
                "name": m["name"],
                "interval": interval,
                "initialDelay": spec.analysis.settle,
                "successCondition": f"result[0] <= {number(m['max'])}",
                "failureCondition": f"result[0] > {number(m['max'])}",
                "failureLimit": 0,
                "provider": {"prometheus": {"address": prometheus, "query": m["query"]}},
            }
        )
    meta: dict[str, Any] = {
        "name": f"gpuslo-{spec.name}",
        "labels": {"app.kubernetes.io/managed-by": "gpuslo"},
    }
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": meta,
        "spec": {"metrics": rows},
    }


def flagger_metric_templates(
    spec: CanarySpec, prometheus: str, namespace: str | None = None
) -> list[dict[str, Any]]:
    """One Flagger ``MetricTemplate`` per test, and (last) a ``Canary`` analysis fragment
    that references them with their ``thresholdRange``."""
    out: list[dict[str, Any]] = []
    rows = [
        {"name": "min-sample", "query": _sample_query(spec), "min": spec.min_requests},
        *metrics(spec),
    ]
    for m in rows:
        meta: dict[str, Any] = {
            "name": f"gpuslo-{spec.name}-{m['name']}",
            "labels": {"app.kubernetes.io/managed-by": "gpuslo"},
        }
        if namespace:
            meta["namespace"] = namespace
        out.append(
            {
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": meta,
                "spec": {
                    "provider": {"type": "prometheus", "address": prometheus},
                    "query": m["query"],
                },
            }
        )
    return out


def flagger_canary_metrics(spec: CanarySpec, namespace: str | None = None) -> list[dict[str, Any]]:
    """The ``spec.analysis.metrics`` entries of a Flagger ``Canary`` using the templates."""
    rows: list[dict[str, Any]] = [
        {
            "name": "min-sample",
            "templateRef": _ref(spec, "min-sample", namespace),
            "thresholdRange": {"min": spec.min_requests},
            "interval": spec.analysis.interval,
        }
    ]
    for m in metrics(spec):
        rows.append(
            {
                "name": m["name"],
                "templateRef": _ref(spec, m["name"], namespace),
                "thresholdRange": {"max": m["max"]},
                "interval": spec.analysis.interval,
            }
        )
    return rows


def _ref(spec: CanarySpec, name: str, namespace: str | None) -> dict[str, str]:
    ref = {"name": f"gpuslo-{spec.name}-{name}"}
    if namespace:
        ref["namespace"] = namespace
    return ref
