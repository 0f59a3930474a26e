"""SLOs -> Prometheus recording and alerting rules (pure: data in, data out).

Cost model of the rules: each SLO's SLI queries run once per evaluation over the base window
(5m), producing two single series (error and request rates). Every longer window, up to the
SLO period, is derived from those recorded series as a ratio of sums over time, which is
event-weighted (busy minutes weigh more than quiet ones) and never touches the
high-cardinality raw series again. Windows of whole hours longer than two hours are summed
from hourly partial sums (one recording an hour) plus the current hour so far, so a 30-day
window reads about 1,500 samples per cycle instead of 43,200 (``tiled_sum``). Those hourly
and hour-to-date sums are themselves added up from five-minute partial sums (``BLOCK``), so
each cycle's subqueries step over minutes, not over the hour (``block_span``).

Ranges are written one millisecond short of the window (``[59m59s999ms]`` for 1h) so they hold
exactly window/interval samples on Prometheus 2 (both ends included) and 3 (start excluded).

Grouping (``Layout``): Prometheus, Mimir and Thanos evaluate groups concurrently and the rules
of a group in order, each seeing what the earlier ones recorded at the same timestamp. So an
SLO's alerts share a group with every recording they read, placed before them; what only
dashboards read goes to a second group. vmalert writes recordings asynchronously (remote
write), so for it no rule reads a recording of its own group (``chained=False``).

Derived windows lag the raw ``rate(x[W])`` by half the base window (2.5 min) at a step change,
because each 5m rate is itself an average. The promtool tests pin down the exact firing minute.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration, format_range, parse_duration
from gpuslo.foundation.promql import matchers, number

from .model import SLO, Calendar

BASE = c.SLO_BASE_WINDOW
REQUESTS = c.slo_requests(BASE)
ERRORS = c.slo_errors(BASE)
OBJECTIVE = c.SLO_OBJECTIVE
BUDGET_REMAINING = c.SLO_BUDGET_REMAINING
ALERT_BURN = c.ALERT_BUDGET_BURN
ALERT_NO_DATA = c.ALERT_SLI_NO_DATA
DEFAULT_RUNBOOK_BASE = c.RUNBOOK_BASE_URL
HOUR = 3600.0
TILED_ABOVE = 2 * HOUR  # longer windows of whole hours are summed from hourly partial sums
BLOCK = 300.0  # the hourly sums are summed from partial sums over blocks of five minutes


class LayoutError(ValueError):
    """The rules cannot be laid out under the requested limits (one line for the user)."""


@dataclass(frozen=True)
class Layout:
    """How an SLO's rules are split into groups and how long windows are summed.

    ``interval``: every group's evaluation interval in seconds, written on the group (the
    partial sums pick the evaluation in the first ``interval`` of each block or hour). It
    must divide an hour. ``max_rules_per_group``: Mimir's ``ruler_max_rules_per_rule_group``
    (default 20). ``tiled``: long windows from hourly partial sums. ``chained``: a rule may
    read what an earlier rule of its group recorded in the same evaluation (Prometheus,
    Mimir, Thanos: yes; vmalert: no)."""

    interval: float = 60.0
    max_rules_per_group: int = 20
    tiled: bool = True
    chained: bool = True
    incident_url: str | None = None  # the hook's external URL: alerts link their incident

    def __post_init__(self) -> None:
        if self.interval <= 0 or HOUR % self.interval:
            raise LayoutError(f"interval {self.interval:g}s must divide one hour (3600s)")
        if self.max_rules_per_group < 1:
            raise LayoutError("max rules per group must be at least 1")


DEFAULT_LAYOUT = Layout()


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
# Calendars other than one UTC month or week are written out as their period boundaries from
# HORIZON[0] to HORIZON[1] (UTC). Fixed years, so the same spec always gives the same rules;
# after HORIZON[1] the period ratio has no value until the rules are regenerated by a gpuslo
# with a later horizon (see horizon_warning).
HORIZON = (
    datetime(2025, 1, 1, tzinfo=UTC).timestamp(),
    datetime(2036, 1, 1, tzinfo=UTC).timestamp(),
)


def period_name(slo: SLO) -> str:
    """The SLO period as named in series and text: ``30d``, or ``month``/``week``."""
    return slo.calendar.name if slo.calendar else format_duration(slo.period)


def ratio_of_sums(slo: SLO, sel: str, seconds: float, layout: Layout = DEFAULT_LAYOUT) -> str:
    """Errors over requests in a window, summed from the recorded base rates (long windows of
    whole hours from the hourly partial sums, with ``layout.tiled``)."""
    errors, requests = errors_series(slo), requests_series(slo)
    if is_tiled(seconds, layout):
        return f"{tiled_sum(errors, sel, seconds)}\n/\n{tiled_sum(requests, sel, seconds)}"
    r = format_range(seconds)
    return f"sum_over_time({errors}{sel}[{r}]) / sum_over_time({requests}{sel}[{r}])"


def is_tiled(seconds: float, layout: Layout) -> bool:
    """Whether a window is summed from hourly partial sums under ``layout``."""
    return layout.tiled and seconds > TILED_ABOVE and seconds % HOUR == 0


def _parity(time_of: str, odd: bool, span: float = HOUR) -> str:
    """``time_of`` (a vector of one timestamp) lies in an odd (even) clock hour (or other
    aligned span) since 1970."""
    return f"floor({time_of} / {number(span)}) % 2 == {int(odd)}"


def block_span(layout: Layout) -> float:
    """The span of the finer partial sums: five minutes when at least two evaluations fall in
    each, else the hour itself (a single level, as for a 2m or 10m interval)."""
    if BLOCK % layout.interval == 0 and 2 * layout.interval <= BLOCK:
        return BLOCK
    return HOUR


def span_sum(series: str, sel: str, layout: Layout, span: float, previous: bool) -> str:
    """The recorded series summed over its samples in one aligned span of time (a clock hour
    or a five-minute block): the current one (up to this evaluation), or with ``previous``
    the one before.

    A subquery at the group's interval reads one sample per step. Its steps are whole
    multiples of the interval while the group evaluates at an offset within it, so the steps
    are shifted one interval less a millisecond ahead (``offset -``): the last step then
    reads the sample this evaluation recorded, and every sample is read by exactly one
    step. Samples are kept by the parity (even or odd) of the span holding their own
    ``timestamp()``, which the evaluation's own span picks, so the spans tile whatever the
    group's offset, and no step needs the evaluation time (``@ end()`` would break range
    queries such as ``promtool tsdb create-blocks-from rules``). The previous span's range
    reaches two intervals further back so its first sample is in; the current span's stops
    short of any sample two spans back (same parity). Like a plain range, a gap in the
    recordings counts nothing: a step keeps only a sample from its own interval."""
    step = format_duration(layout.interval)
    r = (
        format_duration(span + 2 * layout.interval)
        if previous
        else format_range(span + layout.interval)
    )
    shift = format_range(layout.interval)
    parts = []
    for odd in (False, True):
        ts = f"timestamp({series}{sel})"
        # A step reads the sample of its own interval only: over a gap in the recordings the
        # lookback would otherwise read the last sample again at every step.
        fresh = f"{ts} - time() > -{number(layout.interval)}"
        inner = f"{series}{sel} and ({_parity(ts, odd, span)}) and ({fresh})"
        now_odd = odd != previous  # the previous span has the other parity
        parts.append(
            f"sum_over_time(({inner})[{r}:{step}] offset -{shift})\n"
            f"  and on() ({_parity('vector(time())', now_odd, span)})"
        )
    return "(\n  " + "\nor\n  ".join(parts) + "\n)"


def hour_sum(series: str, sel: str, layout: Layout, previous: bool) -> str:
    """The recorded series summed over its samples in one clock hour (``span_sum``)."""
    return span_sum(series, sel, layout, HOUR, previous)


def block_sum_rule_expr(series: str, sel: str, layout: Layout) -> str:
    """The five-minute block that just ended, recorded once a block: only the evaluation in
    the first ``interval`` of each block writes it, so its sample lies in the block after
    the one it sums, within one interval of the block's start."""
    first = f"vector(time()) % {number(BLOCK)} < {number(layout.interval)}"
    return f"{span_sum(series, sel, layout, BLOCK, previous=True)}\nand on() ({first})"


