"""Benchmark rule evaluation: 200 SLOs as gpuslo writes them, as Sloth writes them and as
Pyrra writes them, evaluated by one real Prometheus over the same 30 days of history.

History: per SLO, one request counter per pod and outcome (success, error), sampled every
``--scrape`` seconds for the last ``--fine-days`` days and every minute before (30 days and 1
hour in all), backfilled with ``promtool tsdb create-blocks-from openmetrics``. Recorded series
that rules read over long windows get backfilled too, one sample a minute: Sloth's 5m error
ratio, our 5m base rates, their five-minute block sums (one sample every five minutes),
hourly sums (one sample an hour) and hour-to-date sums, so
every style reads a full period. Recorded series at one a minute, and raw series older than
``--fine-days`` at one a minute, are cheaper to read than a real 15 s fleet's: that favours
Sloth (its 30-day mean) and Pyrra (its raw 30-day increase), not us.

``--scale N`` instead generates N SLOs, times generation (with peak Python memory), runs
``promtool check rules`` on the file, loads it into one Prometheus scraping live counters and
reports one evaluation cycle's summed group evaluation time and Prometheus's memory.

Each style then runs alone in Prometheus (same data, same evaluation interval for every
group). The figure is Prometheus's own: the sum over groups of each group's last evaluation
time (``/api/v1/rules``), sampled once per interval after a warm-up, plus the CPU seconds the
Prometheus process used meanwhile. Everything listens on 127.0.0.1 and is stopped at the end.

    .venv/bin/python bench/rules_cost.py [--slos 200] [--pods 5] [--scrape 15] \
        [--interval 15] [--cycles 8] [--write docs/benchmarks.md]
    .venv/bin/python bench/rules_cost.py --scale 2000 [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from pathlib import Path
from typing import Any

import psutil
import yaml
from results import write_block

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import format_value, sample_line
from gpuslo.foundation.promlab import Prometheus, backfill_openmetrics, binary
from gpuslo.foundation.yamlpos import load_documents
from gpuslo.slo_engine import rule_groups, write_outputs
from gpuslo.slo_engine.model import SLO
from gpuslo.slo_engine.native import load_native
from gpuslo.slo_engine.rules import ERRORS, REQUESTS, Layout

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400
METRIC = "gen_ai_server_requests_total"
OBJECTIVE = 0.999
# Sloth's and Pyrra's windows for a 30-day SLO: (short, long, factor) per alert tier.
SLOTH_TIERS = {
    "page": [("5m", "1h", 14.4), ("30m", "6h", 6)],
    "ticket": [("2h", "1d", 3), ("6h", "3d", 1)],
}
PYRRA_TIERS = [("5m", "1h", 14), ("30m", "6h", 7), ("2h", "1d", 2), ("6h", "4d", 1)]


def specs(n: int, workdir: Path) -> list[SLO]:
    """``n`` availability SLOs in the native format, one model each."""
    spec = {
        "apiVersion": "gpuslo/v1",
        "kind": "SLOs",
        "defaults": {"service": "bench", "window": "30d"},
        "slos": [
            {
                "name": f"model-{i:03d}-availability",
                "objective": OBJECTIVE * 100,
                "selector": {"model": f"model-{i:03d}"},
                "availability": {"bad_outcomes": ["error"]},
            }
            for i in range(n)
        ],
    }
    path = workdir / "slos.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (data, node), *_ = load_documents(path)
    return load_native(path, data, node)


def selector(slo: SLO, bad: bool) -> str:
    model = dict(slo.selector)["model"]
    outcome = ',outcome="error"' if bad else ""
    return f'{{model="{model}"{outcome}}}'


def sloth_groups(slos: list[SLO]) -> list[dict[str, Any]]:
    """The rules Sloth 0.11 generates for an events SLI: a raw ratio per alert window, the
    period as the plain mean of the 5m ratio, meta recordings and two alerts."""
    groups: list[dict[str, Any]] = []
    for slo in slos:
        labels = {"sloth_id": slo.name, "sloth_service": "bench", "sloth_slo": slo.name}
        sel = f'{{sloth_id="{slo.name}", sloth_service="bench", sloth_slo="{slo.name}"}}'
        sli = []
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            sli.append(
                {
                    "record": f"slo:sli_error:ratio_rate{w}",
                    "expr": f"(sum(rate({METRIC}{selector(slo, True)}[{w}])))\n/\n"
                    f"(sum(rate({METRIC}{selector(slo, False)}[{w}])))",
                    "labels": {**labels, "sloth_window": w},
                }
            )
        sli.append(
            {
                "record": "slo:sli_error:ratio_rate30d",
                "expr": f"sum_over_time(slo:sli_error:ratio_rate5m{sel}[30d])\n/ ignoring "
                f"(sloth_window)\ncount_over_time(slo:sli_error:ratio_rate5m{sel}[30d])",
                "labels": {**labels, "sloth_window": "30d"},
            }
        )
        on = "on(sloth_id, sloth_slo, sloth_service) group_left"
        meta = [
            {"record": "slo:objective:ratio", "expr": f"vector({OBJECTIVE})", "labels": labels},
            {
                "record": "slo:error_budget:ratio",
                "expr": f"vector(1-{OBJECTIVE})",
                "labels": labels,
            },
            {"record": "slo:time_period:days", "expr": "vector(30)", "labels": labels},
            {
                "record": "slo:current_burn_rate:ratio",
                "expr": f"slo:sli_error:ratio_rate5m{sel}\n/ {on}\nslo:error_budget:ratio{sel}",
                "labels": labels,
            },
            {
                "record": "slo:period_burn_rate:ratio",
                "expr": f"slo:sli_error:ratio_rate30d{sel}\n/ {on}\nslo:error_budget:ratio{sel}",
                "labels": labels,
            },
            {
                "record": "slo:period_error_budget_remaining:ratio",
                "expr": f"1 - slo:period_burn_rate:ratio{sel}",
                "labels": labels,
            },
            {"record": "sloth_slo_info", "expr": "vector(1)", "labels": labels},
        ]
        alerts = []
        for severity, tiers in SLOTH_TIERS.items():
            parts = []
            for short, long_, factor in tiers:
                parts.append(
                    f"(\n    max(slo:sli_error:ratio_rate{short}{sel} > ({factor} * "
                    f"{1 - OBJECTIVE:.3g})) without (sloth_window)\n    and\n    max(slo:"
                    f"sli_error:ratio_rate{long_}{sel} > ({factor} * {1 - OBJECTIVE:.3g})) "
                    "without (sloth_window)\n)"
                )
            alerts.append(
                {
                    "alert": "SLOErrorBudgetBurn",
                    "expr": "\nor\n".join(parts),
                    "labels": {"severity": severity, "sloth_severity": severity},
                }
            )
        groups += [
            {"name": f"sloth-slo-sli-recordings-{slo.name}", "rules": sli},
            {"name": f"sloth-slo-meta-recordings-{slo.name}", "rules": meta},
            {"name": f"sloth-slo-alerts-{slo.name}", "rules": alerts},
        ]
    return groups


def pyrra_groups(slos: list[SLO]) -> list[dict[str, Any]]:
    """The rules Pyrra generates for a ratio SLO: the raw increase over the whole window,
    raw burn rates per alert window, four alerts, and its generic recordings."""
    groups: list[dict[str, Any]] = []
    for slo in slos:
        labels = {"slo": slo.name}
        model = dict(slo.selector)["model"]
        sel = f'{{model="{model}",slo="{slo.name}"}}'
        increase = [
            {
                "record": "gen_ai_server_requests:increase30d",
                "expr": f"sum by (outcome) (increase({METRIC}{selector(slo, False)}[30d]))",
                "labels": labels,
            },
            {
                "alert": "SLOMetricAbsent",
                "expr": f"absent({METRIC}{selector(slo, False)}) == 1",
                "for": "2m",
                "labels": {**labels, "severity": "critical"},
            },
        ]
        burn = []
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "4d"):
            burn.append(
                {
                    "record": f"gen_ai_server_requests:burnrate{w}",
                    "expr": f"sum(rate({METRIC}{selector(slo, True)}[{w}])) / "
                    f"sum(rate({METRIC}{selector(slo, False)}[{w}]))",
                    "labels": {**labels, "model": model},
                }
            )
        for short, long_, factor in PYRRA_TIERS:
            burn.append(
                {
                    "alert": "ErrorBudgetBurn",
                    "expr": f"gen_ai_server_requests:burnrate{short}{sel} > ({factor} * "
                    f"(1-{OBJECTIVE})) and gen_ai_server_requests:burnrate{long_}{sel} > "
                    f"({factor} * (1-{OBJECTIVE}))",
                    "labels": {**labels, "severity": "critical" if factor > 5 else "warning"},
                }
            )
        generic = [
            {"record": "pyrra_objective", "expr": f"vector({OBJECTIVE})", "labels": labels},
            {"record": "pyrra_window", "expr": f"vector({30 * DAY})", "labels": labels},
            {
                "record": "pyrra_availability",
                "expr": "1 - sum(gen_ai_server_requests:increase30d"
                f'{{slo="{slo.name}",outcome="error"}} or vector(0)) / '
                f'sum(gen_ai_server_requests:increase30d{{slo="{slo.name}"}})',
                "labels": labels,
            },
            {
                "record": "pyrra_requests:rate5m",
                "expr": f"sum(rate({METRIC}{selector(slo, False)}[5m]))",
                "labels": labels,
            },
            {
                "record": "pyrra_errors:rate5m",
                "expr": f"sum(rate({METRIC}{selector(slo, True)}[5m]))",
                "labels": labels,
            },
        ]
        groups += [
            {"name": f"{slo.name}-increase", "rules": increase},
            {"name": slo.name, "rules": burn},
            {"name": f"{slo.name}-generic", "rules": generic},
        ]
    return groups


def counts(slo_index: int, pod: int, first: int, end: int) -> tuple[list[int], list[int]]:
    """(success, error) requests of one pod in each minute from ``first`` to ``end``: a daily
    cycle and a small error share that differs per SLO."""
    ok, err = [], []
    for m in range(first, end):
        phase = (m + 37 * slo_index) % 1440
        total = 60 + (phase * 7919 + pod * 104729) % 41
        e = int((phase + slo_index + pod) % 7 == 0)
        ok.append(total - e)
        err.append(e)
    return ok, err


def head(name: str, labels: dict[str, str]) -> str:
    """A sample line's name and labels, as the exposition module writes them."""
    return sample_line(name, labels, 0).removesuffix(" 0") + " "


