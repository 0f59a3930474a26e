"""The canary controller: steps an HTTPRoute's weights (5 -> 25 -> 50 -> 100 by default)
after each passing analysis and rolls the canary back to 0 on a failing one.

It acts the remediation hook's way: every weight change is written to the remediation journal
(``gpuslo.remediation.journal``) as ``decided`` before the actuator is called and ``acted``
after, under a key unique to the rollout and step. A repeated tick finds the row instead of
deciding again; a crash between the two is finished by the next tick (the weights are
absolute, so applying them again is the same as applying them once). One journal entry per
step, one for the rollback; the rollout's state is read back from the journal, so a restarted
controller carries on where it stopped.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gpuslo.remediation.actuators import Actuator
from gpuslo.remediation.journal import Entry, Journal
from gpuslo.remediation.policy import Route

from .analysis import Result, Sample, analyze
from .spec import CanarySpec, Side

log = logging.getLogger(__name__)

KIND_STEP, KIND_ROLLBACK = "canary_step", "canary_rollback"
State = Literal["progressing", "promoted", "rolled_back"]
SampleFn = Callable[[Side, float, float], Sample]  # (side, window seconds, end) -> sample


@dataclass
class Status:
    state: State
    weight: int
    step: int
    action: str = ""  # what this tick did: stepped, rolled back, waited, analysed, resumed
    result: Result | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)


class CanaryController:
    def __init__(
        self,
        spec: CanarySpec,
        sample: SampleFn,
        actuator: Actuator,
        journal: Journal,
        clock: Callable[[], float] = time.time,
        rollout: str | None = None,
    ) -> None:
        if spec.route is None:
            raise ValueError(f"canary {spec.name}: the spec has no route to step")
        self.spec = spec
        self.sample = sample
        self.actuator = actuator
        self.journal = journal
        self.clock = clock
        self.rollout = rollout or spec.name
        self.route = Route(namespace=spec.route.namespace, name=spec.route.name)
        self.policy = f"canary/{self.rollout}"
        self.last: Result | None = None

    # ------------------------------------------------------------------ journal
    def entries(self) -> list[Entry]:
        """This rollout's journal entries, oldest first."""
        return list(reversed(self.journal.query(policy=self.policy, limit=10_000)))

    def _weights(self, canary: int) -> dict[str, int]:
        assert self.spec.route is not None
        return {self.spec.route.baseline: 100 - canary, self.spec.route.canary: canary}

    def _decide(self, key: str, kind: str, weight: int, step: int, reason: str) -> Entry:
        full = f"{self.policy}/{key}"
        existing = self.journal.get(full)
        if existing is not None:
            return existing
        try:
            return self.journal.insert(
                key=full,
                policy=self.policy,
                kind=kind,
                status="decided",
                reason=reason,
                target=self.route.ref,
                plan={"weights": self._weights(weight), "step": step, "weight": weight},
            )
        except sqlite3.IntegrityError:  # another controller decided it first
            found = self.journal.get(full)
            assert found is not None
            return found

    def _act(self, entry: Entry) -> None:
        weights = {str(k): int(v) for k, v in entry.plan["weights"].items()}
        self.actuator.set_weights(self.route, weights)
        self.journal.update(entry.id, status="acted")
        log.info(
            "canary %s: %s weights %s (%s)", self.rollout, self.route.ref, weights, entry.reason
        )

    # ------------------------------------------------------------------ the loop
    def tick(self) -> Status:
        """One look: finish an interrupted change, start the rollout, or analyse the current
        step and step up, roll back or wait."""
        entries = self.entries()
        for entry in entries:
            if entry.status == "decided":  # a crash between decide and act
                self._act(entry)
                return self.status("resumed")
        acted = [e for e in entries if e.status == "acted"]
        if any(e.kind == KIND_ROLLBACK for e in acted):
            return self.status()
        steps = [e for e in acted if e.kind == KIND_STEP]
        if not steps:
            first = self.spec.steps[0]
            self._act(self._decide(f"step-0-{first}", KIND_STEP, first, 0, "rollout started"))
            return self.status("stepped")
        current = steps[-1]
        step = int(current.plan["step"])
        if self.spec.steps[step] == 100:
            return self.status()
        now = self.clock()
        elapsed = now - current.updated
        settle, interval = self.spec.seconds("settle"), self.spec.seconds("interval")
        window = elapsed - settle
        if window < interval:
            return self.status("waited")
        result = analyze(
            self.spec,
            self.sample(self.spec.baseline, window, now),
            self.sample(self.spec.canary, window, now),
            window={"start": now - window, "end": now, "seconds": window},
        )
        self.last = result
        weight = self.spec.steps[step]
        if result.decision == "rollback" or (
            result.decision == "hold"
            and elapsed > self.spec.seconds("max_duration")
            and self.spec.analysis.on_timeout == "rollback"
        ):
            reason = (
                result.reason if result.decision == "rollback" else "timed out: " + result.reason
            )
            entry = self._decide("rollback", KIND_ROLLBACK, 0, step, f"at {weight}%: {reason}")
            self._act(entry)
            return self.status("rolled back", result)
        if result.decision == "promote":
            nxt = self.spec.steps[step + 1]
            entry = self._decide(
                f"step-{step + 1}-{nxt}",
                KIND_STEP,
                nxt,
                step + 1,
                f"{weight}% passed: {result.reason}",
            )
            self._act(entry)
            return self.status("stepped", result)
        return self.status("analysed", result)

    def status(self, action: str = "", result: Result | None = None) -> Status:
        acted = [e for e in self.entries() if e.status == "acted"]
        steps = [e for e in acted if e.kind == KIND_STEP]
        step = int(steps[-1].plan["step"]) if steps else -1
        weight = self.spec.steps[step] if steps else 0
        state: State = "progressing"
        if any(e.kind == KIND_ROLLBACK for e in acted):
            state, weight = "rolled_back", 0
        elif steps and weight == 100:
            state = "promoted"
        return Status(state, weight, step, action, result, [e.public() for e in self.entries()])

    def run(
        self, sleep: Callable[[float], None] = time.sleep, max_ticks: int | None = None
    ) -> Status:
        """Tick every analysis interval until the rollout is promoted or rolled back."""
        ticks = 0
        while True:
            status = self.tick()
            ticks += 1
            if status.state != "progressing" or (max_ticks is not None and ticks >= max_ticks):
                return status
            sleep(self.spec.seconds("interval"))
