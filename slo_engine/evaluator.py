"""The generated rules, computed in numpy: SLIs, burn rates per window, budget remaining and
each alert tier's firing steps, from the SLO's base rates sampled at the rule evaluation
interval.

Why this equals Prometheus: every derived window in the rules is ``sum_over_time`` of the
recorded base rates over a range one millisecond short of the window, i.e. exactly the last
``ceil(W / step)`` recordings (missing recordings are simply absent from the sum). A window
sum here is a difference of cumulative sums over the same samples; the ratio, the burn rate
(ratio / budget), the budget remaining (1 - period ratio / budget), the min-events guard
(``avg_over_time`` of requests times the short window) and the tier condition (both burn
rates above the factor) follow the rules term by term. NaN plays Prometheus' "no sample":
comparisons with it are false, as a missing series makes an alert expression empty.

Calendar periods sum the recordings whose minute (the minute each base rate closes, as the
rules take it) falls in the evaluation's period, with the period boundaries (any unit, count,
start and time zone) from ``Calendar.boundaries``, the one place the rules read them from too.
Inside the rules' horizon (``rules.HORIZON``) the two agree; the evaluator has no horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gpuslo.foundation.durations import format_duration, parse_duration

from .model import SLO, AlertTier, Calendar
from .rules import period_name, windows

Array = npt.NDArray[np.float64]


@dataclass
class SliData:
    """An SLO's base rates (events per second over the base window) at evenly spaced
    evaluation times ``start + k * step``; NaN where there was no sample."""

    start: float
    step: float
    errors: Array
    requests: Array

    def __post_init__(self) -> None:
        self.errors = np.asarray(self.errors, dtype=np.float64)
        self.requests = np.asarray(self.requests, dtype=np.float64)
        if self.errors.shape != self.requests.shape or self.errors.ndim != 1:
            raise ValueError("errors and requests must be 1-D arrays of the same length")
        if self.step <= 0:
            raise ValueError("step must be > 0 seconds")

    @property
    def timestamps(self) -> Array:
        return self.start + self.step * np.arange(len(self.errors), dtype=np.float64)


@dataclass(frozen=True)
class Episode:
    """One stretch of consecutive firing evaluations of a tier."""

    tier: str
    severity: str
    start: float  # first firing evaluation
    end: float  # first evaluation after it that no longer fires (or the last one + step)
    budget_consumed: float  # share of the period's budget spent when it started firing
    peak_burn: float  # highest long-window burn rate while firing

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Evaluation:
    """What the rules would have recorded and fired over the data's time range."""

    slo: SLO
    timestamps: Array
    error_ratio: dict[str, Array]  # by window name as in the series (5m, 1h, 30d, month)
    burn_rate: dict[str, Array]
    budget_remaining: Array
    firing: dict[str, npt.NDArray[np.bool_]]  # by tier name
    step: float
    episodes: list[Episode] = field(default_factory=list)


class _Cumulative:
    """Cumulative sums and counts of one series' present samples, computed once and shared
    by every window."""

    def __init__(self, values: Array) -> None:
        valid = ~np.isnan(values)
        self.gaps = not bool(valid.all())
        self.csum = np.concatenate(([0.0], np.cumsum(np.where(valid, values, 0.0))))
        self.ccount = np.concatenate(([0.0], np.cumsum(valid, dtype=np.float64)))
        self.n = len(values)

    def _diff(self, cum: Array, n: int) -> Array:
        out = cum[1:].copy()
        if n < self.n:  # before index n the range reaches before the data: nothing to subtract
            out[n:] -= cum[1 : self.n - n + 1]
        return out

    def window(self, n: int) -> tuple[Array, Array]:
        return self._diff(self.csum, n), self._diff(self.ccount, n)

    def sums(self, n: int) -> Array:
        return self._diff(self.csum, n)


def window_sums(values: Array, n: int) -> tuple[Array, Array]:
    """Sum and count of the non-NaN values among the last ``n`` samples at each index
    (fewer at the start, where the range reaches before the data)."""
    return _Cumulative(values).window(n)


def samples_in(window: float, step: float) -> int:
    """Recordings a range one millisecond short of ``window`` holds at interval ``step``."""
    return max(1, math.ceil(window / step - 1e-9))


