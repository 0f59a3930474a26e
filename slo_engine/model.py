"""The validated SLO model every input format (native, OpenSLO, Sloth) is turned into."""

from __future__ import annotations

import math
import re
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gpuslo.foundation import conventions as c

CalendarUnit = Literal["day", "week", "month", "quarter", "year"]
# The nominal length of one calendar unit: what scales the burn-rate tiers of a calendar SLO.
NOMINAL_SECONDS: dict[str, float] = {
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 30 * 86400.0,
    "quarter": 91 * 86400.0,
    "year": 365 * 86400.0,
}
# Calendar durations as OpenSLO writes them (1d, 1w, 1M, 1Q, 1Y) and the unit each counts.
CALENDAR_DURATION_UNITS: dict[str, CalendarUnit] = {
    "d": "day",
    "w": "week",
    "M": "month",
    "Q": "quarter",
    "Y": "year",
}
_CALENDAR_DURATION = re.compile(r"^([1-9][0-9]{0,3})([dwMQY])$")
# Where periods are counted from without a start: midnight 1970-01-01 local (weeks: Monday
# 1970-01-05), so one unit starts at its natural start (midnight, Monday, the 1st, the
# quarter, 1 January) and several units count from there (3month = quarters).
_NATURAL_START = {"week": datetime(1970, 1, 5)}
_EPOCH = datetime(1970, 1, 1)
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class Calendar:
    """A calendar-aligned SLO period: ``count`` units counted from ``start`` (an ISO 8601 local
    date-time in ``time_zone``; empty: the unit's natural start, i.e. midnight, Monday, the
    1st, the quarter, 1 January)."""

    unit: CalendarUnit
    count: int = 1
    start: str = ""
    time_zone: str = "UTC"

    @property
    def name(self) -> str:
        """The period as named in series and text: ``month`` and ``week`` (also ``day``,
        ``quarter``, ``year``) for one UTC unit from its natural start, else the count and
        unit (``3month``, ``1day``); the zone and start are not in the name."""
        if self.count == 1 and not self.start and self.time_zone == "UTC":
            return self.unit
        return f"{self.count}{self.unit}"

    @property
    def nominal(self) -> float:
        """The nominal length in seconds (30 days a month), for the burn-rate factors."""
        return self.count * NOMINAL_SECONDS[self.unit]

    @classmethod
    def parse(cls, duration: str, start: str = "", time_zone: str = "UTC") -> Calendar:
        """A calendar from an OpenSLO-style duration (``1d``, ``1w``, ``1M``, ``1Q``, ``1Y``,
        ``2w``, ...), a local start and an IANA zone; ``ValueError`` says what is wrong."""
        m = _CALENDAR_DURATION.match(duration) if isinstance(duration, str) else None
        if m is None:
            raise ValueError(f"not a calendar duration like 1d, 1w, 1M, 1Q or 1Y: {duration!r}")
        cal = cls(CALENDAR_DURATION_UNITS[m.group(2)], int(m.group(1)), start, time_zone)
        cal.check()
        return cal

    def check(self) -> None:
        """``ValueError`` for an unknown unit or zone, a count below 1 or a bad start."""
        if self.unit not in NOMINAL_SECONDS:
            raise ValueError(f"unknown calendar unit {self.unit!r}")
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        self.zone()
        self.anchor()

    def zone(self) -> tzinfo:
        """The IANA time zone; ``ValueError`` when there is none of that name."""
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {self.time_zone!r}; use an IANA name") from None

    def anchor(self) -> datetime:
        """The local date-time periods are counted from (naive, in the calendar's zone)."""
        if not self.start:
            return _NATURAL_START.get(self.unit, _EPOCH)
        try:
            when = datetime.fromisoformat(self.start)
        except (ValueError, TypeError):
            raise ValueError(
                f"start must be a local date-time like 2026-01-01T00:00:00: {self.start!r}"
            ) from None
        if when.tzinfo is not None:
            raise ValueError(
                f"start is a local date-time without an offset; the zone is time_zone: "
                f"{self.start!r}"
            )
        return when

    def _local(self, k: int) -> datetime:
        """The local start of period ``k`` (0: the one starting at the anchor). Months keep the
        anchor's day, or the month's last day when it is shorter."""
        a = self.anchor()
        if self.unit in ("day", "week"):
            return a + timedelta(days=k * self.count * (7 if self.unit == "week" else 1))
        months = a.year * 12 + a.month - 1 + k * self.count * _MONTHS[self.unit]
        year, month = divmod(months, 12)
        day = min(a.day, monthrange(year, month + 1)[1])
        return a.replace(year=year, month=month + 1, day=day)

    def _utc(self, k: int) -> float:
        """Period ``k``'s start as a UTC instant. A local time that occurs twice (the clocks
        go back) is the first; one that does not occur (they go forward) is read with the
        offset before the change (zoneinfo's fold=0), so 02:30 in a 02:00-03:00 gap is 03:30."""
        return self._local(k).replace(tzinfo=self.zone()).timestamp()

    def boundaries(self, since: float, until: float) -> list[float]:
        """Every period start of the periods overlapping ``[since, until]`` (UTC seconds) and
        the end of the last one: ``b[0] <= since < b[1]`` and ``b[-2] <= until < b[-1]``.
        The one computation of period boundaries: the rules and the evaluator both use it."""
        if until < since:
            raise ValueError("until must not be before since")
        a = self._utc(0)
        k = math.floor((since - a) / self.nominal) - 1
        while self._utc(k) > since:
            k -= 1
        while self._utc(k + 1) <= since:
            k += 1
        out = [self._utc(k)]
        while out[-1] <= until:
            k += 1
            out.append(self._utc(k))
        return out