def hour_sum_rule_expr(series: str, sel: str, layout: Layout) -> str:
    """The clock hour that just ended, recorded once an hour: only the evaluation in the first
    ``interval`` of each hour writes it (the series is absent, so stale, in between), so a
    window of N hours reads N samples of it, not N hours of evaluations.

    With five-minute blocks it adds the hour's twelve block sums: those written in the
    first interval of its blocks 2 to 12 and of this hour's first block. A plain range
    read, ending one interval less a millisecond ahead: a rule stage that evaluates at an
    earlier second than the block sums (promtool's backfill) still reads this hour's first
    one, and no other, since the blocks are at least two intervals long."""
    first = f"vector(time()) % 3600 < {number(layout.interval)}"
    if block_span(layout) == HOUR:
        return f"{hour_sum(series, sel, layout, previous=True)}\nand on() ({first})"
    block = c.slo_block_sum(series)
    shift = format_range(layout.interval)
    read = f"sum_over_time({block}{sel}[{format_range(HOUR)}] offset -{shift})"
    return f"{read}\nand on() ({first})"


def blocks_to_date(series: str, sel: str, layout: Layout) -> str:
    """The five-minute block sums of the current clock hour's finished blocks.

    A subquery steps over the last eleven block starts; each step reads the block sum
    written within one interval after it (``offset -``, so a stage evaluating at an earlier
    second than the block sums still finds it) and keeps it when its timestamp is at or
    after the step, so no step reads an older one. A step's block sum covers the block
    before the step, which is this hour's when that block's clock hour has the parity of
    the evaluation's. The steps end at the evaluation's own block start, so the block under
    way is left to ``span_sum`` whatever second either rule evaluates at."""
    block = f"{c.slo_block_sum(series)}{sel} offset -{format_range(layout.interval)}"
    fresh = f"timestamp({block}) - time() >= 0"
    steps = format_range(HOUR - BLOCK)  # at most the hour's first 11 blocks are finished
    parts = []
    for odd in (False, True):
        summed = f"vector(time()) - {number(BLOCK)}"  # in the block the step's sum covers
        inner = f"{block} and ({fresh}) and on() ({_parity(f'({summed})', odd)})"
        parts.append(
            f"sum_over_time(({inner})[{steps}:{format_duration(BLOCK)}])\n"
            f"  and on() ({_parity('vector(time())', odd)})"
        )
    return "(\n  " + "\nor\n  ".join(parts) + "\n)"


