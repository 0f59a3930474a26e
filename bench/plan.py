"""Benchmark the capacity planner on the twin's standard week (docs/plan.md).

The history is the standard week's ordinary traffic (its daily curves and quieter weekend,
without the burst, the spike and the lost GPU, another seed); the plan, static provisioning
for the history's peak and reactive scaling (HPA-like, 70% target) are each replayed in the
twin over the whole standard week, surprises included, at one-minute steps, with spot
reclaims drawn at the profiles' rates. Done when (issue: capacity planning): the plan's
measured cost is at least 30% below static, every SLO is met, and it pages no more often than
reactive scaling.

    .venv/bin/python bench/plan.py [--step 1m] [--report DIR] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import psutil
from results import write_block

from gpuslo.foundation.durations import parse_duration
from gpuslo.simulator import plan as planner
from gpuslo.simulator.plan_report import write_report
from gpuslo.simulator.scenario import load_scenario, resolve_scenario
from gpuslo.slo_engine.specs import load_specs

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "examples" / "plan"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--step", default="1m")
    ap.add_argument("--report", type=Path, help="also write the HTML/JSON report here")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args(argv)
    step = parse_duration(args.step)
    twin = load_scenario(resolve_scenario("standard-week"))
    profiles = planner.load_profiles(INPUTS / "standard-week-pools.yaml")
    slos = planner.slo_targets_from(load_specs([INPUTS / "standard-week-slos.yaml"])[0])
    t0 = time.perf_counter()
    traffic = planner.traffic_from_twin(twin, step)
    result = planner.plan_and_prove(traffic, profiles, slos, twin, step=step)
    elapsed = time.perf_counter() - t0
    if args.report:
        write_report(result, args.report)
    v = result.verdict()
    rows = [
        "| policy | cost ($) | GPU-hours | SLOs met | pages | spot reclaims | "
        + " | ".join(s.name for s in slos)
        + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(slos),
    ]
    for r in result.replays:
        rows.append(
            f"| {r.policy} | {r.cost:.0f} | {r.gpu_hours:.0f} | {sum(r.met.values())}/"
            f"{len(r.met)} | {sum(r.pages.values())} | {r.interruptions} | "
            + " | ".join(f"{100 * r.attainment[s.name]:.3f}%" for s in slos)
            + " |"
        )
    plans = [
        f"- `{p.pool}`: {min(p.schedule)}-{max(p.schedule)} replicas by hour of week (static: "
        f"{p.static_replicas}), sized for load {p.max_load:.2f}; up to {p.warm} warm; spot "
        f"{100 * p.spot_share:.0f}%; predicted cost {p.predicted['plan.cost']:.0f} $ (static "
        f"{p.predicted['static.cost']:.0f} $)"
        for p in result.plans
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {psutil.cpu_count()} "
            f"cores, Python {platform.python_version()}; load average {load} at the end.",
            "",
            f"Command: `.venv/bin/python bench/plan.py --step {args.step} --write "
            "docs/benchmarks.md`",
            "",
            *rows,
            "",
            *plans,
            "",
            f"Plan vs static: {100 * v['saving_vs_static']:.1f}% cheaper (vs reactive: "
            f"{100 * v['saving_vs_reactive']:.1f}%); every SLO met: "
            f"{v['plan_meets_every_slo']}; pages: plan {v['plan_pages']}, reactive "
            f"{v['reactive_pages']}, static {v['static_pages']}. History, plan and three "
            f"week-long replays: {elapsed:.1f} s.",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, "plan", text)
    ok = v["saving_vs_static"] >= 0.3 and v["plan_meets_every_slo"]
    return 0 if ok and v["plan_pages"] <= v["reactive_pages"] else 1


if __name__ == "__main__":
    sys.exit(main())
