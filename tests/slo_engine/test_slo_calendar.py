"""Calendar periods: the one boundary helper (``Calendar.boundaries``), the native spec's
calendar windows, and the rules' written-out period start checked against it in a real
Prometheus."""

from __future__ import annotations

import bisect
import math
import random
import subprocess
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import yaml

from gpuslo.foundation.errors import SpecError
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.evaluator import SliData, evaluate
from gpuslo.slo_engine.model import CALENDAR_PERIODS, SLO, Calendar
from gpuslo.slo_engine.rules import (
    HORIZON,
    LONGEST,
    current_period_start,
    horizon_warning,
    longest,
    runs,
)
from tests.conftest import need

HOUR, DAY = 3600, 86400


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def starts(cal: Calendar, since: str, until: str) -> list[str]:
    return [iso(b) for b in cal.boundaries(utc(since), utc(until))]


def test_boundaries_hold_since_and_until_and_the_end_of_the_last_period():
    b = Calendar("month").boundaries(utc("2026-02-10T00:00"), utc("2026-04-01T00:00"))
    assert [iso(x) for x in b] == [
        "2026-02-01T00:00",
        "2026-03-01T00:00",
        "2026-04-01T00:00",
        "2026-05-01T00:00",
    ]
    # A since on a boundary starts there.
    assert starts(Calendar("day"), "2026-03-01T00:00", "2026-03-01T12:00") == [
        "2026-03-01T00:00",
        "2026-03-02T00:00",
    ]


def test_dst_days_are_23_and_25_hours_long():
    ny = Calendar("day", time_zone="America/New_York")
    spring = ny.boundaries(utc("2026-03-08T12:00"), utc("2026-03-08T12:00"))
    autumn = ny.boundaries(utc("2026-11-01T12:00"), utc("2026-11-01T12:00"))
    assert [iso(x) for x in spring] == ["2026-03-08T05:00", "2026-03-09T04:00"]
    assert spring[1] - spring[0] == 23 * HOUR
    assert [iso(x) for x in autumn] == ["2026-11-01T04:00", "2026-11-02T05:00"]
    assert autumn[1] - autumn[0] == 25 * HOUR


def test_amsterdam_months_and_weeks_follow_summer_time():
    ams = Calendar("month", time_zone="Europe/Amsterdam")
    assert starts(ams, "2026-03-15T00:00", "2026-10-15T00:00")[:2] == [
        "2026-02-28T23:00",  # 1 March 00:00 CET
        "2026-03-31T22:00",  # 1 April 00:00 CEST
    ]
    october = ams.boundaries(utc("2026-10-15T00:00"), utc("2026-10-15T00:00"))
    assert october[1] - october[0] == 31 * DAY + HOUR
    week = Calendar("week", time_zone="Europe/Amsterdam")
    b = week.boundaries(utc("2026-03-25T00:00"), utc("2026-03-25T00:00"))
    assert [iso(x) for x in b] == ["2026-03-22T23:00", "2026-03-29T22:00"]  # Mondays 00:00


def test_quarters_and_years():
    assert starts(Calendar("quarter"), "2026-02-01T00:00", "2026-12-31T00:00") == [
        "2026-01-01T00:00",
        "2026-04-01T00:00",
        "2026-07-01T00:00",
        "2026-10-01T00:00",
        "2027-01-01T00:00",
    ]
    year = Calendar("year", time_zone="Asia/Tokyo")
    b = year.boundaries(utc("2028-06-01T00:00"), utc("2028-06-01T00:00"))
    assert [iso(x) for x in b] == ["2027-12-31T15:00", "2028-12-31T15:00"]
    assert b[1] - b[0] == 366 * DAY  # a leap year


def test_counts_with_a_start():
    two_weeks = Calendar("week", 2, "2026-01-07T06:00:00", "UTC")  # every other Wednesday
    assert starts(two_weeks, "2026-02-01T00:00", "2026-02-20T00:00") == [
        "2026-01-21T06:00",
        "2026-02-04T06:00",
        "2026-02-18T06:00",
        "2026-03-04T06:00",
    ]
    # Half years from 1 February, in New York.
    half = Calendar("month", 6, "2026-02-01T00:00:00", "America/New_York")
    assert starts(half, "2026-01-01T00:00", "2026-09-01T00:00") == [
        "2025-08-01T04:00",
        "2026-02-01T05:00",
        "2026-08-01T04:00",
        "2027-02-01T05:00",
    ]
    # Without a start, several units count from 1970-01-01: 3 months are the quarters.
    assert starts(Calendar("month", 3), "2026-05-01T00:00", "2026-05-01T00:00") == [
        "2026-04-01T00:00",
        "2026-07-01T00:00",
    ]