def hour_to_date_rule_expr(series: str, sel: str, layout: Layout) -> str:
    """The current clock hour so far, from its first step to the latest: with five-minute
    blocks, the finished blocks' sums plus the block under way."""
    zero = f"0 * {series}{sel}"
    if block_span(layout) == HOUR:
        return f"{hour_sum(series, sel, layout, previous=False)}\nor\n{zero}"
    done = blocks_to_date(series, sel, layout)
    current = span_sum(series, sel, layout, BLOCK, previous=False)
    return f"(\n{done}\nor\n{zero}\n)\n+\n(\n{current}\nor\n{zero}\n)"


def tiled_sum(series: str, sel: str, seconds: float) -> str:
    """The sum of a recorded series over a window of whole hours: the hourly sums in the
    window, plus the current hour so far, minus the same stretch one window ago (which the
    oldest hourly sum covers but the window does not). Exact: hours and partial hours tile
    the window's samples with no gap or overlap. Before a window of history exists the
    missing parts count 0, as a plain ``sum_over_time`` would."""
    hour, htd = c.slo_hour_sum(series), c.slo_hour_to_date(series)
    w = format_duration(seconds)
    return (
        f"(\n  (sum_over_time({hour}{sel}[{format_range(seconds)}]) or 0 * {htd}{sel})\n"
        f"  + {htd}{sel}\n  - ({htd}{sel} offset {w} or 0 * {htd}{sel})\n)"
    )


