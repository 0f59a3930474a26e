"""Benchmark the twin's offline mode: 7 days of a 16-node, 128-GPU fleet.

The scenario is built here: three pools (a 4-GPU-per-replica 70B model, a 1-GPU 8B model,
a 1-GPU 7B model), six tenants with daily curves and bursts, and one of each fault kind
spread over the week. Every node's series come from its real agent (GPU collector over the
sim backend, InfiniBand collector over a sysfs tree), sampled once per step, so the time is
mostly theirs. Target (issue: digital twin): under 60 s at one-minute steps.

``--mode replay`` measures what a planning replay runs instead (``simulator/plan.py``
``replay``): the same fleet model and scenario at the same step, no agents and no GPU
telemetry (``Fleet(telemetry=False)``), no history file, and per step the request, latency,
SLO (TTFT under 2 s for 99% and availability, per model) and cost outcomes. Target (issue:
capacity planning): the week at 15-second steps under 60 s.

    .venv/bin/python bench/twin_offline.py [--days 7] [--nodes 16] [--step 1m] \
        [--mode auto|history|replay] [--write docs/benchmarks.md]

``--mode auto`` (the default) is ``history`` at steps of a minute or more, ``replay`` below.
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

import psutil
import yaml
from results import write_block

from gpuslo.foundation.durations import parse_duration
from gpuslo.simulator.offline import run_offline
from gpuslo.simulator.plan import Controller, SloTarget, replay
from gpuslo.simulator.scenario import load_scenario


def scenario(days: int, nodes: int, step: str) -> dict[str, object]:
    gpus = nodes * 8
    big = gpus * 3 // 8 // 4  # replicas of 4 GPUs on 3/8 of the fleet
    small = gpus * 3 // 8
    tiny = gpus - big * 4 - small
    day = 24 * 60
    faults = [
        {
            "at": f"{day + 600}m",
            "for": "40m",
            "kind": "thermal_throttle",
            "node": "gpu-node-03",
            "gpu": 1,
        },
        {"at": f"{2 * day + 200}m", "for": "2h", "kind": "xid79", "node": "gpu-node-05", "gpu": 2},
        {"at": f"{3 * day + 100}m", "for": "1m", "kind": "xid48", "node": "gpu-node-01", "gpu": 0},
        {"at": f"{3 * day + 900}m", "for": "1m", "kind": "xid94", "node": "gpu-node-02", "gpu": 6},
        {
            "at": f"{4 * day + 300}m",
            "for": "30m",
            "kind": "nvlink_crc",
            "node": "gpu-node-00",
            "gpu": 2,
        },
        {"at": f"{4 * day + 800}m", "for": "10m", "kind": "ib_flap", "node": "gpu-node-04"},
        {
            "at": f"{5 * day + 500}m",
            "for": "3h",
            "kind": "noisy_neighbour",
            "node": "gpu-node-07",
            "gpu": 4,
        },
        {
            "at": f"{6 * day + 700}m",
            "for": "45m",
            "kind": "traffic_spike",
            "tenant": "acme",
            "factor": 2.5,
        },
    ]
    return {
        "apiVersion": "gpuslo/v1",
        "kind": "TwinScenario",
        "duration": f"{days}d",
        "step": step,
        "nodes": [{"prefix": "gpu-node", "count": nodes, "gpus": 8, "profile": "H100"}],
        "pools": [
            {
                "name": "llama-70b",
                "model": "llama-3-70b",
                "replicas": big,
                "gpus_per_replica": 4,
                "tokens_per_second": 2400,
            },
            {
                "name": "llama-8b",
                "model": "llama-3-8b",
                "replicas": small,
                "gpus_per_replica": 1,
                "tokens_per_second": 4000,
            },
            {
                "name": "mistral-7b",
                "model": "mistral-7b",
                "replicas": tiny,
                "gpus_per_replica": 1,
                "tokens_per_second": 4200,
            },
        ],
        "tenants": [
            {
                "name": "acme",
                "model": "llama-3-70b",
                "requests_per_second": 4 * big,
                "diurnal": 0.4,
            },
            {
                "name": "globex",
                "model": "llama-3-70b",
                "requests_per_second": 2 * big,
                "output_tokens": 384,
            },
            {
                "name": "initech",
                "model": "llama-3-8b",
                "requests_per_second": 12 * small,
                "output_tokens": 128,
            },
            {
                "name": "umbrella",
                "model": "llama-3-8b",
                "requests_per_second": 6 * small,
                "diurnal": 0.5,
            },
            {
                "name": "hooli",
                "model": "mistral-7b",
                "requests_per_second": 10 * tiny,
                "output_tokens": 200,
            },
            {
                "name": "stark",
                "model": "mistral-7b",
                "requests_per_second": 4 * tiny,
                "bursts": [{"at": f"{day + 120}m", "for": "1h", "factor": 2}],
            },
        ],
        "faults": [f for f in faults if days * day > int(str(f["at"])[:-1])],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--step", default="1m")
    ap.add_argument(
        "--mode",
        choices=("auto", "history", "replay"),
        default="auto",
        help="history: through the agents, writing history.om; replay: the planning replay; "
        "auto (default): history at steps of a minute or more, replay below (the week's full "
        "history at 15-second steps is some 50 GB and half an hour)",
    )
    ap.add_argument("--write", type=Path)
    args = ap.parse_args(argv)
    if args.mode == "auto":
        args.mode = "history" if parse_duration(args.step) >= 60 else "replay"
    if args.mode == "replay":
        return _replay(args)
    with tempfile.TemporaryDirectory(prefix="gpuslo-twin-bench-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario(args.days, args.nodes, args.step), sort_keys=False))
        spec = load_scenario(path)
        proc = psutil.Process()
        t0, cpu0 = time.perf_counter(), proc.cpu_times()
        result = run_offline(spec, Path(tmp) / "out", start=1_795_000_000.0)
        elapsed = time.perf_counter() - t0
        cpu1 = proc.cpu_times()
        size = (Path(tmp) / "out" / "history.om").stat().st_size
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {psutil.cpu_count()} "
            f"cores, Python {platform.python_version()}.",
            "",
            f"Command: `.venv/bin/python bench/twin_offline.py --days {args.days} --nodes "
            f"{args.nodes} --step {args.step} --mode history --write docs/benchmarks.md`",
            "",
            "| fleet | simulated | step | wall time (s) | CPU (s) | series | samples "
            "| history.om (MiB) | peak RSS (MiB) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
            f"| {args.nodes} nodes, {args.nodes * 8} GPUs | {args.days} days | {args.step} | "
            f"{elapsed:.1f} | {cpu1.user + cpu1.system - cpu0.user - cpu0.system:.1f} | "
            f"{result['series']:.0f} | {result['samples']:.0f} | {size / 2**20:.0f} "
            f"| {rss / 2**20:.0f} |",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, f"twin_offline_{args.step}", text)
    return 0


def _replay(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="gpuslo-twin-bench-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario(args.days, args.nodes, args.step), sort_keys=False))
        spec = load_scenario(path)
    models = sorted({p.model for p in spec.pools})
    slos = [SloTarget(f"{m}-ttft", m, "ttft", 0.99, 2.0) for m in models]
    slos += [SloTarget(f"{m}-availability", m, "availability", 0.999) for m in models]
    prices = {p.name: (2.95, 1.25, 0.0) for p in spec.pools}
    proc = psutil.Process()
    t0, cpu0 = time.perf_counter(), proc.cpu_times()
    out = replay(spec, Controller(), slos, prices, keep_series=False)
    elapsed = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    steps = int(out.gpu_hours and len(out.hourly[slos[0].name]) * 3600 // out.step)
    met = sum(out.met.values())
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {psutil.cpu_count()} "
            f"cores, Python {platform.python_version()}; load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.",
            "",
            f"Command: `.venv/bin/python bench/twin_offline.py --days {args.days} --nodes "
            f"{args.nodes} --step {args.step} --mode replay --write docs/benchmarks.md`",
            "",
            "| fleet | simulated | step | mode | wall time (s) | CPU (s) | steps | SLOs met "
            "| cost ($) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|",
            f"| {args.nodes} nodes, {args.nodes * 8} GPUs | {args.days} days | {args.step} | "
            f"replay (no agents, no history) | {elapsed:.1f} | "
            f"{cpu1.user + cpu1.system - cpu0.user - cpu0.system:.1f} | {steps} | "
            f"{met}/{len(slos)} | {out.cost:.0f} |",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, f"twin_offline_{args.step}_replay", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
