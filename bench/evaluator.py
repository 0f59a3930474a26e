"""Benchmark the SLO evaluator: many SLOs over 30 days at one-minute resolution, every window
and tier; and the same work done by a real Prometheus, to report the ratio.

Part 1: ``--slos`` SLOs (native spec, availability, rolling 30 days, the SRE-workbook tiers
and a min-events guard) with ``--days`` of synthetic base rates each (a daily curve, noise and
a few incidents), evaluated with ``slo_engine.evaluator.evaluate``. Wall time, CPU time and
peak RSS of this process (input arrays included) are reported.

Part 2: ``--prom-slos`` of those SLOs' base rates are written as recorded series, backfilled
into a throwaway Prometheus, and every derived expression of the generated rules (each
window's ratio, each burn-rate alert) is evaluated by Prometheus with range queries over the
last ``--prom-hours`` at the same step; the evaluator computes the same series for the same
SLOs. Both times are per SLO and evaluation step, so their ratio compares like with like.

    .venv/bin/python bench/evaluator.py [--slos 1000] [--days 30] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results import write_block  # noqa: E402
from gpuslo.foundation.promlab import Prometheus  # noqa: E402
from gpuslo.slo_engine import load_specs  # noqa: E402
from gpuslo.slo_engine.evaluator import SliData, evaluate  # noqa: E402
from gpuslo.slo_engine.rules import ERRORS, REQUESTS, recording_rules  # noqa: E402

STEP = 60.0


def make_slos(n: int, tmp: Path) -> list:
    lines = [
        "apiVersion: gpuslo/v1",
        "kind: SLOs",
        "defaults: {service: chat, window: 30d}",
        "slos:",
    ]
    for i in range(n):
        lines += [
            f"  - name: slo-{i:04d}",
            "    objective: 99.9",
            f"    selector: {{model: model-{i:04d}}}",
            "    availability: {}",
            "    alerting: {min_events: 50}",
        ]
    spec = tmp / "slos.yaml"
    spec.write_text("\n".join(lines) + "\n")
    slos, _ = load_specs([spec])
    return sorted(slos, key=lambda s: s.name)


def make_data(n_slos: int, steps: int, start: float, seed: int = 1) -> list[SliData]:
    rng = np.random.default_rng(seed)
    minutes = np.arange(steps)
    curve = 50 + 30 * np.sin(2 * np.pi * minutes / 1440)
    out = []
    for _ in range(n_slos):
        requests = curve * rng.uniform(0.5, 2.0) + rng.normal(0, 2, steps).clip(-10, 10)
        ratio = np.full(steps, 0.0003) + rng.exponential(0.0002, steps)
        for _ in range(3):  # incidents of 30 min to 6 h at 1% to 20% errors
            at = rng.integers(0, steps - 400)
            ratio[at : at + rng.integers(30, 360)] = rng.uniform(0.01, 0.2)
        out.append(SliData(start, STEP, requests.clip(0) * ratio, requests.clip(0)))
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_one(slos: list, data: list[SliData]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    episodes = 0
    for slo, d in zip(slos, data, strict=True):
        episodes += len(evaluate(slo, d).episodes)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "episodes": episodes,
        "rss": peak_rss_mib(),
    }


def write_recorded(path: Path, slos: list, data: list[SliData]) -> None:
    with path.open("w") as f:
        for series, attr in ((ERRORS, "errors"), (REQUESTS, "requests")):
            for slo, d in zip(slos, data, strict=True):
                labels = f'{{slo="{slo.name}",service="{slo.service}"}}'
                values = getattr(d, attr)
                ts = d.timestamps
                f.write(
                    "".join(
                        f"{series}{labels} {v:.9g} {t:.0f}\n"
                        for v, t in zip(values, ts, strict=True)
                    )
                )
        f.write("# EOF\n")


def part_two(slos: list, data: list[SliData], hours: float, tmp: Path) -> dict[str, float]:
    """Prometheus evaluating every derived expression over the last ``hours``, and the
    evaluator on the same SLOs (all of its range, so its figure is an upper bound)."""
    history = tmp / "recorded.om"
    write_recorded(history, slos, data)
    end = float(data[0].timestamps[-1])
    start = end - hours * 3600 + STEP
    steps = round(hours * 3600 / STEP)
    # The window ratios: the sums over time that make up nearly all of the rules' cost (burn
    # rates, budget and alert conditions only divide and compare their results). The
    # evaluator below does all of it, so the ratio favours Prometheus.
    exprs = [
        r["expr"]
        for slo in slos
        for r in recording_rules(slo)
        if r["record"].startswith("gpuslo:slo_error_ratio:")
    ]
    with Prometheus(tmp / "prom") as prom:
        prom.backfill_openmetrics(history)
        prom.restart()
        prom.api("query", query=f"count({ERRORS})", time=repr(end))  # warm the head/blocks
        started = time.perf_counter()
        answered = 0
        for expr in exprs:
            result = prom.api(
                "query_range", query=expr, start=repr(start), end=repr(end), step="60"
            )["result"]
            answered += bool(result)
        prom_wall = time.perf_counter() - started
        if answered != len(exprs):
            raise SystemExit(f"only {answered} of {len(exprs)} expressions returned data")
        # Not an empty benchmark: every ratio expression answered, and the 30-day ratio
        # agrees with the evaluator's.
        period = recording_rules(slos[0])[2:]
        expr = next(r["expr"] for r in period if r["record"].endswith("ratio_rate30d"))
        theirs = prom.scalar(expr, at=end)
        mine = float(evaluate(slos[0], data[0]).error_ratio["30d"][-1])
        if abs(theirs - mine) > 1e-6 * abs(mine):
            raise SystemExit(f"Prometheus and the evaluator disagree: {theirs} vs {mine}")
    started = time.perf_counter()
    for slo, d in zip(slos, data, strict=True):
        evaluate(slo, d)
    ours = time.perf_counter() - started
    return {
        "prom_wall": prom_wall,
        "prom_per_step": prom_wall / (len(slos) * steps),
        "ours_wall": ours,
        "ours_per_step": ours / (len(slos) * len(data[0].errors)),
        "steps": steps,
        "exprs": len(exprs),
        "answered": answered,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slos", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--prom-slos", type=int, default=5)
    ap.add_argument("--prom-hours", type=float, default=24.0)
    ap.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = ap.parse_args()
    steps = args.days * 1440
    start = 1_700_000_000 // 86400 * 86400 - args.days * 86400
    with tempfile.TemporaryDirectory(prefix="gpuslo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        slos = make_slos(args.slos, tmp)
        data = make_data(args.slos, steps, start)
        one = part_one(slos, data)
        print(f"part 1: {one}", file=sys.stderr)
        k = args.prom_slos
        two = part_two(slos[:k], data[:k], args.prom_hours, tmp)
        print(f"part 2: {two}", file=sys.stderr)
    from bench.correlation import ranking_speed

    ranking = ranking_speed()
    n_windows = 8
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
            f"cores, Python {platform.python_version()}, numpy {np.__version__}.",
            "",
            f"Command: `.venv/bin/python bench/evaluator.py --slos {args.slos} --days "
            f"{args.days} --prom-slos {k} --prom-hours {args.prom_hours:g} --write "
            "docs/benchmarks.md`",
            "",
            "| work | wall | CPU | peak RSS | episodes |",
            "|---|---:|---:|---:|---:|",
            f"| {args.slos} SLOs x {args.days} days at 1 min ({steps:,} steps each; "
            f"{n_windows} windows, 4 tiers) | **{one['wall']:.2f} s** | {one['cpu']:.2f} s | "
            f"{one['rss']:.0f} MiB | {one['episodes']:,.0f} |",
            "",
            f"Against Prometheus ({k} SLOs; Prometheus evaluates their {two['exprs']} window "
            f"ratio expressions, the sums that make up nearly all the rules' cost, over the "
            f"last {args.prom_hours:g} h ({two['steps']} steps); the evaluator computes "
            f"everything, windows, burn rates, budget, tiers and episodes, over their whole "
            f"{args.days} days):",
            "",
            "| evaluator | time | per SLO and step |",
            "|---|---:|---:|",
            f"| Prometheus 2 range queries | {two['prom_wall']:.2f} s | "
            f"{two['prom_per_step'] * 1e6:,.1f} µs |",
            f"| gpuslo evaluator (numpy) | {two['ours_wall']:.3f} s | "
            f"{two['ours_per_step'] * 1e6:,.2f} µs |",
            "",
            f"Ratio per SLO and step: the evaluator is "
            f"{two['prom_per_step'] / two['ours_per_step']:,.0f} times faster.",
            "",
            f"One correlation (`slo_engine.correlate.rank`) over 10,000 candidate series of "
            f"240 steps: **{ranking:.2f} s**.",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, "evaluator", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