def write_history(
    workdir: Path,
    slos: list[SLO],
    pods: int,
    start: int,
    minutes: int,
    scrape: int = 60,
    fine_minutes: int = 0,
) -> tuple[list[Path], dict[tuple[int, int, str], int]]:
    """OpenMetrics files, one per day of history (promtool writes one block per file): raw
    counters for ``minutes`` from ``start`` (every ``scrape`` seconds in the last
    ``fine_minutes``, every minute before), and the recorded series the rules read over long
    windows, one a minute. Each family's samples stay together, as OpenMetrics requires. Also
    returns each raw counter's last value, which the live exporter continues from."""
    days = range(0, minutes, 1440)
    paths = [workdir / f"history-{n:02d}.om" for n in range(len(days))]
    files = [p.open("w") for p in paths]
    steps = 60 // scrape
    fine_from = minutes - fine_minutes

    def write(prefix: str, rows: list[tuple[int, str]]) -> None:
        """``rows``: (minute, "value timestamp") in time order; split by day file."""
        for d, f in zip(days, files, strict=True):
            lo = bisect.bisect_left(rows, d, key=lambda r: r[0])
            hi = bisect.bisect_left(rows, d + 1440, key=lambda r: r[0])
            if lo < hi:
                f.write(prefix + f"\n{prefix}".join(r for _, r in rows[lo:hi]) + "\n")

    try:
        totals, errors, last = [], [], {}
        for i, slo in enumerate(slos):
            model = dict(slo.selector)["model"]
            sum_total, sum_err = [0] * minutes, [0] * minutes
            for pod in range(pods):
                ok, err = counts(i, pod, 0, minutes)
                for outcome, series in (("success", ok), ("error", err)):
                    cumulative = list(accumulate(series))
                    last[(i, pod, outcome)] = cumulative[-1]
                    rows: list[tuple[int, str]] = []
                    for m, v in enumerate(cumulative):
                        if m > fine_from and steps > 1:  # the minute's requests, spread evenly
                            prev, n = cumulative[m - 1], series[m]
                            t0 = start + 60 * (m - 1)
                            rows += [
                                (m, f"{prev + n * k // steps} {t0 + scrape * k}")
                                for k in range(1, steps)
                            ]
                        rows.append((m, f"{v} {start + 60 * m}"))
                    labels = {"model": model, "outcome": outcome, "pod": f"p{pod}"}
                    write(head(METRIC, labels), rows)
                sum_total = [a + b + c for a, b, c in zip(sum_total, ok, err, strict=True)]
                sum_err = [a + b for a, b in zip(sum_err, err, strict=True)]
            totals.append(list(accumulate(sum_total)))
            errors.append(list(accumulate(sum_err)))
        first = 5
        for slo, t, e in zip(slos, totals, errors, strict=True):
            ours = {"service": "bench", "slo": slo.name}
            rates = {
                REQUESTS: [(t[m] - t[m - 5]) / 300 for m in range(first, minutes)],
                ERRORS: [(e[m] - e[m - 5]) / 300 for m in range(first, minutes)],
            }
            for name, values in rates.items():
                ts = range(first, minutes)
                write(
                    head(name, ours),
                    [
                        (m, f"{format_value(v)} {start + 60 * m}")
                        for m, v in zip(ts, values, strict=True)
                    ],
                )
                hour_rows, block_rows, to_date_rows, running = [], [], [], 0.0
                for m, v in zip(ts, values, strict=True):
                    at = start + 60 * m
                    running = 0.0 if at % 3600 == 0 else running + v
                    to_date_rows.append((m, f"{format_value(running)} {at}"))
                    if at % 3600 == 0 and m >= 60 + first:
                        hour = sum(values[m - first - 59 : m - first + 1])
                        hour_rows.append((m, f"{format_value(hour)} {at}"))
                    if at % 300 == 0 and m >= 5 + first:  # the five-minute block sums
                        block = sum(values[m - first - 4 : m - first + 1])
                        block_rows.append((m, f"{format_value(block)} {at}"))
                write(head(c.slo_hour_sum(name), ours), hour_rows)
                write(head(c.slo_block_sum(name), ours), block_rows)
                write(head(c.slo_hour_to_date(name), ours), to_date_rows)
            sloth = {
                "sloth_id": slo.name,
                "sloth_service": "bench",
                "sloth_slo": slo.name,
                "sloth_window": "5m",
            }
            write(
                head("slo:sli_error:ratio_rate5m", sloth),
                [
                    (m, f"{format_value((e[m] - e[m - 5]) / (t[m] - t[m - 5]))} {start + 60 * m}")
                    for m in range(first, minutes)
                ],
            )
        for f in files:
            f.write("# EOF\n")
    finally:
        for f in files:
            f.close()
    return paths, last