def runs(bounds: Sequence[float]) -> list[tuple[float, float, float]]:
    """Boundaries as runs ``(first, step, end)`` of evenly spaced period starts: days and
    weeks are one run between two clock changes, months one run each."""
    out: list[tuple[float, float, float]] = []
    for lo, hi in itertools.pairwise(bounds):
        if out and out[-1][1] == hi - lo and out[-1][2] == lo:
            out[-1] = (out[-1][0], out[-1][1], hi)
        else:
            out.append((lo, hi - lo, hi))
    return out


def period_start(cal: Calendar, horizon: tuple[float, float] = HORIZON) -> str:
    """PromQL scalar: the UTC start of the period holding ``time()``, 0 outside the horizon.
    A sum over the runs of the boundaries: ``(time() >= bool first) * (value - previous
    value)``, where a run's value is ``time() - (time() - first) % step`` (the latest start
    of the run at or before ``time()``) or, for a run of one period, its first boundary."""
    t = "time()"
    values: list[tuple[float, str, float]] = []  # (from, expression part, constant part)
    found = runs(cal.boundaries(*horizon))
    for first, step, end in found:
        one = end - first == step  # a run of one period: its start is a constant
        values.append(
            (
                first,
                "" if one else f"{t} - ({t} - {number(first)}) % {number(step)}",
                first if one else 0.0,
            )
        )
    values.append((found[-1][2], "", 0.0))  # nothing from the horizon's end on
    terms, prev_expr, prev_const = [], "", 0.0
    for first, expr, const in values:
        parts = [expr] if expr else []
        if prev_expr:
            parts.append(f"- ({prev_expr})")
        if const != prev_const or not parts:
            sign = "-" if const < prev_const else "+"
            parts.append(f"{sign} {number(abs(const - prev_const))}")
        text = " ".join(parts).removeprefix("+ ")
        terms.append(f"({t} >= bool {number(first)}) * ({text})")
        prev_expr, prev_const = expr, const
    return " + ".join(terms)


def current_period_start(cal: Calendar) -> str:
    """PromQL instant vector: the UTC start of the period holding the evaluation's last whole
    minute (as ``month`` and ``week`` take it), once per evaluation (``@ end()``); empty
    outside the horizon, so the period ratio has no value rather than a wrong one."""
    return f"(last_over_time(vector({period_start(cal)})[1m:1m] @ end()) > 0)"


def shared_names(slos: Iterable[SLO]) -> frozenset[str]:
    """SLO names defined under more than one service (Sloth's identity is service + name):
    their series are selected, and their groups named, by service too."""
    services: dict[str, set[str]] = {}
    for slo in slos:
        services.setdefault(slo.name, set()).add(slo.service)
    return frozenset(name for name, found in services.items() if len(found) > 1)


def selector(slo: SLO, qualified: bool = False) -> str:
    """The matcher that picks the SLO's recorded series: ``{slo="x"}``, or with the service
    when the name is shared with another service's SLO."""
    labels = {c.LABEL_SLO: slo.name}
    if qualified:
        labels[c.LABEL_SERVICE] = slo.service
    return matchers(labels)


def group_name(slo: SLO, qualified: bool = False) -> str:
    """The SLO's rule group: ``gpuslo-slo-<name>``, ``gpuslo-slo-<service>-<name>`` when the
    name is shared with another service's SLO."""
    return c.slo_rule_group(f"{slo.service}-{slo.name}" if qualified else slo.name)


