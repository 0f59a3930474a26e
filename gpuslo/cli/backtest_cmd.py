"""``gpuslo backtest``: what would these SLO alerts have done over this history?"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError

DESCRIPTION = """\
Replay history through the alert policy of each SLO: every alert episode with its start, end
and the share of the budget spent when it fired; with --incidents (the digital twin writes
incidents.json) precision, recall, mean detection and reset time per tier; with --compare,
alternative policies side by side on the same data. The numbers are exactly what the
generated Prometheus rules would have recorded and fired (slo_engine/evaluator.py).
"""

EPILOG = """\
history (one of):
  --prometheus URL        range queries of each SLO's own SLI expressions
  --data FILE...          OpenMetrics (.om, .txt: loaded into a throwaway local Prometheus)
                          or base rates as CSV/Parquet (timestamp, slo, errors, requests)

times: Unix seconds, ISO 8601 (2026-11-01T00:00:00Z), "now" or "now-30d".

--compare NAME:key=value[,key=value...], keys:
  objective=99.95         another target (percent)
  min_events=100          another minimum-events guard (0 turns it off)
  windows=FILE            another tiers file (windows, budget fractions)
  tiers=page-fast+page-slow   only these tiers
  factor=0.5              scale every tier's budget fraction (its burn-rate threshold)

examples:
  gpuslo backtest slos/chat.yaml --prometheus http://prometheus:9090 --from now-30d --to now
  gpuslo twin run scenario.yaml -o out/ && gpuslo backtest slos.yaml --data out/history.om \\
      --incidents out/incidents.json --step 15s --compare 'strict:objective=99.95' -o report/
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay history through SLO alert policies; score them against incidents",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help="SLO spec files")
    p.add_argument("--from", dest="start", metavar="TIME", help="default: the data's start")
    p.add_argument("--to", dest="end", metavar="TIME", help="default: the data's end / now")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL")
    source.add_argument("--data", nargs="+", type=Path, metavar="FILE")
    p.add_argument(
        "--step",
        default="1m",
        metavar="DURATION",
        help="rule evaluation interval to replay at (default: %(default)s)",
    )
    p.add_argument("--incidents", type=Path, metavar="FILE", help="ground truth (incidents.json)")
    p.add_argument(
        "--rules",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="with OpenMetrics --data: recording rules the SLIs read (e.g. from gpuslo cost "
        "rules), evaluated over the history at --step before the backtest",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME:k=v,...",
        help="an alternative policy to evaluate alongside (repeatable; see below)",
    )
    p.add_argument(
        "--slo", action="append", default=[], metavar="NAME", help="only these SLOs (repeatable)"
    )
    p.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rank the probable causes of every page episode (gpuslo explain) into the report "
        "(default: on with --prometheus or OpenMetrics --data, which hold the signals)",
    )
    p.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="write report.html and report.json here"
    )
    add_correlation_arguments(p)
    p.set_defaults(func=run)


def add_correlation_arguments(p: Any) -> None:
    """The flags that tell the correlator how the cluster names things (explain, backtest)."""
    from gpuslo.foundation import conventions as c

    p.add_argument(
        "--dcgm-names",
        choices=c.DCGM_GENERATIONS,
        default=c.DEFAULT_DCGM_GENERATION,
        help="how dcgm-exporter spells the GPU series: legacy (up to 4.8.x: DCGM 3 names, "
        "host label Hostname) or current (4.9.0 and later: DCGM 4 names and units, host label "
        "hostname) (default: %(default)s)",
    )
    p.add_argument(
        "--pool-by",
        default="owner",
        metavar="owner|label[:NAME]",
        help="how a pod's pool is found in kube-state-metrics: owner (the Deployment owning "
        "its ReplicaSet, else its StatefulSet or other controller) or label:NAME (a pod label "
        "exported through --metric-labels-allowlist, e.g. "
        "label:leaderworkerset.sigs.k8s.io/name; label alone means label:pool) "
        "(default: %(default)s)",
    )


def correlation_config(args: argparse.Namespace) -> Any:
    """The correlator's ``Config`` from ``--dcgm-names`` and ``--pool-by``."""
    from gpuslo.foundation import conventions as c
    from gpuslo.slo_engine.correlate import Config, pool_identity

    try:
        pools = pool_identity(args.pool_by)
    except ValueError as err:
        raise UsageError(f"--pool-by: {err}") from None
    return Config(naming=c.gpu_naming(args.dcgm_names), pools=pools)