def _ratio(errors: _Cumulative, requests: _Cumulative, n: int) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = errors.sums(n) / requests.sums(n)
    if errors.gaps or requests.gaps:  # a range without any sample gives no output
        empty = (errors._diff(errors.ccount, n) == 0) | (requests._diff(requests.ccount, n) == 0)
        ratio[empty] = np.nan
    return ratio


def _calendar_ratio(data: SliData, calendar: Calendar) -> Array:
    """Errors over requests since the calendar period of each evaluation began: the period
    boundaries from ``Calendar.boundaries``, as the rules write them out."""
    ts = data.timestamps
    if not len(ts):
        return np.zeros(0)
    closes = ts - 60  # the minute each recording closes
    now = np.floor(ts / 60) * 60
    bounds = np.asarray(calendar.boundaries(float(closes[0]), float(now[-1])), dtype=np.float64)
    period_of_sample = np.searchsorted(bounds, closes, side="right")
    period_now = np.searchsorted(bounds, now, side="right")
    # Sample periods never decrease, so each period's samples are one contiguous run: the
    # sum for evaluation i is that run's cumulative sum up to i.
    first = np.searchsorted(period_of_sample, period_now, side="left")
    last = np.minimum(
        np.searchsorted(period_of_sample, period_now, side="right"), np.arange(1, len(ts) + 1)
    )
    sums = []
    for values in (data.errors, data.requests):
        csum = np.concatenate(([0.0], np.cumsum(np.where(np.isnan(values), 0.0, values))))
        sums.append(np.where(last > first, csum[last] - csum[np.minimum(first, last)], 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums[1] > 0, sums[0] / sums[1], np.nan)


def evaluate(slo: SLO, data: SliData, tiers: Sequence[AlertTier] | None = None) -> Evaluation:
    """Compute every recorded series and alert condition of ``slo`` over ``data``."""
    step = data.step
    tiers = tuple(tiers if tiers is not None else slo.tiers)
    base = format_duration(slo.base_window)
    ratios: dict[str, Array] = {}
    cum_errors, cum_requests = _Cumulative(data.errors), _Cumulative(data.requests)
    for name in windows(slo):
        if name == period_name(slo) and slo.calendar:
            ratios[name] = _calendar_ratio(data, slo.calendar)
            continue
        if name == base and slo.unit == "requests":
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios[name] = data.errors / data.requests
            continue
        ratio = _ratio(cum_errors, cum_requests, samples_in(parse_duration(name), step))
        ratios[name] = ratio
    budget = slo.budget
    burn = {name: ratio / budget for name, ratio in ratios.items()}
    remaining = 1 - ratios[period_name(slo)] / budget
    firing: dict[str, npt.NDArray[np.bool_]] = {}
    for tier in tiers:
        if tier.severity in slo.disabled_severities:
            continue
        factor = float(f"{tier.factor(slo.period):.12g}")  # as the rule text writes it
        long_w, short_w = format_duration(tier.long_window), format_duration(tier.short_window)
        with np.errstate(invalid="ignore"):
            cond = (burn[long_w] > factor) & (burn[short_w] > factor)
            if slo.min_events:
                r, nr = cum_requests.window(samples_in(tier.short_window, step))
                avg = np.where(nr > 0, r / np.where(nr > 0, nr, 1), np.nan)
                cond &= avg * tier.short_window >= slo.min_events
        firing[tier.name] = cond
    result = Evaluation(slo, data.timestamps, ratios, burn, remaining, firing, step)
    result.episodes = episodes(result, tiers)
    return result


def episodes(ev: Evaluation, tiers: Sequence[AlertTier]) -> list[Episode]:
    """Every run of consecutive firing evaluations, per tier, in time order."""
    out = []
    by_name = {t.name: t for t in tiers}
    ts = ev.timestamps
    for name, cond in ev.firing.items():
        tier = by_name[name]
        long_burn = ev.burn_rate[format_duration(tier.long_window)]
        edges = np.diff(np.concatenate(([0], cond.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for a, b in zip(starts, ends, strict=True):
            remaining = ev.budget_remaining[a]
            consumed = float(1 - remaining) if not np.isnan(remaining) else float("nan")
            end = float(ts[b]) if b < len(ts) else float(ts[b - 1] + ev.step)
            out.append(
                Episode(
                    name,
                    tier.severity,
                    float(ts[a]),
                    end,
                    consumed,
                    float(np.nanmax(long_burn[a:b])),
                )
            )
    return sorted(out, key=lambda e: (e.start, e.tier))