class LiveCounters:
    """A loopback exporter that carries the raw counters on from where the history ends, so
    the rules see live data (Prometheus appends new samples only after its newest block)."""

    def __init__(
        self,
        slos: list[SLO],
        pods: int,
        start: int,
        minutes: int,
        last: dict[Any, int],
        scrape: int = 15,
    ) -> None:
        self.slos, self.pods, self.start, self.minutes, self.last = slos, pods, start, minutes, last
        self.scrape = scrape
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def render(self) -> bytes:
        now = (int(time.time()) - self.start) // 60 + 1  # minutes counted so far
        lines = []
        for i, slo in enumerate(self.slos):
            model = dict(slo.selector)["model"]
            for pod in range(self.pods):
                ok, err = counts(i, pod, self.minutes, max(now, self.minutes))
                for outcome, more in (("success", ok), ("error", err)):
                    value = self.last[(i, pod, outcome)] + sum(more)
                    labels = {"model": model, "outcome": outcome, "pod": f"p{pod}"}
                    lines.append(sample_line(METRIC, labels, value))
        return ("\n".join(lines) + "\n").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        live = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = live.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def scrape_config(self) -> str:
        """A scrape job keeping the backfilled series' labels (no job or instance)."""
        return yaml.safe_dump(
            {
                "scrape_configs": [
                    {
                        "job_name": "raw",
                        "scrape_interval": f"{self.scrape}s",
                        "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}],
                        "metric_relabel_configs": [
                            {"action": "labeldrop", "regex": "job|instance"}
                        ],
                    }
                ]
            }
        )

    def __enter__(self) -> LiveCounters:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Result:
    style: str
    groups: int
    rules: int
    eval_p50_ms: float
    eval_p90_ms: float
    cpu_s_per_cycle: float
    failures: float
    profile: str = ""  # the costliest rules of the last measured cycle (``profile``)