def period_error_ratio(slo: SLO, qualified: bool = False) -> str:
    """The error ratio over the SLO period. Rolling: a ratio of sums over the period.
    Calendar: the same, over the recorded samples since the period began, picked by a
    subquery over the longest period that keeps the minutes after the current period's start.
    One UTC month (week): each minute's month (week) is compared with the evaluation's. Any
    other calendar: the start is looked up in the boundaries written out in the expression
    (``period_start``), once per evaluation (``@ end()``)."""
    sel = selector(slo, qualified)
    cal = slo.calendar
    if cal is None:
        return ratio_of_sums(slo, sel, slo.period)
    # Inside a subquery, time() is each step's time; "@ end()" pins an expression to the
    # evaluation time, so every step can compare its period with the current one. A step
    # counts when the minute it closes lies in the current period: the 5m rate recorded at
    # 00:00 on the 1st is the previous month's.
    now = "last_over_time(vector(time())[1m:1m] @ end())"
    step = "(vector(time()) - 60)"
    if cal.name == "month":
        same = f"month{step} == on() month({now})"
        r = format_range(LONGEST[cal.name])
    elif cal.name == "week":
        week = "floor(({t} - {m}) / 604800)"
        same = f"{week.format(t=step, m=EPOCH_MONDAY)} == on() {week.format(t=now, m=EPOCH_MONDAY)}"
        r = format_range(LONGEST[cal.name])
    else:
        same = f"{step} >= on() {current_period_start(cal)}"
        r = format_range(longest(cal))
    part = "sum_over_time(({series}{sel} and on() ({same}))[{r}:1m])"
    return (
        f"{part.format(series=errors_series(slo), sel=sel, same=same, r=r)} / "
        f"{part.format(series=requests_series(slo), sel=sel, same=same, r=r)}"
    )


def longest(cal: Calendar, horizon: tuple[float, float] = HORIZON) -> float:
    """The longest period within the horizon (a 25-hour day, a 31-day month and an hour),
    in whole minutes: the range the subquery must reach back."""
    bounds = cal.boundaries(*horizon)
    return math.ceil(max(b - a for a, b in itertools.pairwise(bounds)) / 60) * 60


def horizon_warning(slo: SLO, now: float, margin: float = 365 * 86400.0) -> str:
    """A lint note for calendar SLOs whose rules stop at the horizon within ``margin``."""
    cal = slo.calendar
    if cal is None or cal.name in LONGEST or now + margin < HORIZON[1]:
        return ""
    end = datetime.fromtimestamp(HORIZON[1], UTC).date().isoformat()
    return (
        f"the {cal.name} calendar's rules list period boundaries up to {end}: regenerate "
        "them with a newer gpuslo before then"
    )


def slo_labels(slo: SLO) -> dict[str, str]:
    """Labels every series and alert of the SLO carries."""
    return {c.LABEL_SLO: slo.name, c.LABEL_SERVICE: slo.service, **dict(slo.labels)}


def source_rules(
    slo: SLO, qualified: bool = False, layout: Layout = DEFAULT_LAYOUT
) -> list[dict[str, Any]]:
    """The base rates (the only rules reading raw series) and, when a window is tiled, their
    five-minute block sums, hourly sums and hour-to-date sums, in that order (each reads
    the ones before it, recorded in the same evaluation)."""
    labels = slo_labels(slo)
    sel = selector(slo, qualified)
    rules: list[dict[str, Any]] = [
        {"record": requests_series(slo), "expr": slo.total_query, "labels": labels},
        {"record": errors_series(slo), "expr": slo.errors_query, "labels": labels},
    ]
    tiled = [w for w in windows(slo) if w != period_name(slo) or slo.calendar is None]
    if any(is_tiled(parse_duration(w), layout) for w in tiled):
        if block_span(layout) != HOUR:
            for series in (requests_series(slo), errors_series(slo)):
                rules.append(
                    {
                        "record": c.slo_block_sum(series),
                        "expr": block_sum_rule_expr(series, sel, layout),
                        "labels": labels,
                    }
                )
        for series in (requests_series(slo), errors_series(slo)):
            rules.append(
                {
                    "record": c.slo_hour_sum(series),
                    "expr": hour_sum_rule_expr(series, sel, layout),
                    "labels": labels,
                }
            )
        for series in (requests_series(slo), errors_series(slo)):
            rules.append(
                {
                    "record": c.slo_hour_to_date(series),
                    "expr": hour_to_date_rule_expr(series, sel, layout),
                    "labels": labels,
                }
            )
    return rules


