"""``gpuslo dashboards``: Grafana dashboards generated from the SLO specs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError
from gpuslo.cli.dcgm_names import add_dcgm_names, naming_from

EPILOG = """\
examples:
  gpuslo dashboards generate slos/*.yaml -o grafana/dashboards/
  gpuslo dashboards generate slos/*.yaml --dcgm-names current -o grafana/dashboards/
                                  for dcgm-exporter 4.9.0+ (DCGM-4 names, hostname label)
  gpuslo dashboards check slos/*.yaml --prometheus http://prometheus:9090 --model llama-3-70b
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dashboards",
        help="Grafana dashboards generated from the SLO specs",
        description="Grafana dashboards as code: SLO overview, one drill-down per SLO, GPU "
        "fleet, fabric, requests and cost, generated from the SLO specs and the naming "
        "contract.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d_sub = p.add_subparsers(dest="dashboards_command", metavar="SUBCOMMAND", required=True)
    g = d_sub.add_parser("generate", help="write dashboard JSON and a provisioning file")
    g.add_argument("specs", nargs="+", metavar="SPEC")
    g.add_argument("-o", "--output", required=True, type=Path, metavar="DIR")
    add_dcgm_names(g)
    g.set_defaults(func=generate)
    c = d_sub.add_parser(
        "check",
        help="run every panel query against a Prometheus; list the ones with no data",
        description="Run every panel's query (template variables substituted) against a "
        "Prometheus over a time range and list each query that returns no data: a panel "
        "that references a missing series. Exit 1 when there is any.",
    )
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("--prometheus", required=True, metavar="URL")
    c.add_argument("--model", default=".*", help="value for $model (default: all)")
    c.add_argument("--from", dest="start", default="now-6h", metavar="TIME")
    c.add_argument("--to", dest="end", default="now", metavar="TIME")
    add_dcgm_names(c)
    c.set_defaults(func=check)


def generate(args: argparse.Namespace) -> int:
    from gpuslo.dashboards.generate import write
    from gpuslo.foundation.output import prepare_output_dir
    from gpuslo.slo_engine import load_specs

    slos, _ = load_specs(args.specs)
    for path in write(prepare_output_dir(args.output), slos, naming=naming_from(args)):
        print(path)
    return 0


def check(args: argparse.Namespace) -> int:
    from gpuslo.cli.backtest_cmd import parse_time
    from gpuslo.dashboards.generate import all_dashboards
    from gpuslo.dashboards.generate import check as run_check
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.slo_engine import load_specs

    slos, _ = load_specs(args.specs)
    now = time.time()
    try:
        start, end = parse_time(args.start, now), parse_time(args.end, now)
    except ValueError as err:
        raise UsageError(str(err)) from None
    values = {
        "model": args.model,
        "tenant": ".*",
        "node": ".*",
        "cluster": ".*",
        "__rate_interval": "5m",
        "__interval": "1m",
    }
    try:
        missing = run_check(
            args.prometheus, all_dashboards(slos, naming_from(args)), values, start, end
        )
    except HistoryError as err:
        raise UsageError(str(err)) from None
    # A firing-tier panel is empty while nothing burns: that is not a broken panel.
    quiet = [m for m in missing if m[1] == "Firing tiers"]
    broken = [m for m in missing if m[1] != "Firing tiers"]
    for name, title, expr in broken:
        print(f"{name}: {title}: no data: {expr}", file=sys.stderr)
    print(
        f"{len(broken)} panel queries without data"
        + (
            f" ({len(quiet)} firing-tier queries empty: nothing burned in the range)"
            if quiet
            else ""
        )
    )
    return 1 if broken else 0
