"""``gpuslo plan``: the cheapest fleet that meets the SLOs, proven in the twin (docs/plan.md).

From traffic history (Prometheus, a twin history file, or the twin scenario's own ordinary
week), the SLO specs, the price catalog and pool profiles: per pool a replica schedule by hour
of week, a warm-pool size and a spot share, with predicted cost and attainment; then the plan
and two baselines (static for the peak, reactive on a threshold) replayed in the twin over the
same traffic, with measured cost, attainment and pages side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError

EPILOG = """\
examples:
  gpuslo plan --twin standard-week --slo examples/plan/standard-week-slos.yaml \\
      --pools examples/plan/standard-week-pools.yaml -o plan-report/
  gpuslo plan --twin my-fleet.yaml --history /tmp/history/history.om --slo slos.yaml \\
      --pools pools.yaml --catalog examples/cost/catalog.yaml -o plan-report/
  gpuslo plan --twin my-fleet.yaml --prometheus http://prometheus:9090 --days 14 \\
      --slo slos.yaml --pools pools.yaml -o plan-report/
"""


def add_parser(sub: Any) -> None:
    """Register ``plan`` on the top-level subparsers."""
    p = sub.add_parser(
        "plan",
        help="capacity plan: replica schedule, warm pool and spot share, proven in the twin",
        description="Recommend per pool a replica schedule (hour of week), a warm-pool size "
        "and a spot share from traffic history, SLOs, prices and pool profiles; replay the "
        "plan, static provisioning for the peak and reactive scaling in the twin over the same "
        "traffic and report measured cost, SLO attainment and pages (plan.json, index.html).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--twin",
        required=True,
        metavar="SCENARIO",
        help="the twin scenario to replay in (a file or a shipped name, e.g. standard-week); "
        "its pools must carry the profiles' names",
    )
    p.add_argument("--pools", required=True, type=Path, metavar="FILE", help="pool profiles")
    p.add_argument(
        "--slo", required=True, action="append", type=Path, metavar="FILE", help="SLO specs"
    )
    p.add_argument(
        "--catalog", type=Path, metavar="FILE", help="price catalog for prices not in profiles"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--history", type=Path, metavar="FILE", help="OpenMetrics history")
    src.add_argument("--prometheus", metavar="URL", help="read the history from Prometheus")
    p.add_argument(
        "--days", type=float, default=7.0, help="with --prometheus: days back (default 7)"
    )
    p.add_argument("--step", default="1m", metavar="DURATION", help="replay step (default 1m)")
    p.add_argument("--seed", type=int, default=7, help="spot reclaim draws (default 7)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpuslo.cost_model.catalog import load_catalog
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.foundation.output import prepare_output_dir
    from gpuslo.simulator import plan as planner
    from gpuslo.simulator.plan_report import write_report
    from gpuslo.simulator.scenario import load_scenario, resolve_scenario
    from gpuslo.slo_engine.specs import load_specs

    try:
        step = parse_duration(args.step)
    except ValueError as err:
        raise UsageError(f"--step: {err}") from None
    if step <= 0:
        raise UsageError("--step: must be above 0")
    if args.days <= 0:
        raise UsageError("--days: must be above 0")
    twin = load_scenario(resolve_scenario(args.twin))
    catalog: dict[str, dict[str, float]] | None = None
    if args.catalog:
        gpus = load_catalog(args.catalog).gpus
        catalog = {g: {str(k): float(x) for k, x in v.items()} for g, v in gpus.items()}
    profiles = planner.load_profiles(args.pools, catalog)
    specs, _ = load_specs(args.slo)
    slos = planner.slo_targets_from(specs)
    if not slos:
        raise UsageError("--slo: no latency or availability SLO with a model selector")
    pools = {p.name for p in twin.pools}
    unknown = [p.name for p in profiles.pools if p.name not in pools]
    if unknown:
        raise UsageError(f"--pools: the twin {args.twin} has no pool {', '.join(unknown)}")
    if args.history is not None:
        traffic = planner.traffic_from_openmetrics(args.history)
    elif args.prometheus:
        end = time.time() // 60 * 60
        traffic = planner.traffic_from_prometheus(
            args.prometheus, end - args.days * 86400, end, max(step, 60.0)
        )
    else:
        traffic = planner.traffic_from_twin(twin, step)
    prepare_output_dir(args.output)

    def progress(name: str) -> None:
        print(f"replaying {name} ...", file=sys.stderr, flush=True)

    result = planner.plan_and_prove(
        traffic, profiles, slos, twin, step=step, seed=args.seed, progress=progress
    )
    files = write_report(result, args.output, twin)
    body = result.to_json()
    if args.format == "json":
        print(json.dumps({"verdict": body["verdict"], "measured": body["measured"]}, indent=1))
        return 0
    for plan in result.plans:
        print(
            f"{plan.pool}: {min(plan.schedule)}-{max(plan.schedule)} replicas by hour of week, "
            f"{plan.warm} warm at most, spot {100 * plan.spot_share:.0f}%, static "
            f"{plan.static_replicas}"
        )
    for r in result.replays:
        print(
            f"  {r.policy:9} cost {r.cost:10.2f} {result.currency}  SLOs met "
            f"{sum(r.met.values())}/{len(r.met)}  pages {sum(r.pages.values())}"
        )
    v = body["verdict"]
    print(
        f"plan vs static: {100 * v['saving_vs_static']:.1f}% cheaper; every SLO met: "
        f"{v['plan_meets_every_slo']}; pages plan {v['plan_pages']} / reactive "
        f"{v['reactive_pages']} -> {files['html']}, {files['json']}"
    )
    print(
        f"each policy's actions as a twin scenario: {args.output}/scenario-<policy>.yaml "
        "(gpuslo twin offline FILE -o DIR for the agents' history)"
    )
    return 0
