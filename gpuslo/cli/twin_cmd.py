"""``gpuslo twin``: the fleet digital twin (validate a scenario, write offline history, or run
it live with its agents and pool API)."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError

EPILOG = """\
examples:
  gpuslo twin scenarios                  # the shipped scenarios, usable by name
  gpuslo twin validate gpu-lost my-fleet.yaml
  gpuslo twin offline gpu-lost -o /tmp/history
  promtool tsdb create-blocks-from openmetrics /tmp/history/history.om data/
  gpuslo twin serve traffic-spike --listen 127.0.0.1:9850 --speed 10
"""


_SCENARIO_HELP = "a scenario file, or the name of a shipped one (gpuslo twin scenarios)"


def _add_naming(p: Any) -> None:
    from gpuslo.foundation import conventions as c

    p.add_argument(
        "--dcgm-names",
        choices=c.DCGM_GENERATIONS,
        default=c.DEFAULT_DCGM_GENERATION,
        help="the dcgm-exporter generation the agents spell GPU series in: legacy (host label "
        "Hostname) or current (DCGM 4 names and units, host label hostname); read it back with "
        "the same --dcgm-names on gpuslo explain/backtest (default: %(default)s)",
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "twin",
        help="the fleet digital twin: scenarios, offline history, live mode",
        description="Simulate a GPU inference fleet from a scenario: nodes and GPUs, serving "
        "pools, tenants' traffic, faults on a timeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="twin_command", metavar="SUBCOMMAND", required=True)
    ls = tsub.add_parser("scenarios", help="list the scenarios shipped with gpuslo")
    ls.set_defaults(func=scenarios)
    v = tsub.add_parser("validate", help="check scenario files; print every problem")
    v.add_argument("files", nargs="+", metavar="SCENARIO", help=_SCENARIO_HELP)
    v.set_defaults(func=validate)
    o = tsub.add_parser("offline", help="simulate a whole scenario and write OpenMetrics history")
    o.add_argument("scenario", metavar="SCENARIO", help=_SCENARIO_HELP)
    o.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    o.add_argument(
        "--start",
        type=float,
        metavar="UNIX_SECONDS",
        help="timestamp of the scenario's start (default: so that it ends now)",
    )
    o.add_argument("--step", metavar="DURATION", help="override the scenario's step (e.g. 1m)")
    o.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also write samples.parquet: N requests a step (model, tenant, prompt and output "
        "tokens) for drift jobs (default: none)",
    )
    _add_naming(o)
    o.set_defaults(func=offline)
    s = tsub.add_parser("serve", help="run the scenario live: agents, request metrics, pool API")
    s.add_argument("scenario", metavar="SCENARIO", help=_SCENARIO_HELP)
    s.add_argument("--listen", default="127.0.0.1:9850", metavar="HOST:PORT")
    s.add_argument("--speed", type=float, default=1.0, help="model seconds per real second")
    _add_naming(s)
    s.set_defaults(func=serve)


def scenarios(args: argparse.Namespace) -> int:
    from gpuslo.simulator.scenario import shipped_scenarios

    for name in shipped_scenarios():
        print(name)
    return 0


def validate(args: argparse.Namespace) -> int:
    from gpuslo.foundation.errors import SpecError
    from gpuslo.simulator.scenario import load_scenario, resolve_scenario

    problems = []
    for path in args.files:  # every file's problems, not just the first file's
        try:
            load_scenario(resolve_scenario(path))
        except SpecError as err:
            problems += err.problems
    if problems:
        raise SpecError(problems)
    print(f"{len(args.files)} scenario(s) valid")
    return 0


def offline(args: argparse.Namespace) -> int:
    from gpuslo.foundation.durations import parse_duration
    from gpuslo.foundation.output import prepare_output_dir
    from gpuslo.simulator.offline import run_offline
    from gpuslo.simulator.scenario import load_scenario, resolve_scenario

    scenario = load_scenario(resolve_scenario(args.scenario))
    step = None
    if args.step:
        try:
            step = parse_duration(args.step)
        except ValueError as err:
            raise UsageError(f"--step: {err}") from None
    duration = parse_duration(scenario.duration)
    start = args.start if args.start is not None else time.time() // 60 * 60 - duration
    t0 = time.monotonic()
    if args.samples < 0:
        raise UsageError("--samples: must be >= 0")
    prepare_output_dir(args.output)
    from gpuslo.foundation import conventions as c

    result = run_offline(
        scenario,
        args.output,
        start,
        step,
        samples_per_step=args.samples,
        naming=c.gpu_naming(args.dcgm_names),
    )
    print(
        f"{result['steps']:.0f} steps, {result['series']:.0f} series, {result['samples']:.0f} "
        f"samples in {time.monotonic() - t0:.1f}s -> {args.output / 'history.om'}, "
        f"{args.output / 'incidents.json'}"
    )
    return 0


def serve(args: argparse.Namespace) -> int:
    from gpuslo.simulator.live import LiveTwin
    from gpuslo.simulator.scenario import load_scenario, resolve_scenario

    scenario = load_scenario(resolve_scenario(args.scenario))
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
    if args.speed <= 0:
        raise UsageError("--speed must be above 0")
    try:
        from gpuslo.foundation import conventions as c

        naming = c.gpu_naming(args.dcgm_names)
        twin = LiveTwin(scenario, host, int(port), speed=args.speed, naming=naming).start()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.listen}: {err.strerror}") from None
    print(f"gpuslo twin: pool API and request metrics on http://{host}:{twin.port}", flush=True)
    for target in twin.agent_targets:
        print(f"gpuslo twin: agent on http://{target}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        twin.stop()
    return 0
