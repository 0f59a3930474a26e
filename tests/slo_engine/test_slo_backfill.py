"""30 days of synthetic traffic backfilled into a real Prometheus: the generated rules'
recorded 30-day SLI equals the exact ratio of the raw counters' increases.

The history is built so the exact answer is known without Prometheus: counts per minute,
samples on the minute, a counter reset (a server restart) mid-month, and two incidents whose
error ratios differ wildly from the baseline and from each other, one at ten times the normal
traffic. An unweighted average of ratios (how Sloth builds its period window) misses that
weighting by far more than the tolerance; the test shows that too, so it can tell the two
apart.

Why exact: each recorded 5m rate is the mean of five one-minute increments, and a window of
W holds W/1m recorded rates, so every minute inside the window is counted exactly once and
only the four minutes before each end are weighted partially. Those partial weights cancel
when the traffic at both ends of the window is the same, which daily-periodic traffic over a
whole number of days gives. Otherwise the error is at most two minutes' worth of the traffic
difference between the ends (docs/slo.md).
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuslo.foundation import conventions as c
from gpuslo.foundation.prometheus import query_range
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.evaluator import SliData, evaluate
from gpuslo.slo_engine.rules import ERRORS, REQUESTS, error_ratio, period_error_ratio, period_name

pytestmark = pytest.mark.component

DAY = 1440  # minutes
DAYS = 30
MID_HOUR = 25 * 60  # seconds before the end: 35 minutes into an hour
SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat, window: 30d}
slos:
  - name: chat-availability
    objective: 99.9
    selector: {model: llama}
    availability: {}
  - name: chat-month
    objective: 99.9
    window: month
    selector: {model: llama}
    availability: {}
  - name: chat-week
    objective: 99.9
    window: week
    selector: {model: llama}
    availability: {}
"""


def traffic(minute: int) -> tuple[int, int, int]:
    """(success, error, cancelled) requests in one minute of the history."""
    day_minute = minute % DAY
    rng = random.Random(day_minute)  # the same noise every day: periodic traffic
    base = 600 + 400 * math.sin(2 * math.pi * day_minute / DAY) + rng.randint(0, 50)
    errors = rng.randint(0, 2)
    cancelled = rng.randint(0, 5)
    day = minute // DAY
    if day == 12 and 600 <= day_minute < 780:  # a 3h incident at 10x traffic, 20% errors
        base *= 10
        errors = int(base * 0.2)
    if day == 20 and 120 <= day_minute < 480:  # a 6h quiet-hours outage: 90% errors
        base, errors, cancelled = 20, 18, 0
    total = int(base)
    return total - errors - cancelled, errors, cancelled


def write_history(path: Path, start: int, minutes: int, reset_at: int) -> tuple[list, list]:
    """OpenMetrics counters sampled every minute from ``start``; the counters restart from
    zero at minute ``reset_at``. Returns the cumulative true (errors, requests) per minute."""
    outcomes = ("success", "error", "cancelled")
    values = [0, 0, 0]
    true_errors, true_total = [0], [0]
    lines = {o: [] for o in outcomes}
    for m in range(minutes):
        counts = traffic(m)
        if m == reset_at:
            values = [0, 0, 0]
        if m:  # the first sample is the starting point; increments count from minute 1
            values = [v + n for v, n in zip(values, counts, strict=True)]
            true_errors.append(true_errors[-1] + counts[1])
            true_total.append(true_total[-1] + sum(counts))
        for o, v in zip(outcomes, values, strict=True):
            lines[o].append(
                f'gen_ai_server_requests_total{{model="llama",outcome="{o}"}} {v} {start + 60 * m}'
            )
    with path.open("w") as f:
        f.write("# TYPE gen_ai_server_requests counter\n")
        for o in outcomes:
            f.write("\n".join(lines[o]) + "\n")
        f.write("# EOF\n")
    return true_errors, true_total


