"""``gpuslo slo``: validate SLO specs and generate Prometheus rules from them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

TARGETS = """\
targets:
  prometheus      rule files (rule_files: in prometheus.yml; promtool check rules)
  prometheusrule  prometheus-operator PrometheusRule objects (kubectl apply)
  mimir           Mimir/Cortex ruler namespaces, one per spec file (mimirtool rules load)
  thanos          Thanos Ruler files, partial_response_strategy: abort on every group
  vmalert         vmalert files: no rule reads what its own group records in the same
                  evaluation (vmalert persists recordings asynchronously)

After writing, the totals are printed: rules, groups and the largest group, and for mimir the
tenant limits to raise (ruler_max_rule_groups_per_tenant, ruler_max_rules_per_rule_group).
"""

EPILOG = """\
examples:
  gpuslo slo validate slos/*.yaml
  gpuslo slo generate slos/*.yaml -o rules/
  gpuslo slo generate slos/chat.yaml -o k8s/ --target prometheusrule
  gpuslo slo generate slos/*.yaml -o mimir/ --target mimir
  mimirtool rules load mimir/*.mimir.yaml
  gpuslo slo generate slos/*.yaml -o vm/ --target vmalert --interval 30s
"""


def add_parser(sub: Any) -> None:
    """Register ``slo`` and its subcommands."""
    p = sub.add_parser(
        "slo",
        help="validate SLO specs and generate Prometheus rules",
        description="Turn SLO specs (native gpuslo/v1, OpenSLO v1 and v2alpha, Sloth) into "
        "Prometheus recording rules and multi-window multi-burn-rate alerts. validate judges "
        "each document by its own spec; what is valid but cannot become rules is a warning "
        "there, and an error for generate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    slo_sub = p.add_subparsers(dest="slo_command", metavar="SUBCOMMAND", required=True)
    v = slo_sub.add_parser("validate", help="check specs; print every problem as file:line:col")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument(
        "--sloth-windows",
        metavar="FILE",
        help="a Sloth AlertWindows file (sloth.slok.dev/v1 kind: AlertWindows, or "
        "alertWindows/v1): the SLO period and burn-rate windows for Sloth specs "
        "(default: Sloth's google-30d)",
    )
    v.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings as errors: lint warnings, and what is valid in its spec but "
        "cannot become Prometheus rules (e.g. an OpenSLO Datadog source)",
    )
    v.add_argument(
        "--prometheus",
        metavar="URL",
        help="also lint against live data: latency thresholds must be bucket "
        "boundaries, and traffic must fill the shortest alert window",
    )
    v.add_argument(
        "--min-events",
        type=int,
        default=10,
        metavar="N",
        help="with --prometheus: warn below N events per short window (default: %(default)s)",
    )
    v.set_defaults(func=validate)
    g = slo_sub.add_parser(
        "generate",
        help="write rule files for the specs",
        epilog=TARGETS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("files", nargs="+", metavar="FILE")
    g.add_argument(
        "--sloth-windows",
        metavar="FILE",
        help="a Sloth AlertWindows file (sloth.slok.dev/v1 kind: AlertWindows, or "
        "alertWindows/v1): the SLO period and burn-rate windows for Sloth specs "
        "(default: Sloth's google-30d)",
    )
    g.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory for the generated files (created if missing)",
    )
    g.add_argument(
        "--target",
        choices=("prometheus", "prometheusrule", "mimir", "thanos", "vmalert"),
        default=None,
        help="which ruler the files are for (default: prometheus; see targets below)",
    )
    g.add_argument(
        "--format",
        choices=("rules", "prometheusrule"),
        default=None,
        help="older spelling of --target: rules (= prometheus) or prometheusrule",
    )
    g.add_argument(
        "--interval",
        default="1m",
        metavar="DURATION",
        help="evaluation interval written on every group; must divide 1h, since the long "
        "windows sum one partial sum per clock hour (default: %(default)s)",
    )
    g.add_argument(
        "--max-rules-per-group",
        type=int,
        default=20,
        metavar="N",
        help="split each SLO's rules into groups of at most N; its alerts stay in one group "
        "with every recording they read (default: %(default)s, Mimir's "
        "ruler_max_rules_per_rule_group)",
    )
    g.add_argument(
        "--incident-url",
        default=None,
        metavar="URL",
        help="the remediation hook's external URL: every burn-rate alert then carries an "
        "incident_url annotation linking to its incident page, URL/incidents/open?slo=…"
        "&service=…&tier=… (docs/incidents.md; default: no link)",
    )
    g.set_defaults(func=generate)


def _windows(args: argparse.Namespace) -> Any:
    """The --sloth-windows file's windows, or None for Sloth's defaults."""
    from gpuslo.slo_engine.sloth import load_alert_windows

    return load_alert_windows(args.sloth_windows) if args.sloth_windows else None


def validate(args: argparse.Namespace) -> int:
    """Exit 0 when every spec is a valid document of its spec, 1 otherwise; what gpuslo cannot
    turn into rules is a warning (an error with ``--strict``, and always for ``generate``)."""
    from gpuslo.slo_engine import load_specs

    slos, warnings = load_specs(args.files, unsupported="warn", sloth_windows=_windows(args))
    if args.prometheus:
        from gpuslo.slo_engine.live_lint import PrometheusUnreachable, lint_live

        try:
            warnings = warnings + lint_live(slos, args.prometheus, args.min_events)
        except PrometheusUnreachable as err:
            print(f"gpuslo slo validate: error: {err}", file=sys.stderr)
            return 1
    for w in warnings:
        print(w, file=sys.stderr)
    if warnings and args.strict:
        return 1
    print(f"{len(slos)} SLO(s) valid in {len(args.files)} file(s)")
    return 0


def generate(args: argparse.Namespace) -> int:
    """Validate, then write the rules; nothing is written when any spec is invalid or holds
    what cannot become rules. Documents nothing needs are skipped with a warning."""
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.slo_engine import load_specs, write_outputs
    from gpuslo.slo_engine.output import rule_limits
    from gpuslo.slo_engine.rules import Layout, LayoutError
    from gpuslo.slo_engine.targets import target

    if args.target and args.format and target(args.format) != args.target:
        print("gpuslo slo generate: error: --format and --target disagree", file=sys.stderr)
        return 2
    tgt = target(args.target or args.format or "prometheus")
    try:
        layout = Layout(
            parse_duration(args.interval),
            args.max_rules_per_group,
            incident_url=args.incident_url,
        )
    except (ValueError, LayoutError) as err:
        print(
            f"gpuslo slo generate: error: --interval/--max-rules-per-group: {err}", file=sys.stderr
        )
        return 2
    slos, warnings = load_specs(args.files, sloth_windows=_windows(args))
    for w in warnings:
        print(w, file=sys.stderr)
    try:
        paths = write_outputs(slos, list(args.files), args.output, tgt, layout)
    except LayoutError as err:
        print(f"gpuslo slo generate: error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print(rule_limits(slos, list(args.files), tgt, layout).summary(tgt), file=sys.stderr)
    return 0
