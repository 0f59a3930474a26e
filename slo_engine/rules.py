"""SLOs -> Prometheus recording and alerting rules (pure: data in, data out).

Cost model of the rules: each SLO's SLI queries run once per evaluation over the base window
(5m), producing two single series (error and request rates). Every longer window, up to the
SLO period, is derived from those recorded series as a ratio of sums over time, which is
event-weighted (busy minutes weigh more than quiet ones) and never touches the
high-cardinality raw series again.

Ranges are written one millisecond short of the window (``[59m59s999ms]`` for 1h) so they hold
exactly window/interval samples on Prometheus 2 (both ends included) and 3 (start excluded).

Derived windows lag the raw ``rate(x[W])`` by half the base window (2.5 min) at a step change,
because each 5m rate is itself an average. The promtool tests pin down the exact firing minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration, format_range, parse_duration
from gpuslo.foundation.promql import matchers, number

from .model import SLO

BASE = c.SLO_BASE_WINDOW
REQUESTS = c.slo_requests(BASE)
ERRORS = c.slo_errors(BASE)
OBJECTIVE = c.SLO_OBJECTIVE
BUDGET_REMAINING = c.SLO_BUDGET_REMAINING
ALERT_BURN = c.ALERT_BUDGET_BURN
ALERT_NO_DATA = c.ALERT_SLI_NO_DATA
DEFAULT_RUNBOOK_BASE = c.RUNBOOK_BASE_URL


def base(slo: SLO) -> str:
    """The SLO's base window as written in series names (``5m``)."""
    return format_duration(slo.base_window)


def requests_series(slo: SLO) -> str:
    """The recorded request (or slice) rate over the SLO's base window."""
    return c.slo_requests(base(slo))


def errors_series(slo: SLO) -> str:
    """The recorded error rate over the SLO's base window."""
    return c.slo_errors(base(slo))


def error_ratio(window: str) -> str:
    """Recorded error ratio over a window."""
    return c.slo_error_ratio(window)


def burn_rate(window: str) -> str:
    """Recorded burn rate over a window (error ratio / error budget)."""
    return c.slo_burn_rate(window)


def windows(slo: SLO) -> list[str]:
    """Every window the SLO needs, shortest first: the base, each tier's pair, the period
    (named ``month`` or ``week`` for calendar periods)."""
    seconds = {slo.base_window}
    for tier in slo.tiers:
        seconds |= {tier.long_window, tier.short_window}
    if slo.calendar is None:
        seconds.add(slo.period)
    names = [format_duration(s) for s in sorted(seconds)]
    return [*names, slo.calendar.name] if slo.calendar else names


LONGEST = {"month": 31 * 86400, "week": 7 * 86400}  # the longest calendar month and week
EPOCH_MONDAY = 4 * 86400  # 1970-01-05T00:00Z, the first Monday after the epoch


def period_name(slo: SLO) -> str:
    """The SLO period as named in series and text: ``30d``, or ``month``/``week``."""
    return slo.calendar.name if slo.calendar else format_duration(slo.period)


def ratio_of_sums(slo: SLO, sel: str, seconds: float) -> str:
    """Errors over requests in a window, summed from the recorded base rates."""
    r = format_range(seconds)
    errors, requests = errors_series(slo), requests_series(slo)
    return f"sum_over_time({errors}{sel}[{r}]) / sum_over_time({requests}{sel}[{r}])"


def period_error_ratio(slo: SLO) -> str:
    """The error ratio over the SLO period. Rolling: a ratio of sums over the period.
    Calendar: the same, over the recorded samples since the month (week) began in UTC, picked
    by a subquery that compares each minute's month (week) with the evaluation's."""
    sel = matchers({c.LABEL_SLO: slo.name})
    cal = slo.calendar
    if cal is None:
        return ratio_of_sums(slo, sel, slo.period)
    if cal.name not in LONGEST:
        raise ValueError(f"{slo.name}: calendar period {cal.name!r}: only one UTC month or week")
    # Inside a subquery, time() is each step's time; "@ end()" pins an expression to the
    # evaluation time, so every step can compare its period with the current one. A step
    # counts when the minute it closes lies in the current period: the 5m rate recorded at
    # 00:00 on the 1st is the previous month's.
    now = "last_over_time(vector(time())[1m:1m] @ end())"
    step = "(vector(time()) - 60)"
    if cal.name == "month":
        same = f"month{step} == on() month({now})"
    else:
        week = "floor(({t} - {m}) / 604800)"
        same = f"{week.format(t=step, m=EPOCH_MONDAY)} == on() {week.format(t=now, m=EPOCH_MONDAY)}"
    r = format_range(LONGEST[cal.name])
    part = "sum_over_time(({series}{sel} and on() ({same}))[{r}:1m])"
    return (
        f"{part.format(series=errors_series(slo), sel=sel, same=same, r=r)} / "
        f"{part.format(series=requests_series(slo), sel=sel, same=same, r=r)}"
    )


def slo_labels(slo: SLO) -> dict[str, str]:
    """Labels every series and alert of the SLO carries."""
    return {c.LABEL_SLO: slo.name, c.LABEL_SERVICE: slo.service, **dict(slo.labels)}