def measure(
    style: str,
    groups: list[dict[str, Any]],
    workdir: Path,
    data: Path,
    live: LiveCounters,
    interval: int,
    cycles: int,
) -> Result:
    """Run one style alone on the shared data; per-cycle total evaluation time and CPU."""
    rules = workdir / f"{style}.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    lab = Prometheus(
        workdir / style,
        data=data,
        rule_files=[rules],
        config_extra=live.scrape_config(),
        evaluation_interval=f"{interval}s",
        # Keep the backfilled day-long blocks as they are: no compaction during the run.
        flags=["--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"],
    )
    with lab:
        proc = psutil.Process(lab.pid)
        time.sleep(max(2 * interval, 31) + 1)  # warm-up: two scrapes, every group evaluated
        totals: list[float] = []
        cpu0 = proc.cpu_times()
        for _ in range(cycles):
            time.sleep(interval)
            listed = lab.api("rules")["groups"]
            totals.append(sum(g["evaluationTime"] for g in listed))
        cpu1 = proc.cpu_times()
        failures = sum(
            float(r["value"][1])
            for r in lab.query("sum(prometheus_rule_evaluation_failures_total)")
        )
        bad = [
            (r["name"], r.get("health"), r.get("lastError"))
            for g in listed
            for r in g["rules"]
            if r.get("health") != "ok"
        ]
        if bad:
            print(f"{style}: {len(bad)} unhealthy rules, e.g. {bad[:3]}", file=sys.stderr)
        costliest = profile(listed)
        print(f"{style}: {costliest}", file=sys.stderr)
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / cycles
    totals.sort()
    return Result(
        style,
        len(groups),
        sum(len(g["rules"]) for g in groups),
        statistics.median(totals) * 1000,
        totals[min(len(totals) - 1, int(0.9 * len(totals)))] * 1000,
        cpu,
        failures,
        costliest,
    )


