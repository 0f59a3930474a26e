"""``gpuslo demo``: the whole loop on loopback, in a few minutes, with a report."""

from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the twin -> Prometheus -> Alertmanager -> remediation loop end to end",
        description="Start the fleet twin with its agents, a real Prometheus with generated SLO "
        "rules, a real Alertmanager and the remediation hook, all on loopback; run a scenario "
        "where a traffic spike and a throttled GPU burn a TTFT SLO; show the budget burning, "
        "the page, the action and the recovery; write a report. About five minutes. Every "
        "process it starts is stopped at the end, also on Ctrl-C.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-report"),
        help="report directory: index.html and PNG charts (default: %(default)s)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep Prometheus, Alertmanager and journal files here (default: a temp dir)",
    )
    p.set_defaults(func=run)


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the demo's ExitStack: every process is stopped


def run(args: argparse.Namespace) -> int:
    from gpuslo.cli.demo import main_echo, run_demo
    from gpuslo.foundation.promlab import LabError

    signal.signal(signal.SIGTERM, _stop)

    try:
        if args.workdir is not None:
            result = run_demo(args.workdir, args.out, echo=main_echo)
        else:
            with tempfile.TemporaryDirectory(prefix="gpuslo-demo-") as tmp:
                result = run_demo(Path(tmp), args.out, echo=main_echo)
    except LabError as err:
        raise UsageError(str(err)) from None
    print()
    print(result.summary())
    print(f"report: {result.report}")
    return 0 if result.alert_at and result.action_at and result.recovered_at else 1
