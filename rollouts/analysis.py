"""Canary analysis: each check's estimate, tolerance and sequential verdict, and the decision
(promote, hold, rollback), from what each side did over a window (``Sample``).

The samples come from Prometheus (``prom.PrometheusSource``) or from any counters (the bench
reads the twin's); the arithmetic here is the same for both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from . import stats
from .spec import CanarySpec, Check

Decision = Literal["promote", "hold", "rollback"]
Verdict = Literal["pass", "fail", "inconclusive", "no data"]
Buckets = list[tuple[float, float]]  # (le, cumulative count), ascending, +Inf last


@dataclass
class Sample:
    """What one side did over a window: requests by outcome, tokens, latency histograms
    (cumulative bucket counts), dollars and GPU-seconds (None: no cost series)."""

    outcomes: dict[str, float] = field(default_factory=dict)
    tokens: float = 0.0
    histograms: dict[str, Buckets] = field(default_factory=dict)
    dollars: float | None = None
    gpu_seconds: float | None = None

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())

    def minus(self, earlier: Sample) -> Sample:
        """The window between two cumulative samples."""

        def sub(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        hists: dict[str, Buckets] = {}
        for name, buckets in self.histograms.items():
            before = dict(earlier.histograms.get(name, []))
            hists[name] = [(le, n - before.get(le, 0.0)) for le, n in buckets]
        return Sample(
            {k: v - earlier.outcomes.get(k, 0.0) for k, v in self.outcomes.items()},
            self.tokens - earlier.tokens,
            hists,
            sub(self.dollars, earlier.dollars),
            sub(self.gpu_seconds, earlier.gpu_seconds),
        )


@dataclass
class CheckResult:
    check: str
    kind: str
    what: str
    baseline: float | None
    canary: float | None
    tolerance: str
    verdict: Verdict
    p_value: float
    detail: str = ""
    promql: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    decision: Decision
    reason: str
    alpha: float
    test_alpha: float
    requests: dict[str, float]
    checks: list[CheckResult]
    window: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- histograms
def quantile(q: float, buckets: Buckets) -> tuple[float, bool]:
    """The ``q`` quantile by linear interpolation inside its bucket (as
    ``histogram_quantile``); True when it lies in the ``+Inf`` bucket (then the last finite
    bound is returned)."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank and n > prev_n:
            if math.isinf(le):
                return prev_le, True
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n), False
        prev_le, prev_n = (le, n) if not math.isinf(le) else (prev_le, prev_n)
    return prev_le, True


def cdf(x: float, buckets: Buckets) -> float:
    """Share of observations at or below ``x``, interpolated linearly inside its bucket; at
    or past the last finite bound, that bound's share (the ``+Inf`` bucket counts as above)."""
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if math.isinf(le):
            break
        if x <= le:
            return (prev_n + (n - prev_n) * (x - prev_le) / (le - prev_le)) / total
        prev_le, prev_n = le, n
    return prev_n / total


# ---------------------------------------------------------------------------- checks
def _latency(check: Check, base: Sample, can: Sample, alpha: float) -> list[CheckResult]:
    assert check.metric is not None and check.tolerance is not None
    tol = check.tolerance
    out = []
    b_h, c_h = base.histograms.get(check.metric), can.histograms.get(check.metric)
    for q in check.quantiles:
        what = f"{check.metric} p{format(q * 100, 'g')}"
        tol_text = f"canary ≤ baseline × {1 + tol:g}"
        if not b_h or not c_h or b_h[-1][1] <= 0 or c_h[-1][1] <= 0:
            out.append(
                CheckResult(check.id, check.kind, what, None, None, tol_text, "no data", 1.0)
            )
            continue
        qb, b_beyond = quantile(q, b_h)
        qc, c_beyond = quantile(q, c_h)
        n_b, n_c = b_h[-1][1], c_h[-1][1]
        if b_beyond:
            out.append(
                CheckResult(
                    check.id,
                    check.kind,
                    what,
                    qb,
                    qc,
                    tol_text,
                    "inconclusive",
                    1.0,
                    "the baseline's quantile is past the last finite bucket",
                )
            )
            continue
        # Canary worse than allowed <=> more than (1 - q) of it above baseline × (1 + tol).
        threshold = qb * (1 + tol)
        theta0 = 1 - q
        d = 1 - cdf(threshold, c_h)
        p = min(max(max(d, theta0), 0.5 / n_c), 1 - 0.5 / n_c)
        v = p * (1 - p) / n_c + theta0 * (1 - theta0) / n_b
        tau = max(theta0 * tol, 1e-6)
        verdict: Verdict = stats.verdict(d, v, theta0, tau, alpha)  # type: ignore[assignment]
        detail = f"{d:.4f} of the canary above {threshold:.4g}s (allowed {theta0:.4g})" + (
            "; canary quantile past the last bucket" if c_beyond else ""
        )
        out.append(
            CheckResult(
                check.id,
                check.kind,
                what,
                qb,
                qc,
                tol_text,
                verdict,
                stats.p_value(d, v, theta0, tau),
                detail,
            )
        )
    return out