def recording_rules(slo: SLO) -> list[dict[str, Any]]:
    """Base rates, error ratio and burn rate per window, objective and budget remaining."""
    labels = slo_labels(slo)
    sel = matchers({c.LABEL_SLO: slo.name})
    budget = number(slo.budget)
    needed = windows(slo)
    rules: list[dict[str, Any]] = [
        {"record": requests_series(slo), "expr": slo.total_query, "labels": labels},
        {"record": errors_series(slo), "expr": slo.errors_query, "labels": labels},
    ]
    for w in needed:
        if w == base(slo) and slo.unit == "requests":
            expr = f"{errors_series(slo)}{sel} / {requests_series(slo)}{sel}"
        elif w == period_name(slo):
            expr = period_error_ratio(slo)
        else:
            expr = ratio_of_sums(slo, sel, parse_duration(w))
        rules.append({"record": error_ratio(w), "expr": expr, "labels": labels})
    for w in needed:
        rules.append(
            {"record": burn_rate(w), "expr": f"{error_ratio(w)}{sel} / {budget}", "labels": labels}
        )
    period = period_name(slo)
    rules.append(
        {"record": OBJECTIVE, "expr": f"vector({number(slo.objective)})", "labels": labels}
    )
    rules.append(
        {
            "record": BUDGET_REMAINING,
            "expr": f"1 - {error_ratio(period)}{sel} / {budget}",
            "labels": labels,
        }
    )
    return rules


def alert_rules(slo: SLO) -> list[dict[str, Any]]:
    """One burn-rate alert per tier, and an alert when the SLI has no data."""
    sel = matchers({c.LABEL_SLO: slo.name})
    period = period_name(slo)
    runbook = slo.runbook_url or f"{DEFAULT_RUNBOOK_BASE}/{slo.kind}-slo.md"
    rules: list[dict[str, Any]] = []
    for tier in slo.tiers:
        if tier.severity in slo.disabled_severities:
            continue
        long_w, short_w = format_duration(tier.long_window), format_duration(tier.short_window)
        factor = number(tier.factor(slo.period))
        expr = f"{burn_rate(long_w)}{sel} > {factor}\nand\n{burn_rate(short_w)}{sel} > {factor}"
        if slo.min_events:
            # Too few requests in the short window make one failure look like an outage.
            expr += (
                f"\nand\navg_over_time({requests_series(slo)}{sel}"
                f"[{format_range(tier.short_window)}]) * "
                f"{number(tier.short_window)} >= {slo.min_events}"
            )
        share = number(tier.budget_fraction * 100)
        rules.append(
            {
                "alert": slo.alert_name,
                "expr": expr,
                "labels": {
                    c.LABEL_SEVERITY: tier.severity,
                    **slo_labels(slo),
                    c.LABEL_TIER: tier.name,
                    **slo.labels_for(tier.severity),
                },
                "annotations": {
                    "summary": (
                        f"SLO {slo.name} ({slo.service}) is burning its error budget "
                        f"{factor}x too fast: {share}% of the {period} budget in {long_w}."
                    ),
                    "description": (
                        f"Burn rate over {long_w} is {{{{ $value | humanize }}}}x (threshold "
                        f"{factor}x, confirmed over {short_w}); objective "
                        f"{number(slo.objective * 100)}% over {period}."
                    ),
                    "runbook_url": runbook,
                }
                | slo.annotations_for(tier.severity),
            }
        )
    rules.append(
        {
            "alert": ALERT_NO_DATA,
            "expr": f"absent({requests_series(slo)}{sel})",
            "for": format_duration(slo.no_data_for),
            "labels": {c.LABEL_SEVERITY: "ticket", **slo_labels(slo), c.LABEL_TIER: "no-data"},
            "annotations": {
                "summary": f"SLO {slo.name} ({slo.service}) has no SLI data.",
                "description": (
                    f"{requests_series(slo)}{sel} has been absent for "
                    f"{format_duration(slo.no_data_for)}: "
                    "the SLI's source series are missing, so the SLO cannot be evaluated."
                ),
                "runbook_url": f"{DEFAULT_RUNBOOK_BASE}/sli-no-data.md",
            },
        }
    )
    return rules


def rule_groups(slos: Iterable[SLO]) -> list[dict[str, Any]]:
    """One group per SLO: recordings, then the alerts that read them. Rules in a group run in
    order at one timestamp; separate groups run in no set order, so alerts there could read
    the previous evaluation's recordings."""
    return [
        {"name": c.slo_rule_group(slo.name), "rules": recording_rules(slo) + alert_rules(slo)}
        for slo in sorted(slos, key=lambda s: s.name)
    ]


def inhibit_rules(slos: Iterable[SLO]) -> list[dict[str, Any]]:
    """Alertmanager inhibition: a page for an SLO silences its tickets. Matches on our ``tier``
    label, which imported specs cannot override (their ``severity`` may be anything)."""
    slos = list(slos)
    names = sorted({s.alert_name for s in slos})
    pages = sorted({t.name for s in slos for t in s.tiers if t.severity == "page"})
    tickets = sorted({t.name for s in slos for t in s.tiers if t.severity == "ticket"})
    if not names or not pages:
        return []
    return [
        {
            "source_matchers": [f'alertname=~"{"|".join(names)}"', f'tier=~"{"|".join(pages)}"'],
            "target_matchers": [
                f'alertname=~"{"|".join([*names, ALERT_NO_DATA])}"',
                f'tier=~"{"|".join([*tickets, "no-data"])}"',
            ],
            "equal": [c.LABEL_SLO],
        }
    ]