def ratio_expr(
    slo: SLO, window: str, qualified: bool = False, layout: Layout = DEFAULT_LAYOUT
) -> str:
    """The error ratio over one of the SLO's windows, from the recorded base rates."""
    sel = selector(slo, qualified)
    if window == base(slo) and slo.unit == "requests":
        return f"{errors_series(slo)}{sel} / {requests_series(slo)}{sel}"
    if window == period_name(slo) and slo.calendar is not None:
        return period_error_ratio(slo, qualified)
    return ratio_of_sums(slo, sel, parse_duration(window), layout)


def ratio_rules(
    slo: SLO, qualified: bool = False, layout: Layout = DEFAULT_LAYOUT
) -> list[tuple[str, dict[str, Any]]]:
    """The error ratio per window, shortest first, with its window's name."""
    labels = slo_labels(slo)
    return [
        (
            w,
            {
                "record": error_ratio(w),
                "expr": ratio_expr(slo, w, qualified, layout),
                "labels": labels,
            },
        )
        for w in windows(slo)
    ]


def dashboard_rules(slo: SLO, qualified: bool = False) -> list[dict[str, Any]]:
    """Burn rate per window, objective and budget remaining: read by dashboards, never by the
    alerts, so they may run one evaluation behind the error ratios they divide."""
    labels = slo_labels(slo)
    sel = selector(slo, qualified)
    budget = number(slo.budget)
    rules = [
        {"record": burn_rate(w), "expr": f"{error_ratio(w)}{sel} / {budget}", "labels": labels}
        for w in windows(slo)
    ]
    rules.append(
        {"record": OBJECTIVE, "expr": f"vector({number(slo.objective)})", "labels": labels}
    )
    rules.append(
        {
            "record": BUDGET_REMAINING,
            "expr": f"1 - {error_ratio(period_name(slo))}{sel} / {budget}",
            "labels": labels,
        }
    )
    return rules


def recording_rules(
    slo: SLO, qualified: bool = False, layout: Layout = DEFAULT_LAYOUT
) -> list[dict[str, Any]]:
    """Every recording of the SLO in dependency order: base rates (and partial sums), error
    ratio and burn rate per window, objective and budget remaining. ``qualified``: select by
    service too (the name is shared with another service)."""
    return (
        source_rules(slo, qualified, layout)
        + [r for _, r in ratio_rules(slo, qualified, layout)]
        + dashboard_rules(slo, qualified)
    )


def alert_windows(slo: SLO) -> set[str]:
    """The windows the SLO's enabled alert tiers read."""
    out = set()
    for tier in slo.tiers:
        if tier.severity not in slo.disabled_severities:
            out |= {format_duration(tier.long_window), format_duration(tier.short_window)}
    return out


def alert_rules(
    slo: SLO, qualified: bool = False, inline: bool = False, layout: Layout = DEFAULT_LAYOUT
) -> list[dict[str, Any]]:
    """One burn-rate alert per tier, and an alert when the SLI has no data. The burn rate is
    the recorded error ratio over the budget, or with ``inline`` the ratio's own expression
    (for groups that cannot hold, or cannot read, the ratio recordings)."""
    sel = selector(slo, qualified)
    period = period_name(slo)
    budget = number(slo.budget)
    runbook = slo.runbook_url or f"{DEFAULT_RUNBOOK_BASE}/{slo.kind}-slo.md"

    def burn(window: str) -> str:
        if inline:
            return f"(\n{ratio_expr(slo, window, qualified, layout)}\n) / {budget}"
        return f"{error_ratio(window)}{sel} / {budget}"

    rules: list[dict[str, Any]] = []
    for tier in slo.tiers:
        if tier.severity in slo.disabled_severities:
            continue
        long_w, short_w = format_duration(tier.long_window), format_duration(tier.short_window)
        factor = number(tier.factor(slo.period))
        expr = f"{burn(long_w)} > {factor}\nand\n{burn(short_w)} > {factor}"
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
                | _incident_link(slo, tier.name, layout)
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