def profile(listed: list[dict[str, Any]], top: int = 6) -> str:
    """The last cycle's evaluation time summed per rule name (recording or alert), the
    costliest first: where a style spends its time (``/api/v1/rules`` per-rule
    ``evaluationTime``)."""
    per: dict[str, float] = {}
    for g in listed:
        for r in g["rules"]:
            per[r["name"]] = per.get(r["name"], 0.0) + r.get("evaluationTime", 0.0)
    total = sum(per.values()) or 1.0
    ranked = sorted(per.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in ranked)


def check_rules(workdir: Path, styles: dict[str, list[dict[str, Any]]]) -> None:
    import subprocess

    for style, groups in styles.items():
        path = workdir / f"{style}.check.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        out = subprocess.run(
            [binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True
        )
        if out.returncode:
            raise SystemExit(f"{style} rules do not pass promtool: {out.stdout}{out.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slos", type=int, default=200)
    ap.add_argument("--pods", type=int, default=5, help="raw series per outcome per SLO")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--scrape", type=int, default=15, help="raw sample spacing, seconds")
    ap.add_argument(
        "--fine-days", type=int, default=4, help="days of raw history at --scrape spacing"
    )
    ap.add_argument("--interval", type=int, default=15, help="evaluation interval, seconds")
    ap.add_argument("--cycles", type=int, default=8, help="evaluations measured per style")
    ap.add_argument("--scale", type=int, help="instead: generate, check and load N SLOs")
    ap.add_argument("--write", type=Path, help="rewrite the results block in this markdown file")
    args = ap.parse_args(argv)
    if args.scale:
        text = scale(args.scale, args.interval)
        print(text)
        if args.write:
            write_block(args.write, "rules_scale", text)
        return 0

    with tempfile.TemporaryDirectory(prefix="gpuslo-rules-cost-") as tmp:
        workdir = Path(tmp)
        slos = specs(args.slos, workdir)
        styles = {
            "gpuslo": rule_groups(slos, layout=Layout(interval=args.interval)),
            "sloth": sloth_groups(slos),
            "pyrra": pyrra_groups(slos),
        }
        check_rules(workdir, styles)
        now = int(time.time()) // 60 * 60
        start = now - args.days * DAY - 3600
        minutes = (now - start) // 60
        t0 = time.monotonic()
        files, last = write_history(
            workdir, slos, args.pods, start, minutes, args.scrape, args.fine_days * 1440
        )
        print(f"history written in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        data = workdir / "data"
        data.mkdir()
        for f in files:
            backfill_openmetrics(f, data, max_block="24h")
            f.unlink()
        print(f"history written and backfilled in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        with LiveCounters(slos, args.pods, start, minutes, last, args.scrape) as live:
            results = [
                measure(style, groups, workdir, data, live, args.interval, args.cycles)
                for style, groups in styles.items()
            ]

    raw = args.slos * args.pods * 2
    text = report(results, args, raw)
    print(text)
    if args.write:
        write_block(args.write, "rules_cost", text)
    return 0


def scale(n: int, interval: int) -> str:
    """Generate ``n`` SLOs (time, peak Python memory), check them with promtool, load them
    into one Prometheus scraping live counters and measure one evaluation cycle."""
    import subprocess
    import tracemalloc

    with tempfile.TemporaryDirectory(prefix="gpuslo-rules-scale-") as tmp:
        workdir = Path(tmp)
        slos = specs(n, workdir)
        tracemalloc.start()
        t0 = time.perf_counter()
        rules, _ = write_outputs(slos, [str(workdir / "slos.yaml")], workdir / "out")
        gen_s = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        doc = yaml.safe_load(rules.read_text())
        groups = doc["groups"]
        size = rules.stat().st_size
        t0 = time.perf_counter()
        out = subprocess.run(
            [binary("promtool"), "check", "rules", str(rules)], capture_output=True, text=True
        )
        check_s = time.perf_counter() - t0
        if out.returncode:
            raise SystemExit(f"promtool check rules failed: {out.stdout[-500:]}{out.stderr[-500:]}")
        now = int(time.time()) // 60 * 60
        last = {(i, p, o): 0 for i in range(n) for p in range(2) for o in ("success", "error")}
        with LiveCounters(slos, 2, now, 0, last, 15) as live:
            lab = Prometheus(
                workdir / "prom",
                rule_files=[rules],
                config_extra=live.scrape_config(),
                evaluation_interval=f"{interval}s",
            )
            lab.start(timeout=600)  # 58,000 rules take a while to load on a busy machine
            try:
                proc = psutil.Process(lab.pid)
                time.sleep(2 * interval + 30)  # every group evaluated, 5m rates filling
                cpu0 = proc.cpu_times()
                time.sleep(2 * interval)
                cpu1 = proc.cpu_times()
                cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / 2
                listed = lab.api("rules")["groups"]
                cycle = sum(g["evaluationTime"] for g in listed)
                unhealthy = sum(1 for g in listed for r in g["rules"] if r.get("health") == "err")
                rss = proc.memory_info().rss
                loaded = sum(len(g["rules"]) for g in listed)
            finally:
                lab.__exit__(None, None, None)
    rules_n = sum(len(g["rules"]) for g in groups)
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')}, Prometheus {prometheus_version()}: {n} "
            f"availability SLOs, {2 * n * 2} live raw series, evaluation every {interval}s.",
            "",
            f"Command: `.venv/bin/python bench/rules_cost.py --scale {n} --interval {interval} "
            "--write docs/benchmarks.md`",
            "",
            "| step | figure |",
            "|---|---:|",
            f"| rules generated (rules / groups / largest group) | {rules_n} / {len(groups)} / "
            f"{max(len(g['rules']) for g in groups)} |",
            f"| generation: `write_outputs` wall time | {gen_s:.1f} s |",
            f"| generation: peak Python memory (tracemalloc) | {peak / 2**20:.0f} MiB |",
            f"| rule file size | {size / 2**20:.1f} MiB |",
            f"| `promtool check rules` | {check_s:.1f} s, SUCCESS |",
            f"| loaded into Prometheus (rules / unhealthy) | {loaded} / {unhealthy} |",
            f"| one evaluation cycle: Prometheus CPU (mean of two cycles) | {cpu:.1f} s |",
            f"| one evaluation cycle: summed group evaluation time (groups run concurrently, "
            f"so this counts waiting for a core too) | {cycle:.0f} s |",
            f"| Prometheus resident memory after {(4 * interval + 30) // 60} minutes "
            f"| {rss / 2**20:.0f} MiB |",
            f"| load average (1 min) at the end | {os.getloadavg()[0]:.1f} |",
        ]
    )


