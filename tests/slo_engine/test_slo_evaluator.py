"""The evaluator against a real Prometheus evaluating the generated rules on the same
backfilled history: the same SLI and burn-rate series (relative error under 1e-6) and the
same alert firing steps."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from gpuslo.foundation import conventions as c
from gpuslo.foundation.durations import format_duration, parse_duration
from gpuslo.foundation.promlab import Prometheus
from gpuslo.slo_engine import load_specs, rule_groups
from gpuslo.slo_engine.evaluator import SliData, evaluate, samples_in, window_sums
from gpuslo.slo_engine.history import sli_from_prometheus, sli_from_table
from gpuslo.slo_engine.rules import (
    DEFAULT_LAYOUT,
    burn_rate,
    error_ratio,
    errors_series,
    is_tiled,
    requests_series,
    windows,
)

DAY = 1440
DAYS = 9
SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults: {service: chat, window: 7d}
slos:
  - name: chat-availability
    objective: 99.5
    selector: {model: llama}
    availability: {}
    alerting: {min_events: 200}
  - name: chat-strict
    objective: 99.9
    selector: {model: llama}
    availability: {}
"""


def traffic(minute: int) -> tuple[int, int]:
    """(ok, errors) in one minute: a daily curve, noise, and incidents of several shapes."""
    rng = random.Random(minute)
    day_minute = minute % DAY
    total = int(300 + 200 * math.sin(2 * math.pi * day_minute / DAY) + rng.randint(0, 40))
    errors = 1 if rng.random() < 0.1 else 0
    day = minute // DAY
    if day == 8 and 300 <= day_minute < 420:  # 2h at 8% errors: pages
        errors = int(total * 0.08)
    if day == 8 and 900 <= day_minute < 1200:  # 5h at 1.5%: tickets on the strict SLO
        errors = int(total * 0.015)
    if day == 8 and 60 <= day_minute < 75:  # 15 min, almost no traffic, all failing
        total, errors = 3, 3
    return total - errors, errors


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluator")
    spec = tmp / "slo.yaml"
    spec.write_text(SPEC)
    slos, _ = load_specs([spec])
    minutes = DAYS * DAY + 1
    t_end = 1_700_006_400  # a midnight UTC (2023-11-15)
    start = t_end - 60 * (minutes - 1)
    ok = err = 0
    lines = {"success": [], "error": []}
    for m in range(minutes):
        if m:
            a, b = traffic(m)
            ok, err = ok + a, err + b
        for outcome, v in (("success", ok), ("error", err)):
            lines[outcome].append(
                f'gen_ai_server_requests_total{{model="llama",outcome="{outcome}"}} {v} '
                f"{start + 60 * m}"
            )
    history = tmp / "history.om"
    history.write_text(
        "# TYPE gen_ai_server_requests counter\n"
        + "".join("\n".join(v) + "\n" for v in lines.values())
        + "# EOF\n"
    )
    groups = rule_groups(slos)
    recordings = [
        {"name": g["name"], "rules": [r for r in g["rules"] if "record" in r]} for g in groups
    ]
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(history)
        prom.restart()
        base = {errors_series(s) for s in slos} | {requests_series(s) for s in slos}
        partial = {c.slo_hour_sum(n) for n in base} | {c.slo_hour_to_date(n) for n in base}
        partial |= {c.slo_block_sum(n) for n in base}

        def only(keep):
            picked = [
                {"name": g["name"], "rules": [r for r in g["rules"] if keep(r["record"])]}
                for g in recordings
            ]
            return [g for g in picked if g["rules"]]

        prom.backfill_rules(only(lambda r: r in base), start=start + 3600, end=t_end)
        # The long windows sum hourly partial sums over the whole period: those go first.
        prom.backfill_rules(only(lambda r: r in partial), start=start + 3600, end=t_end)
        derived = only(lambda r: r not in base | partial)
        prom.backfill_rules(derived, start=t_end - DAY * 60, end=t_end)
        yield prom, {s.name: s for s in slos}, groups, t_end


def recorded(prom, series: str, slo: str, t_end: int, seconds: int = DAY * 60 - 1) -> dict:
    result = prom.query(f'{series}{{slo="{slo}"}}[{seconds}s]', at=t_end)
    assert len(result) == 1, result
    return {float(t): float(v) for t, v in result[0]["values"]}


