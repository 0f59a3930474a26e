"""The validated SLO model every input format (native, OpenSLO, Sloth) is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
        """The period as named in series and text: ``month`` and ``week`` for one UTC month
        or ISO week, else the count and unit (``3month``) with the zone when not UTC."""
        if self.count == 1 and not self.start and self.time_zone == "UTC":
            return self.unit
        return f"{self.count}{self.unit}"

    @property
    def nominal(self) -> float:
        """The nominal length in seconds (30 days a month), for the burn-rate factors."""
        return self.count * NOMINAL_SECONDS[self.unit]


# The calendar periods the native spec names as a window (UTC).
CALENDAR_PERIODS: dict[str, Calendar] = {"month": Calendar("month"), "week": Calendar("week")}


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
