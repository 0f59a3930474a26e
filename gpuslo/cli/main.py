"""The ``gpuslo`` command: one front door, a subcommand per capability."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpuslo import __version__
from gpuslo.cli import (
    agent_cmd,
    alerts_cmd,
    backtest_cmd,
    canary_cmd,
    cost_cmd,
    dashboards_cmd,
    demo_cmd,
    drift_cmd,
    examples_cmd,
    plan_cmd,
    remediate_cmd,
    slo_cmd,
    tenants_cmd,
    twin_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gpuslo",
        description="SLO and cost observability for GPU inference fleets.",
    )
    parser.add_argument("--version", action="version", version=f"gpuslo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    agent_cmd.add_parser(sub)
    slo_cmd.add_parser(sub)
    backtest_cmd.add_parser(sub)
    backtest_cmd.add_explain_parser(sub)
    cost_cmd.add_parser(sub)
    alerts_cmd.add_parser(sub)
    dashboards_cmd.add_parser(sub)
    drift_cmd.add_parser(sub)
    remediate_cmd.add_parser(sub)
    canary_cmd.add_parser(sub)
    tenants_cmd.add_parser(sub)
    plan_cmd.add_parser(sub)
    twin_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    examples_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user mistakes print one line and exit non-zero, never a traceback."""
    from gpuslo.collectors.backends import BackendUnavailable
    from gpuslo.foundation.errors import OutputError, SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except agent_cmd.UsageError as err:
        print(f"gpuslo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BackendUnavailable as err:
        print(f"gpuslo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except SpecError as err:  # a spec, policy or scenario file: every problem, with its place
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    except OutputError as err:  # an -o directory or file that cannot be written
        print(f"gpuslo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.filename is None:  # not about a file: a bug or the network, keep the traceback
            raise
        # a file-system failure in a write no command checked (disk full, permissions)
        print(
            f"gpuslo {args.command}: error: {err.filename}: {err.strerror or err}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