def _incident_link(slo: SLO, tier: str, layout: Layout) -> dict[str, str]:
    """The ``incident_url`` annotation (live incidents, docs/incidents.md), when configured."""
    if not layout.incident_url:
        return {}
    link = c.incident_link(layout.incident_url, slo.name, slo.service, tier)
    return {c.INCIDENT_ANNOTATION_URL: link}


def _chunks(name: str, rules: list[dict[str, Any]], size: int) -> list[tuple[str, list[Any]]]:
    """``rules`` in groups of at most ``size``: ``name``, ``name-2``, …"""
    parts = [rules[i : i + size] for i in range(0, len(rules), size)]
    return [(name if n == 0 else f"{name}-{n + 1}", part) for n, part in enumerate(parts)]


def slo_groups(slo: SLO, qualified: bool, layout: Layout) -> list[tuple[str, list[Any]]]:
    """One SLO's groups as (name, rules). Chained: the alerts and everything they read this
    cycle in the first group, in order, trimmed to fit: first the ratios no alert reads move
    to the dashboard group, then the alerts compute their ratios inline. Not chained: base
    rates; ratios and alerts reading only the base rates; dashboard recordings."""
    name = group_name(slo, qualified)
    dashboard = c.slo_rule_group_part(name.removeprefix("gpuslo-slo-"), "dashboard")
    limit = layout.max_rules_per_group
    ratios = ratio_rules(slo, qualified, layout)
    dash = dashboard_rules(slo, qualified)
    if not layout.chained:
        if layout.tiled:
            raise LayoutError("hourly partial sums need a ruler that evaluates groups in order")
        sli = c.slo_rule_group_part(name.removeprefix("gpuslo-slo-"), "sli")
        windows_and_alerts = [r for _, r in ratios] + alert_rules(slo, qualified, True, layout)
        return (
            _chunks(sli, source_rules(slo, qualified, layout), limit)
            + _chunks(name, windows_and_alerts, limit)
            + _chunks(dashboard, dash, limit)
        )
    src = source_rules(slo, qualified, layout)
    alerts = alert_rules(slo, qualified, False, layout)
    read = alert_windows(slo)
    core = src + [r for _, r in ratios] + alerts
    rest: list[dict[str, Any]] = []
    if len(core) > limit:
        core = src + [r for w, r in ratios if w in read] + alerts
        rest = [r for w, r in ratios if w not in read]
    if len(core) > limit:
        core = src + alert_rules(slo, qualified, True, layout)
        rest = [r for _, r in ratios]
    if len(core) > limit:
        raise LayoutError(
            f"SLO {slo.name} ({slo.service}): its alerts and the recordings they read need "
            f"{len(core)} rules in one group, more than the limit of {limit} "
            "(raise --max-rules-per-group)"
        )
    return [(name, core), *_chunks(dashboard, rest + dash, limit)]


def rule_groups(
    slos: Iterable[SLO],
    shared: Collection[str] | None = None,
    layout: Layout = DEFAULT_LAYOUT,
) -> list[dict[str, Any]]:
    """The SLOs' rule groups (``slo_groups``), each with the layout's interval. ``shared``:
    names defined under several services (default: found among ``slos``; pass the whole spec
    set's when writing part of it)."""
    slos = list(slos)
    shared = shared_names(slos) if shared is None else shared
    out = []
    interval = format_duration(layout.interval)
    for slo in sorted(slos, key=lambda s: (s.name, s.service)):
        for name, rules in slo_groups(slo, slo.name in shared, layout):
            out.append({"name": name, "interval": interval, "rules": rules})
    return out


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
            "equal": [c.LABEL_SLO, c.LABEL_SERVICE] if shared_names(slos) else [c.LABEL_SLO],
        }
    ]