def parse_time(text: str, now: float) -> float:
    """Unix seconds, ISO 8601, ``now`` or ``now-DURATION``."""
    from gpuslo.foundation.durations import parse_duration

    text = text.strip()
    m = re.fullmatch(r"now(?:\s*-\s*(\S+))?", text)
    if m:
        return now - (parse_duration(m.group(1)) if m.group(1) else 0.0)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (Unix seconds, ISO 8601, now, now-30d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.tty = max(1, total), 0, sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self.last > 0.2 or self.done >= self.total):
            self.last = now
            share = min(1.0, self.done / self.total)
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\r  fetching history [{bar:<30}] {share:4.0%}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.foundation.errors import SpecError
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.slo_engine import load_specs, load_tiers
    from gpuslo.slo_engine.backtest import BacktestError, load_incidents, parse_policy, to_json
    from gpuslo.slo_engine.backtest import run as backtest

    try:
        step = parse_duration(args.step)
    except ValueError as err:
        raise UsageError(f"--step: {err}") from None
    config = correlation_config(args)
    slos, _ = load_specs(args.specs)
    if args.slo:
        unknown = set(args.slo) - {s.name for s in slos}
        if unknown:
            raise UsageError(f"--slo: no SLO named {', '.join(sorted(unknown))} in the specs")
        slos = [s for s in slos if s.name in args.slo]
    now = time.time()
    try:
        start = parse_time(args.start, now) if args.start else None
        end = parse_time(args.end, now) if args.end else None
    except ValueError as err:
        raise UsageError(f"--from/--to: {err}") from None
    if start is not None and end is not None and end <= start:
        raise UsageError("--to must be after --from")
    try:
        policies = [parse_policy(text, load_tiers) for text in args.compare]
        incidents = load_incidents(args.incidents) if args.incidents else []
        results = []
        for slo, data, lo, hi, url in _histories(args, slos, start, end, step, now):
            found = backtest(slo, data, lo, hi, incidents, policies)
            if args.explain and url is None:
                raise BacktestError("--explain needs --prometheus or OpenMetrics --data")
            if url is not None and args.explain is not False:
                _explain_pages(found[0], url, step, config)
            results += found
    except (BacktestError, HistoryError) as err:
        raise UsageError(str(err)) from None
    except SpecError as err:  # a --compare windows file
        raise UsageError(str(err.problems[0])) from None
    _print_table(results, bool(incidents))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        report = to_json(results, incidents)
        (args.output / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        _write_html(args.output, results, incidents)
        print(f"report: {args.output / 'report.html'} and report.json", file=sys.stderr)
    return 0


def _histories(
    args: argparse.Namespace,
    slos: list[Any],
    start: float | None,
    end: float | None,
    step: float,
    now: float,
) -> Any:
    """(slo, base rates, from, to) per SLO. The data starts one SLO period before ``from`` so
    every window is full when the backtest starts."""
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.slo_engine.history import sli_from_prometheus, sli_from_table

    if args.data:
        tables = [p for p in args.data if p.suffix in (".csv", ".parquet")]
        metrics = [p for p in args.data if p not in tables]
        for p in tables:  # OpenMetrics files are checked where they are loaded
            if not p.is_file():
                raise HistoryError(f"{p}: no such file")
        if tables and metrics:
            raise HistoryError("--data: give OpenMetrics files or base-rate tables, not both")
        if tables:
            found = sli_from_table(tables, step)
            for slo in slos:
                if slo.name not in found:
                    raise HistoryError(f"--data: no rows for SLO {slo.name}")
                data = found[slo.name]
                ts = data.timestamps
                yield slo, data, start or float(ts[0]), end or float(ts[-1]), None
            return
        yield from _from_openmetrics(metrics, slos, start, end, step, args.rules, args.step)
        return
    if args.rules:
        raise HistoryError("--rules works with OpenMetrics --data (a live Prometheus runs its own)")
    hi = end if end is not None else now
    for slo in slos:
        lo = start if start is not None else hi - slo.period
        progress = _Progress(2 * math.ceil((hi - lo + slo.period) / step))
        data = sli_from_prometheus(args.prometheus, slo, lo - slo.period, hi, step, progress)
        progress.close()
        yield slo, data, lo, hi, args.prometheus


def _from_openmetrics(
    paths: list[Path],
    slos: list[Any],
    start: float | None,
    end: float | None,
    step: float,
    rule_files: Sequence[Path] = (),
    interval: str = "1m",
) -> Any:
    from gpuslo.foundation.prometheus import openmetrics_prometheus
    from gpuslo.slo_engine.history import sli_from_prometheus

    rules = _recording_rules(rule_files) if rule_files else None
    with openmetrics_prometheus(paths, rules, interval) as (url, first, last):
        for slo in slos:
            lo = start if start is not None else first
            hi = end if end is not None else last
            aligned = lo - math.floor(slo.period / step) * step
            data = sli_from_prometheus(url, slo, max(first, aligned), hi, step)
            yield slo, data, lo, hi, url


def _recording_rules(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The recording rules of rule files (alerting rules are left out: promtool backfills
    recordings only)."""
    import yaml

    from gpuslo.foundation.prometheus import HistoryError

    groups = []
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise HistoryError(f"--rules {path}: {err}") from None
        for g in (doc or {}).get("groups", []) if isinstance(doc, dict) else []:
            rules = [r for r in g.get("rules", []) if "record" in r]
            if rules:
                groups.append({"name": g["name"], "rules": rules})
    if not groups:
        raise HistoryError(f"--rules: no recording rules in {', '.join(map(str, paths))}")
    return groups


def _explain_pages(result: Any, url: str, step: float, config: Any = None) -> None:
    """The ranked causes of each page episode, into the result (for the report)."""
    from gpuslo.slo_engine.correlate import explain

    for episode in result.evaluation.episodes:
        if episode.severity != "page":
            continue
        found = explain(url, result.slo, episode.start, step, config=config)
        result.causes[episode.start] = [c.as_dict(found.onset) for c in found.causes[:3]]


def _fmt(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def _print_table(results: list[Any], scored: bool) -> None:
    header = f"{'SLO':<24} {'policy':<14} {'tier':<12} {'episodes':>8}"
    if scored:
        header += f" {'precision':>9} {'recall':>6} {'detect':>7} {'reset':>7}"
    print(header)
    for r in results:
        for s in r.scores:
            line = f"{r.slo.name:<24} {r.policy:<14} {s.tier:<12} {s.episodes:>8}"
            if scored:
                line += (
                    f" {_pct(s.precision):>9} {_pct(s.recall):>6}"
                    f" {_fmt(s.mean_detection):>7} {_fmt(s.mean_reset):>7}"
                )
            print(line)


SCORE_COLUMNS = ("tier", "episodes", "precision", "recall", "mean detection", "mean reset")
EPISODE_COLUMNS = (
    "tier",
    "start (UTC)",
    "duration",
    "budget spent when fired",
    "peak burn",
    "probable cause",
)


def _write_html(out: Path, results: list[Any], incidents: list[Any]) -> None:
    from gpuslo.foundation.durations import format_duration
    from gpuslo.foundation.report import Page, Section, subplots

    page = Page("gpuslo backtest")
    section: Section = page
    for n, r in enumerate(results):
        ev = r.evaluation
        if r.policy == "as-specified":
            section = page.section(f"{r.slo.name} ({r.slo.service})")
            mask = (ev.timestamps >= r.start) & (ev.timestamps <= r.end)
            when = [datetime.fromtimestamp(t, UTC) for t in ev.timestamps[mask]]
            fig, (a, b) = subplots(2, 1, figsize=(10, 5.5), sharex=True)
            a.plot(when, ev.budget_remaining[mask], color="tab:blue")
            a.axhline(0, color="black", lw=0.5)
            a.set_ylabel("budget remaining")
            for tier in r.tiers:
                w = format_duration(tier.long_window)
                line = b.plot(when, ev.burn_rate[w][mask], lw=0.8, label=f"burn {w}")
                b.axhline(tier.factor(r.slo.period), ls="--", lw=0.6, color=line[0].get_color())
            b.set_yscale("symlog")
            b.set_ylabel("burn rate")
            b.legend(fontsize=7, loc="upper left")
            for e in ev.episodes:
                color = "tab:red" if e.severity == "page" else "tab:orange"
                for ax in (a, b):
                    ax.axvspan(
                        datetime.fromtimestamp(e.start, UTC),
                        datetime.fromtimestamp(e.end, UTC),
                        color=color,
                        alpha=0.15,
                    )
            for i in incidents:
                if i.applies_to(r.slo):
                    a.axvspan(
                        datetime.fromtimestamp(i.start, UTC),
                        datetime.fromtimestamp(i.end, UTC),
                        color="grey",
                        alpha=0.2,
                    )
            fig.tight_layout()
            alt = f"budget and burn rates of {r.slo.name}"
            section.chart(fig, alt, file=f"slo-{n}.png", dpi=90)
            section.paragraph("Red: pages, orange: tickets, grey: incidents.")
        policy = section.section(
            f"policy: {r.policy} (objective {r.slo.objective * 100:g}%, "
            f"min events {r.slo.min_events})"
        )
        scores = [
            [s.tier, s.episodes, s.precision, s.recall, _fmt(s.mean_detection), _fmt(s.mean_reset)]
            for s in r.scores
        ]
        policy.table(scores, SCORE_COLUMNS, formats={"precision": ".0%", "recall": ".0%"})
        episodes = []
        for e in ev.episodes:
            start = f"{datetime.fromtimestamp(e.start, UTC):%Y-%m-%d %H:%M}"
            causes = r.causes.get(e.start) or []
            cause = causes[0]["summary"] if causes else ""
            episodes.append(
                [e.tier, start, _fmt(e.duration), e.budget_consumed, e.peak_burn, cause]
            )
        formats = {"budget spent when fired": ".1%", "peak burn": ".1f"}
        policy.table(episodes, EPISODE_COLUMNS, formats=formats)
    page.write(out / "report.html")


EXPLAIN_EPILOG = """\
examples:
  gpuslo explain slos/chat.yaml --slo chat-ttft --at 2026-11-20T14:05:00Z \\
      --prometheus http://prometheus:9090
  gpuslo explain slos.yaml --slo chat-ttft --at now-10m --prometheus http://127.0.0.1:9090 --json

The SLO must select one model (selector: {model: ...}): its blast radius is the pods serving
that model (the canonical request series carry model, namespace and pod), their pools (from
kube-state-metrics, see --pool-by), their GPUs (gpuslo_gpu_pod_info) and nodes. Replica
readiness is kube_pod_status_ready summed per pool.
"""


def add_explain_parser(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="rank the probable causes of an SLO burning at a given time",
        description="For the burn episode of an SLO at a time: find when the symptom began, "
        "gather GPU, fabric, replica and traffic signals in the SLO's blast radius, and rank "
        "what changed before it by timing, effect size and significance.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help="SLO spec files")
    p.add_argument("--slo", required=True, metavar="NAME", help="the burning SLO")
    p.add_argument("--at", required=True, metavar="TIME", help="a time in the burn episode")
    p.add_argument("--prometheus", required=True, metavar="URL")
    p.add_argument("--step", default="1m", metavar="DURATION", help="default: %(default)s")
    p.add_argument("--top", type=int, default=5, metavar="N", help="causes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_correlation_arguments(p)
    p.set_defaults(func=explain_run)


def explain_run(args: argparse.Namespace) -> int:
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.slo_engine import load_specs
    from gpuslo.slo_engine.correlate import explain

    try:
        step = parse_duration(args.step)
        at = parse_time(args.at, time.time())
    except ValueError as err:
        raise UsageError(str(err)) from None
    config = correlation_config(args)
    slos, _ = load_specs(args.specs)
    slo = next((s for s in slos if s.name == args.slo), None)
    if slo is None:
        raise UsageError(f"--slo: no SLO named {args.slo} in the specs")
    try:
        result = explain(args.prometheus, slo, at, step, config=config)
    except HistoryError as err:
        raise UsageError(str(err)) from None
    if args.json:
        print(json.dumps(result.as_dict(args.top), indent=1))
        return 0
    when = datetime.fromtimestamp(result.onset, UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"{slo.name}: symptom began {when} UTC; {result.candidates} signals over "
        f"{len(result.radius.pods)} pods in {len(result.radius.pools)} pools, "
        f"{len(result.radius.uuids)} GPUs, "
        f"{len(result.radius.nodes)} nodes"
    )
    if not result.causes:
        print("  no signal in the blast radius changed with the symptom")
    for n, cause in enumerate(result.causes[: args.top], 1):
        print(f"  {n}. [{cause.score:.2f}] {cause.sentence(result.onset)}")
    return 0
