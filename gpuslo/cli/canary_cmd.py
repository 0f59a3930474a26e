"""``gpuslo canary``: cost-aware canary analysis, the canary controller, Argo Rollouts and
Flagger templates, and rollouts on the twin in model time."""

from __future__ import annotations

import argparse
import logging
import math
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gpuslo.cli.agent_cmd import UsageError

EPILOG = """\
examples:
  gpuslo canary validate canary.yaml
  gpuslo canary analyze canary.yaml --prometheus http://prometheus:9090 --window 30m
  gpuslo canary analyze canary.yaml --prometheus http://prometheus:9090 --format json -o out/
  gpuslo canary run canary.yaml --prometheus http://prometheus:9090 \\
      --journal /var/lib/gpuslo/journal.db --actuator kubernetes
  gpuslo canary templates canary.yaml --prometheus http://prometheus:9090 -o templates/
  gpuslo canary simulate canary-costlier canary.yaml --seed 3

A decision is promote (every check within tolerance, with the stated confidence), rollback
(a check past its tolerance, with the same confidence) or hold (too few requests, or not yet
conclusive). The statistics and their false-rollback rate: docs/canary.md.
"""

DECISION_EXIT = {"promote": 0, "hold": 3, "rollback": 4}


def add_parser(sub: Any) -> None:
    """Register ``canary`` on the top-level subparsers."""
    p = sub.add_parser(
        "canary",
        help="cost-aware canary analysis and rollouts (promote, hold or rollback)",
        description="Judge a canary model version against its baseline on latency "
        "distributions, error and rejection ratios, cost per 1M tokens and GPU-seconds per "
        "token, with a sequential test whose false-rollback rate is stated; step an "
        "HTTPRoute's weights on the result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="canary_command", metavar="SUBCOMMAND", required=True)
    v = csub.add_parser("validate", help="check a canary analysis spec; print every problem")
    v.add_argument("spec", metavar="SPEC")
    v.set_defaults(func=validate)

    a = csub.add_parser(
        "analyze",
        help="analyse a canary now: promote, hold or rollback, with the evidence",
        description="Compare the canary with its baseline over the last --window: each "
        "check's baseline and canary value, tolerance, verdict and PromQL. Text (default) or "
        "JSON on stdout; with -o, analysis.txt, analysis.json and analysis.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("spec", metavar="SPEC")
    a.add_argument("--prometheus", required=True, metavar="URL")
    a.add_argument("--window", metavar="DURATION", help="default: the spec's window")
    a.add_argument("--format", choices=("text", "json"), default="text")
    a.add_argument("-o", "--output", type=Path, metavar="DIR")
    a.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 0 on promote, 3 on hold, 4 on rollback (for CI pipelines)",
    )
    a.set_defaults(func=analyze)

    r = csub.add_parser(
        "run",
        help="the canary controller: step the route's weights, roll back on failure",
        description="Set the canary's weight to each of the spec's steps in turn after a "
        "passing analysis (every --interval), and to 0 on a failing one. Each change is "
        "written to the remediation journal before and after acting, once per step; a "
        "restarted controller carries on from the journal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("spec", metavar="SPEC")
    r.add_argument("--prometheus", required=True, metavar="URL")
    r.add_argument("--journal", default="gpuslo-canary.db", type=Path, metavar="PATH")
    r.add_argument("--actuator", choices=("log", "twin", "kubernetes"), default="log")
    r.add_argument("--twin", metavar="URL", help="the twin's pool API (--actuator twin)")
    r.add_argument("--rollout", metavar="ID", help="journal key of this rollout (default: name)")
    r.add_argument("--once", action="store_true", help="one analysis, then exit")
    r.set_defaults(func=run)

    t = csub.add_parser(
        "templates",
        help="write the checks as Argo Rollouts and Flagger templates",
        description="Write argo-analysistemplate.yaml (AnalysisTemplate), "
        "flagger-metrictemplates.yaml (MetricTemplate objects) and "
        "flagger-canary-analysis.yaml (the Canary's analysis.metrics that use them).",
    )
    t.add_argument("spec", metavar="SPEC")
    t.add_argument("--prometheus", required=True, metavar="URL", help="the providers' address")
    t.add_argument("--namespace", metavar="NS")
    t.add_argument("-o", "--output", required=True, type=Path, metavar="DIR")
    t.set_defaults(func=templates)

    s = csub.add_parser(
        "simulate",
        help="run the controller against the twin in model time (no Prometheus)",
        description="Run a twin scenario with a canary (simulator/scenarios/canary-*.yaml) "
        "in model time, the controller stepping its weights; the analysis reads the twin's "
        "counters instead of PromQL. Prints every step and the outcome.",
    )
    s.add_argument("scenario", metavar="SCENARIO")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--seed", type=int)
    s.add_argument("--gpu-hour", type=float, default=2.5, metavar="DOLLARS")
    s.set_defaults(func=simulate)


# ---------------------------------------------------------------------------- commands
def _spec(path: str) -> Any:
    from gpuslo.rollouts.spec import load_spec

    return load_spec(path)


def validate(args: argparse.Namespace) -> int:
    spec = _spec(args.spec)
    print(f"canary analysis {spec.name} valid: {spec.tests} tests, steps {spec.steps}")
    return 0


def _seconds(text: str) -> float:
    from gpuslo.foundation.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise UsageError(f"--window: {err}") from None


def analyze_now(spec: Any, url: str, window: float, end: float | None = None) -> Any:
    from gpuslo.rollouts.analysis import analyze as run_analysis
    from gpuslo.rollouts.prom import PrometheusSource, check_queries

    end = time.time() if end is None else end
    source = PrometheusSource(url)
    return run_analysis(
        spec,
        source.sample(spec, spec.baseline, window, end),
        source.sample(spec, spec.canary, window, end),
        queries=check_queries(spec, window),
        window={"start": end - window, "end": end, "seconds": window},
    )


def analyze(args: argparse.Namespace) -> int:
    from gpuslo.foundation.output import prepare_output_dir, write_text
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.rollouts import report

    spec = _spec(args.spec)
    window = _seconds(args.window or spec.window)
    try:
        result = analyze_now(spec, args.prometheus, window)
    except HistoryError as err:
        print(f"gpuslo canary: error: {err}", file=sys.stderr)
        return 1
    out = report.as_json(result) if args.format == "json" else report.text(result)
    sys.stdout.write(out)
    if args.output is not None:
        folder = prepare_output_dir(args.output)
        write_text(folder / "analysis.txt", report.text(result) + "\n" + report.promql_text(result))
        write_text(folder / "analysis.json", report.as_json(result))
        report.write_html(result, folder / "analysis.html")
    return DECISION_EXIT[result.decision] if args.exit_code else 0


def _actuator(args: argparse.Namespace) -> Any:
    from gpuslo.remediation.actuators import LogActuator, TwinActuator

    if args.actuator == "twin":
        if not args.twin:
            raise UsageError("--actuator twin needs --twin URL")
        return TwinActuator(args.twin)
    if args.actuator == "kubernetes":
        from gpuslo.remediation.kube import KubernetesActuator

        return KubernetesActuator.from_environment()
    return LogActuator()


def run(args: argparse.Namespace) -> int:
    from gpuslo.foundation.prometheus import HistoryError
    from gpuslo.remediation.actuators import ActuatorError
    from gpuslo.remediation.journal import Journal
    from gpuslo.rollouts.controller import CanaryController
    from gpuslo.rollouts.prom import PrometheusSource

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    spec = _spec(args.spec)
    if spec.route is None:
        raise UsageError(f"{args.spec}: the spec has no route: the controller steps its weights")
    source = PrometheusSource(args.prometheus)
    try:
        actuator = _actuator(args)
    except ActuatorError as err:
        print(f"gpuslo canary: error: {err}", file=sys.stderr)
        return 1
    try:
        journal = Journal(args.journal)
    except sqlite3.Error as err:
        print(f"gpuslo canary: error: journal {args.journal}: {err}", file=sys.stderr)
        return 1
    try:
        controller = CanaryController(
            spec,
            lambda side, window, end: source.sample(spec, side, window, end),
            actuator,
            journal,
            rollout=args.rollout,
        )
        while True:
            status = controller.tick()
            if status.result is not None:
                r = status.result
                print(f"{status.weight}%: {r.decision} ({r.reason})", flush=True)
            if status.action in ("stepped", "rolled back", "resumed"):
                print(f"{status.action}: canary at {status.weight}%", flush=True)
            if status.state != "progressing" or args.once:
                print(f"rollout {controller.rollout}: {status.state} at {status.weight}%")
                return 0 if status.state != "rolled_back" else 4
            time.sleep(spec.seconds("interval"))
    except (HistoryError, ActuatorError) as err:
        print(f"gpuslo canary: error: {err}", file=sys.stderr)
        return 1
    finally:
        journal.close()


def templates(args: argparse.Namespace) -> int:
    from gpuslo.foundation.output import prepare_output_dir, write_text
    from gpuslo.rollouts import templates as tpl

    spec = _spec(args.spec)
    folder = prepare_output_dir(args.output)
    argo = tpl.argo_analysis_template(spec, args.prometheus, args.namespace)
    flagger = tpl.flagger_metric_templates(spec, args.prometheus, args.namespace)
    canary = {"analysis": {"metrics": tpl.flagger_canary_metrics(spec, args.namespace)}}

    def dump(obj: Any) -> str:
        return yaml.safe_dump(obj, sort_keys=False, width=100)

    write_text(folder / "argo-analysistemplate.yaml", dump(argo))
    write_text(folder / "flagger-metrictemplates.yaml", "---\n".join(dump(obj) for obj in flagger))
    write_text(
        folder / "flagger-canary-analysis.yaml",
        "# spec.analysis.metrics of your Flagger Canary (merge into it)\n" + dump(canary),
    )
    print(f"wrote {1 + len(flagger)} objects to {folder}")
    return 0


# ---------------------------------------------------------------------------- the twin
class TwinRollout:
    """A twin scenario with a canary, the controller stepping its weights in model time, the
    analysis reading the twin's counters (what PromQL's ``increase`` would return) and the
    GPU-seconds its pods hold (what the cost rules' pod share would sum to)."""

    name = "twin-offline"

    def __init__(
        self,
        scenario: Any,
        spec: Any,
        journal_path: Path,
        gpu_hour: float = 2.5,
        epoch: float = 1.7e9,
    ) -> None:
        from gpuslo.remediation.journal import Journal
        from gpuslo.rollouts.controller import CanaryController
        from gpuslo.simulator.fleet import Fleet

        self.fleet = Fleet(scenario)
        self.spec = spec
        self.gpu_hour = gpu_hour
        self.epoch = epoch
        self.gpu_seconds: dict[str, float] = {}  # per (namespace/pod)
        self.snapshots: list[tuple[float, dict[str, Any]]] = []
        self.journal = Journal(journal_path, clock=self.now)
        self.controller = CanaryController(spec, self.sample, self, self.journal, clock=self.now)
        self.log: list[tuple[float, str, int, str]] = []  # (model s, action, weight, reason)
        self._snapshot()

    def now(self) -> float:
        return self.epoch + self.fleet.t

    # Actuator protocol (the route only)
    def replicas(self, workload: Any) -> int:
        raise NotImplementedError

    def scale(self, workload: Any, replicas: int) -> str:
        raise NotImplementedError

    def weights(self, route: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.fleet.versions.route(route.name)["weights"].items()}

    def set_weights(self, route: Any, weights: dict[str, int]) -> None:
        self.fleet.versions.set_route(route.name, weights)

    # counters
    def _snapshot(self) -> None:
        from gpuslo.rollouts.analysis import Sample

        sides: dict[str, Any] = {}
        for key, side in (("baseline", self.spec.baseline), ("canary", self.spec.canary)):
            s = Sample(histograms={})
            for (_, tenant), tot in self.fleet.totals.items():
                labels = {
                    "model": tot.model,
                    "tenant": tenant,
                    "namespace": tot.namespace,
                    "server": "twin",
                }
                if any(labels.get(k) != v for k, v in side.selector.items()):
                    continue
                for outcome, n in tot.outcomes.items():
                    s.outcomes[outcome] = s.outcomes.get(outcome, 0.0) + n
                s.tokens += tot.input_tokens + tot.output_tokens
                for name, hist in (("ttft", tot.ttft), ("tpot", tot.tpot), ("e2e", tot.e2e)):
                    prev = dict(s.histograms.get(name, []))
                    rows = [*zip(hist.buckets, hist.counts, strict=True), (math.inf, hist.total)]
                    s.histograms[name] = [(le, prev.get(le, 0.0) + n) for le, n in rows]
            seconds = sum(v for pod, v in self.gpu_seconds.items() if _pods_match(side.pods, pod))
            s.gpu_seconds = seconds
            s.dollars = seconds * self.gpu_hour / 3600
            sides[key] = s
        self.snapshots.append((self.now(), sides))

    def sample(self, side: Any, window: float, end: float) -> Any:
        key = "baseline" if side is self.spec.baseline else "canary"
        now = self.snapshots[-1][1][key]
        start = end - window
        before = self.snapshots[0][1][key]
        for t, sides in self.snapshots:
            if t <= start + 1e-6:
                before = sides[key]
            else:
                break
        return now.minus(before)

    def step(self, dt: float) -> None:
        self.fleet.step(dt)
        for name, state in self.fleet.pools.items():
            for i, replica in enumerate(state.replicas):
                pod = f"{state.spec.namespace}/{name}-{i}"
                self.gpu_seconds[pod] = self.gpu_seconds.get(pod, 0.0) + len(replica.gpus) * dt
        self._snapshot()

    def run(self, until: float | None = None) -> Any:
        """Step the twin; tick the controller every analysis interval. The final status."""
        from gpuslo.foundation.durations import parse_duration

        dt = parse_duration(self.fleet.scenario.step)
        end = until if until is not None else parse_duration(self.fleet.scenario.duration)
        interval = self.spec.seconds("interval")
        next_tick = 0.0
        status = None
        while self.fleet.t < end:
            if self.fleet.t + 1e-9 >= next_tick:
                status = self.controller.tick()
                if status.action in ("stepped", "rolled back"):
                    reason = status.entries[-1]["reason"] if status.entries else ""
                    self.log.append((self.fleet.t, status.action, status.weight, reason))
                if status.state != "progressing":
                    return status
                next_tick = self.fleet.t + interval
            self.step(dt)
        return status if status is not None else self.controller.status()


def _pods_match(pods: dict[str, str], ref: str) -> bool:
    namespace, pod = ref.split("/", 1)
    labels = {"namespace": namespace, "pod": pod}
    return all(re.fullmatch(rx, labels.get(k, "")) for k, rx in pods.items())


def simulate(args: argparse.Namespace) -> int:
    from gpuslo.simulator.scenario import load_scenario, resolve_scenario

    scenario = load_scenario(resolve_scenario(args.scenario))
    if not scenario.canaries:
        raise UsageError(f"{args.scenario}: the scenario has no canaries")
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    spec = _spec(args.spec)
    if spec.route is None:
        raise UsageError(f"{args.spec}: the spec has no route: the controller steps its weights")
    with tempfile.TemporaryDirectory(prefix="gpuslo-canary-") as tmp:
        twin = TwinRollout(scenario, spec, Path(tmp) / "journal.db", args.gpu_hour)
        status = twin.run()
        for t, action, weight, reason in twin.log:
            print(f"{t / 60:7.1f} min  {action:<11} canary at {weight:>3}%  {reason}")
        print(f"outcome: {status.state} at {status.weight}% after {twin.fleet.t / 60:.1f} min")
        twin.journal.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``gpuslo canary`` on its own (the same as through ``gpuslo``)."""
    from gpuslo.foundation.errors import OutputError, SpecError

    parser = argparse.ArgumentParser(prog="gpuslo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as err:
        print(f"gpuslo canary: error: {err}", file=sys.stderr)
        return 2
    except SpecError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    except OutputError as err:
        print(f"gpuslo canary: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