def history_end() -> int:
    """Midnight UTC of a recent day that starts neither a month nor a week, so both calendar
    periods have begun before it and both ends of every window fall at the same time of day."""
    day = int(time.time()) // 86400 * 86400
    while True:
        when = datetime.fromtimestamp(day, UTC)
        if when.day != 1 and when.weekday() != 0:
            return day
        day -= 86400


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """The history and the generated rules' recordings in a real Prometheus."""
    tmp = tmp_path_factory.mktemp("backfill")
    spec = tmp / "slo.yaml"
    spec.write_text(SPEC)
    slos, _ = load_specs([spec])
    groups = rule_groups(slos)

    def only(records):
        picked = [
            {"name": g["name"], "rules": [r for r in g["rules"] if r.get("record") in records]}
            for g in groups
        ]
        return [g for g in picked if g["rules"]]

    minutes = (DAYS + 1) * DAY + 1
    end_minute = minutes - 1
    t_end = history_end()
    start = t_end - 60 * end_minute
    truth = write_history(tmp / "history.om", start, minutes, reset_at=15 * DAY + 333)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "history.om")
        prom.restart()
        prom.backfill_rules(only({REQUESTS, ERRORS}), start=t_end - DAYS * 86400 - 3600, end=t_end)
        # The 30-day window sums one recording per clock hour plus the current hour so far,
        # minus the same stretch 30 days back; both add up five-minute block sums: backfill
        # all three over the period (in two stages, each at its own second of the minute).
        partial = {c.slo_hour_sum(REQUESTS), c.slo_hour_sum(ERRORS)}
        partial |= {c.slo_hour_to_date(REQUESTS), c.slo_hour_to_date(ERRORS)}
        partial |= {c.slo_block_sum(REQUESTS), c.slo_block_sum(ERRORS)}
        prom.backfill_rules(only(partial), start=t_end - DAYS * 86400 - 3600, end=t_end)
        periods = {error_ratio("30d"), error_ratio("month"), error_ratio("week")}
        prom.backfill_rules(only(periods), start=t_end - 300, end=t_end)
        prom.backfill_rules(
            only({error_ratio("30d")}), start=t_end - MID_HOUR - 120, end=t_end - MID_HOUR
        )
        yield prom, t_end, start, truth


def exact_ratio(truth, start: int, since: int, until: int) -> float:
    """Errors over requests from the raw counters' increases between two times."""
    errors, total = truth
    a, b = (since - start) // 60, (until - start) // 60
    return (errors[b] - errors[a]) / (total[b] - total[a])


def test_recorded_30d_sli_equals_the_exact_ratio_of_raw_counters(backfilled):
    prom, t_end, start, truth = backfilled
    exact = exact_ratio(truth, start, t_end - DAYS * 86400, t_end)
    sel = '{slo="chat-availability"}'
    recorded = prom.scalar(f"{error_ratio('30d')}{sel}", at=t_end)
    # Sloth's period window: the plain mean of the 5m ratios over 30 days.
    unweighted = prom.scalar(f"avg_over_time(({ERRORS}{sel} / {REQUESTS}{sel})[30d:1m])", at=t_end)
    assert abs(recorded - exact) / exact < 1e-6, (recorded, exact)
    assert abs(unweighted - exact) / exact > 1e-2, (unweighted, exact)


def test_the_30d_sli_is_exact_in_the_middle_of_an_hour_too(backfilled):
    """Off the hour, the window is 720 hourly sums plus 35 minutes of this hour, minus the
    same 35 minutes of the hour 30 days back: the edges still fall on the right minutes."""
    prom, t_end, start, truth = backfilled
    at = t_end - MID_HOUR
    exact = exact_ratio(truth, start, at - DAYS * 86400, at)
    recorded = prom.scalar(f'{error_ratio("30d")}{{slo="chat-availability"}}', at=at)
    assert abs(recorded - exact) / exact < 1e-6, (recorded, exact)
    # The hour so far is a real part of the sum: without it the ratio is off.
    sel = '{slo="chat-availability"}'
    htd = prom.scalar(f"{c.slo_hour_to_date(REQUESTS)}{sel}", at=at)
    assert htd > 0


