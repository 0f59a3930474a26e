"""The canary controller over the remediation journal, the twin's model versions, and the
``gpuslo canary`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuslo.cli import canary_cmd
from gpuslo.cli.canary_cmd import TwinRollout
from gpuslo.remediation.actuators import ActuatorError, LogActuator, TwinActuator
from gpuslo.remediation.journal import Journal
from gpuslo.remediation.policy import Route
from gpuslo.rollouts.analysis import Sample
from gpuslo.rollouts.controller import CanaryController
from gpuslo.rollouts.spec import load_spec
from gpuslo.simulator.fleet import Fleet
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.scenario import load_scenario, resolve_scenario
from gpuslo.simulator.versions import replicas_for
from tests.conftest import FakeClock

from .test_canary_analysis import SPEC, side

ROUTE = Route(namespace="inference", name="llama-8b")


class Samples:
    """Sample function whose canary costs ``cost`` times the baseline per token."""

    def __init__(self, cost: float = 1.0) -> None:
        self.cost = cost
        self.calls = 0

    def __call__(self, which: object, window: float, end: float) -> Sample:
        self.calls += 1
        spec = load_spec(SPEC)
        if which == spec.canary:
            return side(100_000, cost=self.cost)
        return side(1_000_000)


def controller(tmp_path: Path, clock: FakeClock, cost: float = 1.0, actuator=None):  # type: ignore[no-untyped-def]
    journal = Journal(tmp_path / "journal.db", clock=clock)
    act = actuator or LogActuator()
    ctl = CanaryController(load_spec(SPEC), Samples(cost), act, journal, clock=clock)
    return ctl, act, journal


def test_walks_every_step_with_one_journal_entry_each(tmp_path: Path, clock: FakeClock) -> None:
    ctl, act, journal = controller(tmp_path, clock)
    assert ctl.tick().action == "stepped"
    assert ctl.tick().action == "waited"  # inside settle + one interval
    states = []
    for _ in range(10):
        clock.advance(180)
        states.append(ctl.tick())
        if states[-1].state != "progressing":
            break
    assert states[-1].state == "promoted"
    weights = [w["llama-8b-v2"] for kind, _, w in act.calls]
    assert weights == [5, 25, 50, 100]
    entries = ctl.entries()
    assert [(e.kind, e.status, e.plan["weight"]) for e in entries] == [
        ("canary_step", "acted", w) for w in (5, 25, 50, 100)
    ]
    assert all(e.target == "HTTPRoute/inference/llama-8b" for e in entries)
    clock.advance(600)
    assert ctl.tick().state == "promoted" and len(act.calls) == 4  # done: nothing more
    journal.close()


def test_rolls_back_to_zero_once(tmp_path: Path, clock: FakeClock) -> None:
    ctl, act, journal = controller(tmp_path, clock, cost=1.4)
    ctl.tick()
    clock.advance(180)
    status = ctl.tick()
    assert status.state == "rolled_back" and status.action == "rolled back"
    assert act.calls[-1] == ("weights", ROUTE.ref, {"llama-8b": 100, "llama-8b-v2": 0})
    assert "failed: $ per 1M tokens" in ctl.entries()[-1].reason
    for _ in range(3):
        clock.advance(180)
        assert ctl.tick().state == "rolled_back"
    assert len(act.calls) == 2 and [e.kind for e in ctl.entries()] == [
        "canary_step",
        "canary_rollback",
    ]
    journal.close()


class Flaky(LogActuator):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def set_weights(self, route: Route, weights: dict[str, int]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ActuatorError("gateway down", retryable=True)
        super().set_weights(route, weights)


def test_a_change_interrupted_after_deciding_is_finished_not_repeated(
    tmp_path: Path, clock: FakeClock
) -> None:
    act = Flaky()
    ctl, _, journal = controller(tmp_path, clock, actuator=act)
    ctl.tick()
    clock.advance(180)
    act.fail_next = True
    with pytest.raises(ActuatorError):
        ctl.tick()  # decided 25%, the actuator failed: the row stays "decided"
    assert [e.status for e in ctl.entries()] == ["acted", "decided"]
    # A new controller on the same journal (a restart) finishes it, without a new decision.
    again = CanaryController(load_spec(SPEC), Samples(), act, journal, clock=clock)
    assert again.tick().action == "resumed"
    assert [e.status for e in again.entries()] == ["acted", "acted"]
    assert [w["llama-8b-v2"] for _, _, w in act.calls] == [5, 25]
    journal.close()


# ---------------------------------------------------------------------------- the twin
def test_replicas_follow_the_weight() -> None:
    assert replicas_for(20, 0, 1.0) == (20, 0)
    assert replicas_for(20, 5, 1.0) == (19, 1)
    assert replicas_for(20, 25, 1.3) == (15, 7)  # 6.5 rounded up: more GPUs a token
    assert replicas_for(20, 100, 1.0) == (0, 20)


def test_fleet_splits_traffic_and_draws_requests() -> None:
    scenario = load_scenario(resolve_scenario("canary-identical"))
    fleet = Fleet(scenario)
    fleet.versions.set_weight("llama-8b", 25)
    assert len(fleet.pools["llama-8b"].replicas) == 15
    assert len(fleet.pools["llama-8b-v2"].replicas) == 5
    for _ in range(120):
        fleet.step(15)
    base, can = fleet.totals[("llama-8b", "acme")], fleet.totals[("llama-8b-v2", "acme")]
    assert can.model == "llama-3-8b-v2"
    share = sum(can.outcomes.values()) / (sum(base.outcomes.values()) + sum(can.outcomes.values()))
    assert share == pytest.approx(0.25, abs=0.01)
    assert all(float(n).is_integer() for n in can.ttft.counts)  # drawn, not expected values
    assert can.ttft.counts != [n / 3 for n in base.ttft.counts]


def test_twin_route_api_drives_the_split() -> None:
    twin = LiveTwin(load_scenario(resolve_scenario("canary-costlier")), agents=False).start()
    try:
        act = TwinActuator(f"http://127.0.0.1:{twin.port}")
        assert act.weights(ROUTE) == {"llama-8b": 100, "llama-8b-v2": 0}
        act.set_weights(ROUTE, {"llama-8b": 75, "llama-8b-v2": 25})
        assert act.weights(ROUTE) == {"llama-8b": 75, "llama-8b-v2": 25}
        assert len(twin.fleet.pools["llama-8b-v2"].replicas) == 7
        with pytest.raises(ActuatorError, match="HTTP 400"):
            act.set_weights(ROUTE, {"llama-8b": 50, "other": 50})
    finally:
        twin.stop()


def test_scenario_canary_errors_are_located(tmp_path: Path) -> None:
    from gpuslo.foundation.errors import SpecError

    text = resolve_scenario("canary-faster").read_text().replace("pool: llama-8b,", "pool: nope,")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_scenario(path)
    assert any(
        p.field == "canaries[0].pool" and "no pool 'nope'" in str(p) for p in err.value.problems
    )


@pytest.mark.parametrize(
    ("name", "state"),
    [("canary-costlier", "rolled_back"), ("canary-faster", "promoted")],
)
def test_twin_rollout_in_model_time(tmp_path: Path, name: str, state: str) -> None:
    scenario = load_scenario(resolve_scenario(name)).model_copy(update={"seed": 11})
    twin = TwinRollout(scenario, load_spec(SPEC), tmp_path / "j.db")
    status = twin.run()
    assert status.state == state
    steps = [w for _, action, w, _ in twin.log if action == "stepped"]
    if state == "rolled_back":
        assert max(steps) < 50
        assert len(status.entries) == len(steps) + 1  # one entry per step, one rollback
    else:
        assert steps == [5, 25, 50, 100] and len(status.entries) == 4
    twin.journal.close()


# ---------------------------------------------------------------------------- the commands
def test_validate_and_templates_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert canary_cmd.main(["canary", "validate", str(SPEC)]) == 0
    assert "10 tests" in capsys.readouterr().out
    out = tmp_path / "tpl"
    args = ["canary", "templates", str(SPEC), "--prometheus", "http://p:9090", "-o", str(out)]
    assert canary_cmd.main(args) == 0
    argo = yaml.safe_load((out / "argo-analysistemplate.yaml").read_text())
    assert argo["kind"] == "AnalysisTemplate"
    flagger = list(yaml.safe_load_all((out / "flagger-metrictemplates.yaml").read_text()))
    assert len(flagger) == 11 and {o["kind"] for o in flagger} == {"MetricTemplate"}


def test_bad_spec_is_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SPEC.read_text().replace("alpha: 0.05", "alpha: 2"))
    assert canary_cmd.main(["canary", "analyze", str(path), "--prometheus", "http://x"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "alpha" in err and "Traceback" not in err


def test_unreachable_prometheus_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["canary", "analyze", str(SPEC), "--prometheus", "http://127.0.0.1:9"]
    assert canary_cmd.main(args) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("gpuslo canary: error: cannot reach Prometheus") and "Traceback" not in err
    )


def test_run_once_sets_the_first_step_and_journals_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j.db"
    args = ["canary", "run", str(SPEC), "--prometheus", "http://127.0.0.1:9"]
    assert canary_cmd.main([*args, "--journal", str(journal), "--once"]) == 0
    assert "stepped: canary at 5%" in capsys.readouterr().out
    j = Journal(journal)
    [entry] = j.query(policy="canary/llama-8b-v2")
    assert entry.status == "acted" and entry.plan["weights"] == {"llama-8b": 95, "llama-8b-v2": 5}
    j.close()
    # Started again within the settle time, it waits: no second decision for the step.
    assert canary_cmd.main([*args, "--journal", str(journal), "--once"]) == 0
    j = Journal(journal)
    assert len(j.query(policy="canary/llama-8b-v2")) == 1
    j.close()


def test_simulate_prints_each_step_and_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["canary", "simulate", "canary-costlier", str(SPEC), "--seed", "2"]
    assert canary_cmd.main(args) == 0
    out = capsys.readouterr().out
    assert "rolled back canary at   0%" in out and "outcome: rolled_back" in out