@pytest.mark.component
@pytest.mark.parametrize("name", ["chat-availability", "chat-strict"])
def test_evaluator_equals_prometheus_evaluating_the_generated_rules(lab, name):
    prom, slos, groups, t_end = lab
    slo = slos[name]
    # The evaluation times are the rule group's: take them from a recorded series.
    times = sorted(recorded(prom, errors_series(slo), name, t_end))
    step = 60.0
    first = times[-1] - step * (round((times[-1] - (t_end - 8 * 86400)) / step))
    data = sli_from_prometheus(prom.url, slo, first, times[-1], step)
    ev = evaluate(slo, data)

    def index(t: float) -> int:
        # Backfill evaluates the derived rules in a later stage, at other seconds of the
        # minute than the base rates; a derived recording reads the base rates up to its time.
        return int(np.searchsorted(ev.timestamps, t + 1e-3, side="right")) - 1  # ms stamps

    # Windows summed from hourly partial sums end where the hour-to-date sum they read does:
    # its subquery's last step, the whole minute at or after its timestamp. A live Prometheus
    # evaluates the base rates and partial sums in one group at one timestamp, so that is the
    # latest base rate; backfill evaluates each stage at its own offset within the minute, so
    # the sum may read the minute before or after the derived rule's own time.
    # The partial sums are a later stage than the block sums they add up, so they may run
    # at a later second than the derived windows: read from a minute before the first one.
    to_date = recorded(prom, c.slo_hour_to_date(errors_series(slo)), name, t_end, DAY * 60 + 60)
    to_date = np.array(sorted(to_date))

    def read_until(t: float, w: str) -> float:
        if not is_tiled(parse_duration(w), DEFAULT_LAYOUT):
            return t
        at = float(to_date[np.searchsorted(to_date, t + 1e-3, side="right") - 1])
        return (at + 60 - 1e-3) // 60 * 60

    # Burn rates and alerts read the error ratio recorded at or before them (another stage).
    ratio_times = {
        w: np.array(sorted(recorded(prom, error_ratio(w), name, t_end))) for w in windows(slo)
    }

    def via_ratio(t: float, w: str) -> float:
        times = ratio_times[w]
        return read_until(float(times[np.searchsorted(times, t + 1e-3, side="right") - 1]), w)

    compared = 0
    for w in windows(slo):
        for series, ours in ((error_ratio(w), ev.error_ratio[w]), (burn_rate(w), ev.burn_rate[w])):
            theirs = recorded(prom, series, name, t_end)
            assert len(theirs) >= DAY - 1
            for t, v in theirs.items():
                until = read_until(t, w) if series == error_ratio(w) else via_ratio(t, w)
                mine = ours[index(until)]
                assert abs(mine - v) <= 1e-6 * abs(v) + 1e-15, (series, t, mine, v)
                compared += 1
    assert compared >= 2 * len(windows(slo)) * (DAY - 1)
    # Alert intervals: each tier's expression, run by Prometheus at the same times.
    rules = next(g for g in groups if g["name"] == f"gpuslo-slo-{name}")["rules"]
    derived = sorted(recorded(prom, burn_rate("1h"), name, t_end))
    window_start, window_end = derived[1], derived[-1]
    fired_any = False
    for rule in (r for r in rules if r.get("alert") == "GpusloBudgetBurn"):
        tier = rule["labels"]["tier"]
        result = prom.api(
            "query_range",
            query=rule["expr"],
            start=repr(window_start),
            end=repr(window_end),
            step="60",
        )["result"]
        theirs = {round(float(t), 3) for series in result for t, _ in series["values"]}
        mine = {round(t, 3) for t in derived[1:] if ev.firing[tier][index(t)]}
        # Steps may differ only where the backfill's stage offset (above) moves a tiled
        # window's burn rate, the long one's or the short one's, across the threshold.
        spec = next(x for x in slo.tiers if x.name == tier)
        factor = spec.factor(slo.period)
        pair = [format_duration(spec.long_window), format_duration(spec.short_window)]
        for t in mine ^ theirs:
            now = [ev.burn_rate[w][index(t)] for w in pair]
            read = [ev.burn_rate[w][index(via_ratio(t, w))] for w in pair]
            crossed = [(a > factor) != (b > factor) for a, b in zip(now, read, strict=True)]
            assert any(crossed), (tier, t, now, read)
        # Each window crosses the threshold at most twice in this history (up, then down).
        assert len(mine ^ theirs) <= 4, (tier, sorted(mine ^ theirs))
        fired_any |= bool(mine)
    assert fired_any  # the incidents make at least one tier fire: the check can fail


@pytest.mark.component
def test_episodes_of_the_incident_day(lab):
    prom, slos, _, t_end = lab
    slo = slos["chat-availability"]
    data = sli_from_prometheus(prom.url, slo, t_end - 8 * 86400, t_end, 60)
    ev = evaluate(slo, data)
    pages = [e for e in ev.episodes if e.tier == "page-fast"]
    incident = t_end - DAY * 60 + 300 * 60
    # the 2h incident at 8% errors: page-fast fires within minutes and resets after it ends
    assert len(pages) == 1
    assert incident < pages[0].start < incident + 15 * 60
    assert incident + 120 * 60 < pages[0].end < incident + 150 * 60
    assert 0 < pages[0].budget_consumed < 1
    # the 15-minute burst of 3 requests a minute is held back by min_events (200)
    early = [e for e in ev.episodes if e.start < incident - 3 * 3600]
    assert not early, early


def test_window_sums_count_only_present_samples():
    values = np.array([1.0, np.nan, 2.0, 3.0, np.nan, np.nan])
    sums, counts = window_sums(values, 3)
    assert sums.tolist() == [1.0, 1.0, 3.0, 5.0, 5.0, 3.0]
    assert counts.tolist() == [1, 1, 2, 2, 2, 1]
    assert samples_in(3600, 60) == 60
    assert samples_in(90, 60) == 2


def test_table_input_reindexes_gaps_and_names_bad_files(tmp_path):
    import pandas as pd

    from gpuslo.foundation.prometheus import HistoryError

    frame = pd.DataFrame(
        {
            "timestamp": [0, 60, 180, 0, 60],
            "slo": ["a", "a", "a", "b", "b"],
            "errors": [0.1, 0.2, 0.3, 0.0, 0.0],
            "requests": [1.0, 1.0, 1.0, 2.0, 2.0],
        }
    )
    frame.to_parquet(tmp_path / "h.parquet")
    data = sli_from_table([tmp_path / "h.parquet"])
    assert data["a"].step == 60
    assert np.isnan(data["a"].errors[2]) and data["a"].errors[3] == 0.3
    (tmp_path / "bad.csv").write_text("time,slo\n1,a\n")
    with pytest.raises(HistoryError, match="missing column"):
        sli_from_table([tmp_path / "bad.csv"])


def test_sli_data_rejects_mismatched_arrays():
    with pytest.raises(ValueError):
        SliData(0, 60, np.zeros(3), np.zeros(4))