def report(results: list[Result], args: argparse.Namespace, raw: int) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {psutil.cpu_count()} cores, "
        f"Prometheus {prometheus_version()}, load average {os.getloadavg()[0]:.1f} at the end. "
        f"{args.slos} availability SLOs (99.9% over {args.days}d), {raw} raw counter series "
        f"({2 * args.pods} per SLO) sampled every {args.scrape}s for the last {args.fine_days} "
        f"days and every minute before, {args.days} days in all; every group evaluated every "
        f"{args.interval}s; {args.cycles} evaluations measured per style after a warm-up.",
        "",
        f"Command: `.venv/bin/python bench/rules_cost.py --slos {args.slos} --pods {args.pods} "
        f"--scrape {args.scrape} --fine-days {args.fine_days} --days {args.days} "
        f"--interval {args.interval} --cycles {args.cycles} --write docs/benchmarks.md`",
        "",
        "| style | groups | rules | evaluation time per cycle p50 (ms) | p90 (ms) "
        "| Prometheus CPU per cycle (s) | failed evaluations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.style} | {r.groups} | {r.rules} | {r.eval_p50_ms:.0f} | {r.eval_p90_ms:.0f} "
            f"| {r.cpu_s_per_cycle:.2f} | {r.failures:.0f} |"
        )
    by = {r.style: r for r in results}
    ours, others = by["gpuslo"], [by["sloth"], by["pyrra"]]
    cpu_ratio = ours.cpu_s_per_cycle / min(r.cpu_s_per_cycle for r in others)
    time_ratio = ours.eval_p50_ms / min(r.eval_p50_ms for r in others)
    lines += [
        "",
        f"gpuslo / the cheaper of Sloth and Pyrra: **{cpu_ratio:.2f}x** the Prometheus CPU per "
        f"cycle, {time_ratio:.2f}x the evaluation time per cycle (target: at most 0.5x).",
        "",
        "Where the evaluation time goes (per-rule `evaluationTime` of the last cycle, summed "
        "per rule name, costliest first):",
        "",
        *(f"- {r.style}: {r.profile}" for r in results),
    ]
    return "\n".join(lines)


def prometheus_version() -> str:
    import subprocess

    out = subprocess.run([binary("prometheus"), "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split()[2]


if __name__ == "__main__":
    sys.exit(main())