# The calendar periods the native spec names as a window (one unit, natural start, UTC).
CALENDAR_PERIODS: dict[str, Calendar] = {
    u: Calendar(u) for u in ("day", "week", "month", "quarter", "year")
}


@dataclass(frozen=True)
class AlertTier:
    """One multi-window burn-rate tier: alert when ``budget_fraction`` of the budget would be
    spent within ``long_window`` at the current rate, confirmed over ``short_window``."""

    name: str
    severity: str
    budget_fraction: float
    long_window: float  # seconds
    short_window: float  # seconds

    def factor(self, period: float) -> float:
        """Burn-rate threshold for an SLO period (14.4 for page-fast over 30 days)."""
        return self.budget_fraction * period / self.long_window


@dataclass(frozen=True)
class SLO:
    """One objective over one SLI. Queries are PromQL giving per-second event rates over the
    base window; every longer window is derived from their recorded results."""

    name: str
    service: str
    objective: float  # ratio of good events, e.g. 0.999
    period: float  # seconds; for calendar periods, the nominal length (30d, 7d)
    errors_query: str
    total_query: str
    tiers: tuple[AlertTier, ...]
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    min_events: int = 0
    no_data_for: float = 600.0  # seconds
    runbook_url: str = ""
    source: tuple[str, int, int] = ("", 0, 0)  # file, line, column it came from
    kind: str = "ratio"  # availability, latency, ratio
    # Latency SLIs: the histogram, selector and threshold, for the bucket-boundary lint.
    histogram: str = ""
    selector: tuple[tuple[str, str], ...] = ()
    threshold: float = 0.0
    # Alerting as an imported spec asks for it (Sloth keeps its users' routing working).
    alert_name: str = c.ALERT_BUDGET_BURN
    severity_labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    severity_annotations: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    disabled_severities: frozenset[str] = field(default_factory=frozenset)
    # None for a rolling period, else the calendar period the budget resets with.
    calendar: Calendar | None = None
    # What one event is: a request (occurrences) or a time slice (timeslice budgeting).
    unit: str = "requests"
    # The window of the base rates every other window is summed from (5m; shorter only for
    # compressed-time demos).
    base_window: float = 300.0

    def labels_for(self, severity: str) -> dict[str, str]:
        """Extra alert labels for one severity (page or ticket)."""
        return dict(dict(self.severity_labels).get(severity, ()))

    def annotations_for(self, severity: str) -> dict[str, str]:
        """Extra alert annotations for one severity, over the SLO-wide ones."""
        return {**dict(self.annotations), **dict(dict(self.severity_annotations).get(severity, ()))}

    @property
    def where(self) -> str:
        """``file:line:col`` of the SLO in its spec."""
        return "{}:{}:{}".format(*self.source)

    @property
    def budget(self) -> float:
        """The error budget as a ratio of events (0.001 for 99.9%)."""
        return 1.0 - self.objective