def test_months_from_the_31st_keep_to_the_last_day_of_shorter_months():
    cal = Calendar("month", start="2026-01-31T00:00:00")
    assert starts(cal, "2026-02-01T00:00", "2026-03-30T00:00") == [
        "2026-01-31T00:00",
        "2026-02-28T00:00",
        "2026-03-31T00:00",
    ]


def test_a_start_in_the_spring_gap_reads_with_the_offset_before_it():
    # 02:30 does not exist in Amsterdam on 29 March 2026 (02:00 CET -> 03:00 CEST): it is
    # read as 02:30 CET, 01:30 UTC, as zoneinfo does (fold=0): that day has 23 hours.
    cal = Calendar("day", start="2026-03-29T02:30:00", time_zone="Europe/Amsterdam")
    b = cal.boundaries(utc("2026-03-29T12:00"), utc("2026-03-29T12:00"))
    assert [iso(x) for x in b] == ["2026-03-29T01:30", "2026-03-30T00:30"]


def test_one_utc_unit_keeps_its_name_and_nominal_length():
    assert Calendar("month").name == "month" and Calendar("week").name == "week"
    assert Calendar("month").nominal == 30 * DAY and Calendar("week").nominal == 7 * DAY
    assert Calendar("month", time_zone="Europe/Amsterdam").name == "1month"
    assert Calendar.parse("1Q").nominal == 91 * DAY
    assert set(CALENDAR_PERIODS) == {"day", "week", "month", "quarter", "year"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2X",), "not a calendar duration like 1d, 1w, 1M, 1Q or 1Y: '2X'"),
        (("0M",), "not a calendar duration"),
        (("1M", "", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (("1M", "2026-13-01"), "start must be a local date-time"),
        (("1M", "2026-01-01T00:00:00+01:00"), "start is a local date-time without an offset"),
    ],
)
def test_calendar_parse_says_what_is_wrong(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Calendar.parse(*args)


NATIVE = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {{service: chat}}
slos:
  - name: chat
    objective: 99.9
    window: {window}
    availability: {{}}
"""


def test_native_calendar_windows(tmp_path):
    cases = {
        '{calendar: 1Q, start: "2026-01-01T00:00:00", time_zone: Europe/Amsterdam}': Calendar(
            "quarter", 1, "2026-01-01T00:00:00", "Europe/Amsterdam"
        ),
        "{calendar: 2w, start: 2026-01-05T06:00:00}": Calendar("week", 2, "2026-01-05T06:00:00"),
        "{calendar: 1d, time_zone: America/New_York}": Calendar(
            "day", time_zone="America/New_York"
        ),
        "year": Calendar("year"),
        "month": Calendar("month"),
    }
    for text, want in cases.items():
        spec = tmp_path / "slo.yaml"
        spec.write_text(NATIVE.format(window=text))
        (slo,), _ = load_specs([spec])
        assert slo.calendar == want, text
        assert slo.period == want.nominal


def test_native_calendar_window_errors_point_at_the_field(tmp_path):
    spec = tmp_path / "slo.yaml"
    spec.write_text(
        NATIVE.format(window="{calendar: 5X, start: '2026-02-30', time_zone: Mars/Olympus}")
    )
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    got = sorted(str(p) for p in err.value.problems)
    assert got == [
        f"{spec}:7:24: slos[0].window.calendar: "
        "not a calendar duration like 1d, 1w, 1M, 1Q or 1Y: '5X'",
        f"{spec}:7:35: slos[0].window.start: "
        "start must be a local date-time like 2026-01-01T00:00:00: '2026-02-30'",
        f"{spec}:7:60: slos[0].window.time_zone: "
        "unknown time zone 'Mars/Olympus'; use an IANA name",
    ]
    spec.write_text(NATIVE.format(window="{calendar: 1M, zone: UTC}"))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert [str(p) for p in err.value.problems] == [
        f"{spec}:7:28: slos[0].window.zone: Extra inputs are not permitted"
    ]
    spec.write_text(NATIVE.format(window="1Q"))
    with pytest.raises(SpecError) as err:
        load_specs([spec])
    assert [str(p) for p in err.value.problems] == [
        f"{spec}:7:13: slos[0].window: '1Q' is a calendar duration: write window: {{calendar: 1Q}}"
    ]


CALENDARS = [
    Calendar("day", time_zone="America/New_York"),
    Calendar("month", time_zone="Europe/Amsterdam"),
    Calendar("quarter"),
    Calendar("year", time_zone="Australia/Sydney"),
    Calendar("week", 2, "2026-01-07T06:00:00", "Asia/Kolkata"),
    Calendar("day"),
]


def test_runs_compress_the_boundaries_without_loss():
    for cal in CALENDARS:
        bounds = cal.boundaries(*HORIZON)
        rebuilt = [
            first + k * step
            for first, step, end in runs(bounds)
            for k in range(round((end - first) / step))
        ]
        assert [*rebuilt, bounds[-1]] == bounds, cal
    # A fixed-offset zone's days are one run; a DST zone's are four a year (summer, the
    # short day, winter, the long day), here 2025-2035 and the start of 2036.
    assert len(runs(Calendar("day").boundaries(*HORIZON))) == 1
    assert len(runs(Calendar("day", time_zone="America/New_York").boundaries(*HORIZON))) == 45


def test_the_subquery_reaches_back_over_the_longest_period():
    assert longest(Calendar("day", time_zone="America/New_York")) == 25 * HOUR
    assert longest(Calendar("month", time_zone="Europe/Amsterdam")) == 31 * DAY + HOUR
    assert longest(Calendar("year")) == 366 * DAY


def test_one_utc_month_and_week_keep_their_expressions():
    assert set(LONGEST) == {"month", "week"}
    month = rule_groups([_slo(Calendar("month"))])[0]["rules"]
    expr = next(r["expr"] for r in month if r.get("record", "").endswith("month"))
    assert "month(vector(time()) - 60) == on() month(" in expr
    assert "bool" not in expr


def test_horizon_warning_only_near_the_end():
    slo = _slo(Calendar("month", time_zone="Europe/Amsterdam"))
    assert horizon_warning(slo, utc("2026-06-01T00:00")) == ""
    assert "2036-01-01" in horizon_warning(slo, utc("2035-06-01T00:00"))
    assert horizon_warning(_slo(Calendar("month")), utc("2035-06-01T00:00")) == ""


def _slo(cal: Calendar) -> SLO:
    return SLO("x", "chat", 0.999, cal.nominal, "vector(0)", "vector(1)", (), calendar=cal)


@pytest.mark.component
def test_prometheus_finds_the_period_start_the_boundaries_give(tmp_path):
    """The written-out period start, evaluated by Prometheus 2 at random times across the
    horizon (and outside it), is the start ``Calendar.boundaries`` gives, or nothing."""
    rng = random.Random(7)
    with Prometheus(tmp_path / "prom") as prom:
        for cal in CALENDARS:
            expr = current_period_start(cal)
            bounds = cal.boundaries(*HORIZON)
            times = [rng.uniform(HORIZON[0] - 5e7, HORIZON[1] + 5e7) for _ in range(25)]
            # Right at and around boundaries, including DST changes.
            times += [b + d for b in rng.sample(bounds, 10) for d in (-60, 0, 59, 60)]
            for t in times:
                now = t // 60 * 60  # the subquery's last whole minute
                i = bisect.bisect_right(bounds, now) - 1
                found = prom.query(expr, at=t)
                if 0 <= i < len(bounds) - 1:
                    assert [float(found[0]["value"][1])] == [bounds[i]], (cal, iso(t))
                else:
                    assert found == [], (cal, iso(t), found)


@pytest.mark.component
def test_promtool_accepts_rules_for_every_kind_of_calendar(tmp_path):
    promtool = need("promtool")
    calendars = [*CALENDARS, Calendar("month"), Calendar("week")]
    slos = [replace(_slo(cal), name=f"c{i}") for i, cal in enumerate(calendars)]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(slos)}))
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_evaluator_counts_the_minutes_since_the_local_period_start():
    """A New York day across the autumn change: 25 hours of recordings, each counted once."""
    cal = Calendar("day", time_zone="America/New_York")
    start = utc("2026-10-31T12:00")
    n = 48 * 60
    ts = start + 60 * np.arange(n)
    errors = np.where(ts < utc("2026-11-01T05:00"), 1.0, 0.0)  # before 01:00 EDT
    data = SliData(start, 60.0, errors, np.ones(n))
    ratio = evaluate(_slo(cal), data).error_ratio[cal.name]

    def at(text: str) -> float:
        return float(ratio[int((utc(text) - start) // 60)])

    # 1 November began at 04:00 UTC; the recording at 04:00 closes 03:59 (the 31st's).
    assert at("2026-11-01T04:30") == 1.0  # 30 minutes, all bad
    # 04:01 to 04:59 bad, of the 25 hours' recordings from 04:01 to 04:59 the next day.
    assert at("2026-11-02T04:59") == pytest.approx(59 / (25 * 60 - 1))
    assert math.isnan(at("2026-11-02T05:00"))  # 2 November: nothing recorded yet
    assert at("2026-11-02T05:01") == 0.0