def test_calendar_periods_count_from_the_start_of_the_month_and_week(backfilled):
    prom, t_end, start, truth = backfilled
    when = datetime.fromtimestamp(t_end, UTC)
    month_start = int(when.replace(day=1).timestamp())
    week_start = t_end - when.weekday() * 86400
    for name, since in (("month", month_start), ("week", week_start)):
        exact = exact_ratio(truth, start, since, t_end)
        recorded = prom.scalar(f'{error_ratio(name)}{{slo="chat-{name}"}}', at=t_end)
        # Recordings land at the rule group's offset within the minute (0-60 s, from a hash
        # of the group's name and rule file, so it changes with the temp dir), and the 1m
        # subquery reads the latest recording at each whole minute: each end of the period
        # moves by up to about two minutes of traffic. At midnight traffic that is up to
        # about 3e-4 of a week-to-date ratio here (arithmetic: 1,600 of 5.6M requests); one
        # run in CI measured 1.5e-4 for the month.
        assert abs(recorded - exact) / exact < 1e-3, (name, recorded, exact)
        # A period starting six hours off reads something else: the check can fail.
        shifted = exact_ratio(truth, start, since + 6 * 3600, t_end)
        assert abs(shifted - exact) / exact > 1e-2, (name, shifted, exact)


# Calendar periods in zones with a DST change, at fixed dates: Amsterdam leaves summer time at
# 01:00 UTC on Sunday 25 October 2026, so its October is 31 days and an hour (from 22:00 UTC
# on 30 September to 23:00 UTC on 31 October); New York leaves it at 06:00 UTC on Sunday
# 1 November, a 25-hour day (04:00 UTC to 05:00 UTC the next day).
DST_SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat}
slos:
  - name: ams-month
    objective: 99.9
    window: {calendar: 1M, time_zone: Europe/Amsterdam}
    selector: {model: llama}
    availability: {}
  - name: ny-day
    objective: 99.9
    window: {calendar: 1d, time_zone: America/New_York}
    selector: {model: llama}
    availability: {}
