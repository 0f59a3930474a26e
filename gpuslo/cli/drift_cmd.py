"""``gpuslo drift``: input/output drift of request features (Evidently)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError

EPILOG = """\
examples:
  gpuslo drift run --reference-file last-week.parquet --current-file today.parquet \\
      --push http://127.0.0.1:4318 -o drift-report/
  gpuslo drift run --data samples.parquet --reference 1795350000,1795353600 \\
      --current now-1h,now --model llama-3-70b --metrics-file /var/lib/node_exporter/drift.prom
  gpuslo drift rules -o rules/

Input: Parquet or CSV rows with numeric feature columns (prompt_tokens, output_tokens,
latency, any labelled feature); timestamp, model and tenant columns are not features.
`gpuslo twin offline --samples N` writes such a file.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "drift",
        help="input/output drift of request features (Evidently)",
        description="Compare a reference window of request features with the current one "
        "(Evidently's data-drift preset) and export per-feature drift scores and a drift "
        "flag as Prometheus series, with alert rules and an HTML report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d_sub = p.add_subparsers(dest="drift_command", metavar="SUBCOMMAND", required=True)
    r = d_sub.add_parser(
        "run",
        help="run one drift comparison",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--reference-file", nargs="+", type=Path, metavar="FILE")
    r.add_argument("--current-file", nargs="+", type=Path, metavar="FILE")
    r.add_argument(
        "--data",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="one input cut into windows by --reference and --current",
    )
    r.add_argument("--reference", metavar="FROM,TO", help="with --data: the reference window")
    r.add_argument("--current", metavar="FROM,TO", help="with --data: the current window")
    r.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="compare this model's rows only (repeatable; default: all rows together)",
    )
    r.add_argument("--features", metavar="A,B", help="columns to test (default: all numeric)")
    r.add_argument(
        "--drift-share",
        type=float,
        default=0.5,
        metavar="X",
        help="share of drifted features that flags the dataset (default 0.5)",
    )
    r.add_argument("--push", metavar="URL", help="the agent's OTLP/HTTP endpoint")
    r.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="also write the series as Prometheus text (textfile collector)",
    )
    r.add_argument("-o", "--output", type=Path, metavar="DIR", help="HTML and JSON reports")
    r.set_defaults(func=run)
    rules = d_sub.add_parser("rules", help="write the drift alert rules")
    rules.add_argument("-o", "--output", required=True, type=Path, metavar="DIR")
    rules.add_argument(
        "--for",
        dest="for_",
        default="30m",
        metavar="DURATION",
        help="how long drift must last before the ticket (default: 30m)",
    )
    rules.set_defaults(func=write_rules)


def _window(text: str, flag: str) -> tuple[float, float]:
    from gpuslo.cli.backtest_cmd import parse_time

    parts = text.split(",")
    if len(parts) != 2:
        raise UsageError(f"{flag}: expected FROM,TO, got {text!r}")
    now = time.time()
    try:
        lo, hi = parse_time(parts[0], now), parse_time(parts[1], now)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None
    if hi <= lo:
        raise UsageError(f"{flag}: TO must be after FROM")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from gpuslo.drift.job import DriftError, exposition, load_frame, push, split_windows
    from gpuslo.drift.job import run as compare
    from gpuslo.foundation.output import prepare_output_dir, write_text

    try:
        if args.data:
            if not (args.reference and args.current):
                raise UsageError("--data needs --reference FROM,TO and --current FROM,TO")
            frame = load_frame(args.data)
            ref, cur = split_windows(
                frame, _window(args.reference, "--reference"), _window(args.current, "--current")
            )
        elif args.reference_file and args.current_file:
            ref, cur = load_frame(args.reference_file), load_frame(args.current_file)
        else:
            raise UsageError("give --reference-file and --current-file, or --data with windows")
        features = [f.strip() for f in args.features.split(",")] if args.features else []
        if not 0 < args.drift_share <= 1:
            raise UsageError("--drift-share: between 0 and 1")
        results = [
            compare(ref, cur, model, features, args.drift_share) for model in (args.model or [""])
        ]
        if args.push:
            push(args.push, results)
    except DriftError as err:
        raise UsageError(str(err)) from None
    for r in results:
        drifted = [f.feature for f in r.features if f.drifted]
        print(
            f"{r.model or 'all models'}: {'DRIFT' if r.detected else 'no drift'} "
            f"({len(drifted)}/{len(r.features)} features: {', '.join(drifted) or 'none'}; "
            f"{r.reference_rows} reference rows, {r.current_rows} current)"
        )
        for f in r.features:
            print(
                f"  {f.feature:<24} {f.method:<28} {f.score:.4g} (threshold {f.threshold:g})"
                f"{'  drifted' if f.drifted else ''}"
            )
    if args.metrics_file:
        write_text(args.metrics_file, exposition(results))
    if args.output:
        prepare_output_dir(args.output)
        summary = []
        for r in results:
            name = f"drift-{r.model or 'all'}"
            r.snapshot.save_html(str(args.output / f"{name}.html"))
            summary.append(
                {
                    "model": r.model,
                    "detected": r.detected,
                    "share": r.share,
                    "features": [f.__dict__ for f in r.features],
                }
            )
        write_text(args.output / "gpuslo.drift.json", json.dumps(summary, indent=1) + "\n")
    return 0


def write_rules(args: argparse.Namespace) -> int:
    import yaml

    from gpuslo.drift.job import alert_rules
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.foundation.output import prepare_output_dir, write_text

    try:
        parse_duration(args.for_)
    except ValueError as err:
        raise UsageError(f"--for: {err}") from None
    path = prepare_output_dir(args.output) / "gpuslo-drift.rules.yaml"
    write_text(
        path,
        "# Generated by gpuslo drift rules; do not edit.\n"
        + yaml.safe_dump({"groups": alert_rules(args.for_)}, sort_keys=False),
    )
    print(path)
    return 0