def _ratio(check: Check, base: Sample, can: Sample, alpha: float) -> CheckResult:
    assert check.max_increase is not None
    outcome = "error" if check.kind == "error_ratio" else "rejected"
    n_b, n_c = base.requests, can.requests
    what = f"{outcome} ratio"
    tol_text = f"canary ≤ baseline + {check.max_increase:g}"
    if n_b <= 0 or n_c <= 0:
        return CheckResult(check.id, check.kind, what, None, None, tol_text, "no data", 1.0)
    p_b = base.outcomes.get(outcome, 0.0) / n_b
    p_c = can.outcomes.get(outcome, 0.0) / n_c
    d = p_c - p_b
    v = _pvar(p_c, n_c) / n_c + _pvar(p_b, n_b) / n_b
    theta0 = check.max_increase
    verdict: Verdict = stats.verdict(d, v, theta0, theta0, alpha)  # type: ignore[assignment]
    return CheckResult(
        check.id,
        check.kind,
        what,
        p_b,
        p_c,
        tol_text,
        verdict,
        stats.p_value(d, v, theta0, theta0),
        f"difference {d:+.5f}",
    )


def _pvar(p: float, n: float) -> float:
    p = min(max(p, 0.5 / n), 1 - 0.5 / n)
    return p * (1 - p)


def _unit_cost(
    check: Check, base: Sample, can: Sample, alpha: float, token_cv: float
) -> CheckResult:
    assert check.tolerance is not None
    per_1m = check.kind == "cost_per_1m_tokens"
    what = "$ per 1M tokens" if per_1m else "GPU-seconds per token"
    tol_text = f"canary ≤ baseline × {1 + check.tolerance:g}"
    b_num = base.dollars if per_1m else base.gpu_seconds
    c_num = can.dollars if per_1m else can.gpu_seconds
    scale = 1e6 if per_1m else 1.0
    if b_num is None or c_num is None or base.tokens <= 0 or can.tokens <= 0 or b_num <= 0:
        return CheckResult(
            check.id,
            check.kind,
            what,
            None,
            None,
            tol_text,
            "no data",
            1.0,
            "no cost series for a side (are the cost recording rules loaded?)",
        )
    ub, uc = b_num / base.tokens * scale, c_num / can.tokens * scale
    if uc <= 0:
        return CheckResult(check.id, check.kind, what, ub, uc, tol_text, "inconclusive", 1.0)
    # log ratio; tokens are a sum over requests: relative variance (1 + cv²) / requests.
    d = math.log(uc / ub)
    v = (1 + token_cv**2) * (1 / max(can.requests, 1) + 1 / max(base.requests, 1))
    theta0 = math.log(1 + check.tolerance)
    verdict: Verdict = stats.verdict(d, v, theta0, theta0, alpha)  # type: ignore[assignment]
    return CheckResult(
        check.id,
        check.kind,
        what,
        ub,
        uc,
        tol_text,
        verdict,
        stats.p_value(d, v, theta0, theta0),
        f"ratio {uc / ub:.3f}",
    )


def analyze(
    spec: CanarySpec,
    baseline: Sample,
    canary: Sample,
    queries: Mapping[str, list[str]] | None = None,
    window: Mapping[str, float] | None = None,
) -> Result:
    """Every check over the window and the decision: ``rollback`` when a check fails (its
    confidence sequence wholly past the tolerance), ``promote`` when every check passes (wholly
    within), ``hold`` otherwise, and always while a side has fewer than ``min_requests``."""
    alpha = spec.step_alpha()
    results: list[CheckResult] = []
    for check in spec.checks:
        if check.kind == "latency":
            results += _latency(check, baseline, canary, alpha)
        elif check.kind in ("error_ratio", "rejection_ratio"):
            results.append(_ratio(check, baseline, canary, alpha))
        else:
            results.append(_unit_cost(check, baseline, canary, alpha, spec.token_cv))
    for r in results:
        r.promql = list((queries or {}).get(r.check, []))
    counts = {"baseline": baseline.requests, "canary": canary.requests}
    decision: Decision
    low = [side for side, n in counts.items() if n < spec.min_requests]
    failed = [r for r in results if r.verdict == "fail"]
    if low:
        decision = "hold"
        reason = (
            f"minimum sample not reached: {', '.join(low)} "
            f"{' / '.join(f'{counts[s]:.0f}' for s in low)} of {spec.min_requests} requests"
        )
    elif failed:
        decision = "rollback"
        reason = "failed: " + ", ".join(r.what for r in failed)
    elif all(r.verdict == "pass" for r in results):
        decision = "promote"
        reason = f"all {len(results)} tests within tolerance"
    else:
        waiting = [r.what for r in results if r.verdict != "pass"]
        decision = "hold"
        reason = "not yet conclusive: " + ", ".join(waiting)
    return Result(
        spec.name, decision, reason, spec.alpha, alpha, counts, results, dict(window or {})
    )