"""


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


DST_START, DST_END = utc("2026-09-30T18:00"), utc("2026-11-02T06:00")
# (SLO, evaluation time, where its period began); None: a period with no recording yet.
DST_CASES = (
    ("ams-month", "2026-10-25T00:30", "2026-09-30T22:00"),  # summer time
    ("ams-month", "2026-10-25T03:00", "2026-09-30T22:00"),  # winter time, same month
    ("ams-month", "2026-10-31T22:59", "2026-09-30T22:00"),  # the month's last minute
    ("ams-month", "2026-10-31T23:00", None),  # November: nothing recorded yet
    ("ams-month", "2026-10-31T23:30", "2026-10-31T23:00"),
    ("ny-day", "2026-11-01T04:30", "2026-11-01T04:00"),
    ("ny-day", "2026-11-02T04:30", "2026-11-01T04:00"),  # hour 25 of 1 November
    ("ny-day", "2026-11-02T05:30", "2026-11-02T05:00"),
)


@pytest.fixture(scope="module")
def dst_backfilled(tmp_path_factory):
    """A month of history around the autumn DST changes, with the base rates recorded."""
    tmp = tmp_path_factory.mktemp("backfill-dst")
    spec = tmp / "slo.yaml"
    spec.write_text(DST_SPEC)
    slos, _ = load_specs([spec])
    base_rates = [
        {
            "name": g["name"],
            "rules": [r for r in g["rules"] if r.get("record") in {REQUESTS, ERRORS}],
        }
        for g in rule_groups(slos)
    ]
    minutes = (DST_END - DST_START) // 60 + 1
    truth = write_history(tmp / "history.om", DST_START, minutes, reset_at=15 * DAY + 333)
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(tmp / "history.om")
        prom.restart()
        prom.backfill_rules(base_rates, start=DST_START + 3600, end=DST_END)
        yield prom, {s.name: s for s in slos}, truth


def test_calendar_periods_across_dst_agree_with_the_evaluator(dst_backfilled):
    """The generated period ratio, evaluated by Prometheus, equals the evaluator's for
    calendars in Amsterdam and New York across their DST changes, and follows the raw
    counters from the period's true start."""
    prom, slos, truth = dst_backfilled
    # The evaluator reads the recorded base rates as the rules' 1m subquery does: the latest
    # recording at each whole minute (recordings land at the group's offset in the minute).
    start = DST_START + 7200
    data = {}
    for name in slos:
        sel = f'{{slo="{name}"}}'
        errors, _ = query_range(prom.url, f"{ERRORS}{sel}", start, DST_END, 60.0)
        requests, _ = query_range(prom.url, f"{REQUESTS}{sel}", start, DST_END, 60.0)
        data[name] = SliData(start, 60.0, errors, requests)
    worst = 0.0
    for name, at, since in DST_CASES:
        slo, t = slos[name], utc(at)
        found = prom.query(period_error_ratio(slo), at=t)
        ev = evaluate(slo, data[name]).error_ratio[period_name(slo)]
        expected = ev[(t - int(data[name].start)) // 60]
        if since is None:
            assert not found and math.isnan(expected), (name, at, found, expected)
            continue
        (series,) = found
        recorded = float(series["value"][1])
        worst = max(worst, abs(recorded - expected) / expected)
        assert abs(recorded - expected) / expected < 1e-9, (name, at, recorded, expected)
        if t - utc(since) >= 86400:  # long enough for the ends' partial weights to vanish
            exact = exact_ratio(truth, DST_START, utc(since), t)
            assert abs(recorded - exact) / exact < 1e-3, (name, at, recorded, exact)
            # The same period counted from the start in UTC, an hour off, reads otherwise.
            if name == "ny-day":
                off = exact_ratio(truth, DST_START, utc(since) + 3600, t)
                assert abs(off - exact) / exact > 1e-2, (name, at, off, exact)
    print(f"max relative difference, Prometheus vs evaluator: {worst:.3g}")


def raw(prom, series: str, since: int, until: int) -> list[tuple[float, float]]:
    """Every sample of one recorded series in (since, until], oldest first."""
    result = prom.query(f'{series}{{slo="chat-availability"}}[{until - since}s]', at=until)
    assert len(result) == 1, (series, result)
    return [(float(t), float(v)) for t, v in result[0]["values"]]


def test_block_and_hour_sums_count_every_base_rate_once_across_boundaries(backfilled):
    """Each partial sum, sample by sample over three hours (36 five-minute boundaries, three
    hour boundaries), against the base rates it must cover: a block sum its whole previous
    block, an hourly sum its whole previous hour, an hour-to-date sum its hour up to the
    whole minute at or after its own time (its subquery's last step). Promtool backfills
    the base rates, the block sums and the sums over them in separate stages, each at its
    own second of the minute, as a rule stage may run in an operator's backfill too. One
    base rate lost or counted twice at a boundary changes a sum by about a 60th of an hour's
    and fails this by far."""
    prom, t_end, _, _ = backfilled
    since = t_end - 3 * 3600
    for name in (REQUESTS, ERRORS):
        base = raw(prom, name, since - 3600, t_end)

        def total(keep, base=base) -> float:
            return sum(v for t, v in base if keep(t))

        for series, span, count in (
            (c.slo_block_sum(name), 300, 36),
            (c.slo_hour_sum(name), 3600, 3),
        ):
            got = raw(prom, series, since, t_end)
            assert len(got) == count
            for at, value in got:
                assert at % span < 60  # written in the first evaluation of its span
                done = at // span - 1  # the span that just ended
                want = total(lambda t, d=done, s=span: t // s == d)
                assert value == pytest.approx(want, rel=1e-9), (series, at)
        to_date = raw(prom, c.slo_hour_to_date(name), since, t_end)
        assert len(to_date) == 180
        for at, value in to_date:
            last = math.ceil(at / 60) * 60  # the subquery's last step
            want = total(
                lambda t, a=at, e=last: t // 3600 == a // 3600 and t // 300 <= a // 300 and t <= e
            )
            assert value == pytest.approx(want, rel=1e-9), (name, "to date", at)
