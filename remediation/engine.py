"""Decisions: match alerts to policies, apply the guardrails, act exactly once, revert later.

Order for a firing alert and each policy it matches:

1. the episode (group key + fingerprint + startsAt) and policy already have a decision:
   a repeat delivery. If that decision was written but never completed (a crash between
   deciding and acting), complete it with the state it planned; otherwise do nothing.
2. kill switch, cooldown, the policy's and the global rate limit, then the alert's data (its
   expression must still return it, asked of Prometheus only when the local checks pass): any
   of them stops the action (recorded as skipped).
3. plan the absolute state to set (replicas, weights) within the policy's bounds;
4. dry run: record the plan as advised. Otherwise write the decision, act, record the result.

A resolved alert whose episode was acted on schedules a revert after the policy's hysteresis;
the revert never goes below the state before the action.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .actuators import Actuator, ActuatorError
from .journal import Entry, Journal
from .policy import CpuFallback, Policy, PolicyFile, Route, ScalePool, Workload, seconds
from .webhook import Alert, Payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one (alert, policy) pair in one delivery."""

    policy: str
    fingerprint: str
    decision: str  # acted | advised | skipped | duplicate | failed | resumed | revert-scheduled
    reason: str = ""
    entry_id: int | None = None


class DataCheck:
    """Before acting: re-run the alert's expression on Prometheus. Stale or missing data (older
    than Prometheus's lookback) returns nothing, and so does a condition that stopped holding."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __call__(self, alert: Alert) -> str | None:
        """None when the data backs the alert, else why not."""
        expr = alert.expression()
        if not expr:
            return "the alert has no generatorURL expression to check its data with"
        query = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{query}", timeout=self.timeout
            ) as resp:
                body = json.load(resp)
        except (OSError, ValueError) as err:
            return f"cannot check the alert's data on Prometheus: {err}"
        result = body.get("data", {}).get("result", [])
        labels = alert.labels
        for series in result:
            metric = {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
            if all(labels.get(k) == v for k, v in metric.items()):
                return None
        if not result:
            return "the alert's expression returns nothing now: data stale, missing or recovered"
        return "the alert's series is no longer in its expression's result"


class CauseCheck:
    """The most probable cause of the burn an alert reports, from ``gpuslo explain``'s
    correlation against Prometheus. The alert's ``slo`` label names the SLO."""

    def __init__(
        self, url: str, slos: Sequence[Any], step: float = 60.0, config: Any = None
    ) -> None:
        """``config``: the correlator's ``Config`` (GPU naming, pool identity; None: defaults)."""
        self.url, self.slos, self.step, self.config = url, list(slos), step, config

    @classmethod
    def from_settings(cls, settings: Any, policy_path: str | os.PathLike[str]) -> CauseCheck:
        from pathlib import Path

        from gpuslo.slo_engine import load_specs

        base = Path(policy_path).parent
        slos, _ = load_specs([base / p for p in settings.slo_specs])
        return cls(
            settings.prometheus,
            slos,
            seconds(settings.explain_step),
            config=settings.correlator_config(),
        )

    def __call__(self, alert: Alert) -> tuple[str | None, str]:
        from gpuslo.foundation.prometheus import HistoryError
        from gpuslo.slo_engine.correlate import explain

        name, service = alert.labels.get("slo", ""), alert.labels.get("service")
        # An SLO is its service and name; the service label picks among same-named SLOs.
        found = [s for s in self.slos if s.name == name and service in (None, s.service)]
        if len(found) != 1:
            what = "no SLO" if not found else f"{len(found)} SLOs (give the service label)"
            return None, f"{what} named {name!r} in settings.slo_specs"
        slo = found[0]
        try:
            result = explain(
                self.url, slo, alert.startsAt.timestamp(), self.step, config=self.config
            )
        except (HistoryError, OSError, ValueError) as err:
            return None, f"cause analysis failed: {err}"
        if not result.causes:
            return None, "no signal in the SLO's blast radius changed with the burn"
        top = result.causes[0]
        return top.kind, top.sentence(result.onset)


class Remediator:
    def __init__(
        self,
        policy: PolicyFile,
        journal: Journal,
        actuator: Actuator,
        clock: Callable[[], float] = time.time,
        data_check: Callable[[Alert], str | None] | None = None,
        cause_check: Callable[[Alert], tuple[str | None, str]] | None = None,
        dry_run: bool | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.policy = policy
        self.journal = journal
        self.actuator = actuator
        self.clock = clock
        self.data_check = data_check
        self.cause_check = cause_check
        self.dry_run = policy.settings.dry_run if dry_run is None else dry_run
        self.on_outcome = on_outcome or (lambda o: None)
        self._lock = threading.Lock()  # one decision at a time: guardrails read then write

    # ------------------------------------------------------------------ state
    def kill_switch(self) -> bool:
        path = self.policy.settings.kill_switch
        return bool(path) and os.path.exists(path)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ entry points
    def handle(self, payload: Payload) -> list[Outcome]:
        out = []
        with self._lock:
            for alert in payload.alerts:
                for policy in self.policy.policies:
                    if policy.matches(alert.labels):
                        o: Outcome | None
                        if alert.status == "firing":
                            o = self._firing(payload, alert, policy)
                        else:
                            o = self._resolved(payload, alert, policy)
                        if o is not None:
                            out.append(o)
                            self.on_outcome(o)
        if payload.truncatedAlerts:
            log.warning(
                "group %s: Alertmanager left out %d alerts (its max_alerts); they were not seen",
                payload.groupKey,
                payload.truncatedAlerts,
            )
        return out

    def tick(self) -> list[Outcome]:
        """Run reverts that have become due (called periodically)."""
        with self._lock:
            out = self._run_due_reverts()
        for o in out:
            self.on_outcome(o)
        return out

    def resume(self) -> list[Outcome]:
        """At start-up: complete decisions a crash left between decided and acted."""
        out = []
        with self._lock:
            for entry in self.journal.unfinished():
                out.append(self._execute(entry, resumed=True))
        return out

    # ------------------------------------------------------------------ firing
    def _firing(self, payload: Payload, alert: Alert, policy: Policy) -> Outcome:
        key = f"{alert.key(payload.groupKey)}:{policy.name}"
        existing = self.journal.get(key)
        if existing is not None:
            if existing.status == "decided":
                return self._execute(existing, resumed=True)
            return Outcome(
                policy.name, alert.fingerprint, "duplicate", existing.status, existing.id
            )
        reason = self._guardrails(alert, policy)
        if reason is not None:
            # Skips are not the episode's decision: a later delivery is judged afresh.
            entry = self._record(f"{key}:skip:{uuid.uuid4().hex}", alert, policy, "skipped", reason)
            return Outcome(policy.name, alert.fingerprint, "skipped", reason, entry.id)
        try:
            target, plan = self._plan(policy)
        except ActuatorError as err:
            entry = self._record(
                f"{key}:skip:{uuid.uuid4().hex}", alert, policy, "failed", str(err)
            )
            return Outcome(policy.name, alert.fingerprint, "failed", str(err), entry.id)
        if plan is None:
            reason = f"nothing to change on {target}: already at the policy's bound"
            entry = self._record(f"{key}:skip:{uuid.uuid4().hex}", alert, policy, "skipped", reason)
            return Outcome(policy.name, alert.fingerprint, "skipped", reason, entry.id)
        if self.dry_run:
            entry = self._record(key, alert, policy, "advised", "dry run", target, plan)
            return Outcome(policy.name, alert.fingerprint, "advised", "dry run", entry.id)
        entry = self._record(key, alert, policy, "decided", "", target, plan)
        return self._execute(entry)

    def _guardrails(self, alert: Alert, policy: Policy) -> str | None:
        now = self.clock()
        if self.kill_switch():
            return "kill switch is on"
        last = self.journal.last_acted(policy.name)
        if last is not None and now - last < seconds(policy.cooldown):
            return f"cooldown: last action {now - last:.0f}s ago, cooldown {policy.cooldown}"
        limit = policy.rate_limit
        if self.journal.count_acted(policy.name, now - seconds(limit.per)) >= limit.max:
            return f"rate limit: {limit.max} actions per {limit.per} reached"
        glob = self.policy.settings.rate_limit
        if self.journal.count_acted(None, now - seconds(glob.per)) >= glob.max:
            return f"global rate limit: {glob.max} actions per {glob.per} reached"
        # Last: the checks that go over the network, skipped when a local one says no.
        if self.data_check is not None:
            reason = self.data_check(alert)
            if reason is not None:
                return reason
        if policy.when_cause or policy.unless_cause:
            if self.cause_check is None:
                return "the policy depends on the cause, and the hook has no cause check"
            kind, summary = self.cause_check(alert)
            if policy.when_cause and kind not in policy.when_cause:
                wanted = ", ".join(policy.when_cause)
                return f"probable cause is {kind or 'unknown'} ({summary}); acts on {wanted}"
            if policy.unless_cause and kind in policy.unless_cause:
                return f"probable cause is {kind} ({summary}); stands aside for it"
            log.info("%s: probable cause %s: %s", policy.name, kind, summary)
        return None

    def _plan(self, policy: Policy) -> tuple[str, dict[str, Any] | None]:
        """The target and the absolute state to set, or None when nothing would change."""
        action = policy.action
        if action.scale_pool is not None:
            return self._plan_scale(action.scale_pool)
        if action.promote_warm is not None:  # the same plan; warm replicas serve first
            target, plan = self._plan_scale(action.promote_warm)
            if plan is not None:
                plan["steps"][0]["warm_first"] = True
            return target, plan
        if action.cpu_fallback is not None:
            return self._plan_fallback(action.cpu_fallback)
        return "(nothing)", {"notify": True}

    def _plan_scale(self, spec: ScalePool) -> tuple[str, dict[str, Any] | None]:
        before = self.actuator.replicas(spec.pool)
        wanted = spec.target if spec.target is not None else before + (spec.step or 0)
        after = max(spec.min, min(wanted, spec.ceiling()))
        if after <= before:
            return spec.pool.ref, None  # never scale down on a burning budget
        pool = spec.pool.model_dump()
        return spec.pool.ref, {
            "steps": [{"scale": pool, "replicas": after}],
            "pool": pool,
            "before": before,
            "after": after,
        }

    def _plan_fallback(self, spec: CpuFallback) -> tuple[str, dict[str, Any] | None]:
        weights = self.actuator.weights(spec.route)
        total = sum(weights.values()) or 100
        share = round(100 * weights.get(spec.fallback, 0) / total)
        new_share = min(spec.max_percent, share + spec.step_percent)
        if new_share <= share:
            return spec.route.ref, None
        after = {spec.primary: 100 - new_share, spec.fallback: new_share}
        route = spec.route.model_dump()
        plan: dict[str, Any] = {"route": route, "weights_before": weights, "weights_after": after}
        steps: list[dict[str, Any]] = []
        if spec.fallback_pool is not None:  # capacity first, then traffic
            pool = spec.fallback_pool.model_dump()
            before = self.actuator.replicas(spec.fallback_pool)
            plan |= {"pool": pool, "before": before, "after": max(before, spec.fallback_replicas)}
            if plan["after"] > before:
                steps.append({"scale": pool, "replicas": plan["after"]})
        steps.append({"weights": route, "to": after})
        plan["steps"] = steps
        return spec.route.ref, plan

    def _execute(self, entry: Entry, resumed: bool = False) -> Outcome:
        """Apply an entry's plan (absolute states, so a repeat after a crash is harmless)."""
        plan = entry.plan
        try:
            how = self._apply(plan)
        except ActuatorError as err:
            log.warning("action %s on %s failed: %s", entry.kind, entry.target, err)
            self.journal.update(entry.id, status="failed", reason=str(err))
            return Outcome(entry.policy, entry.fingerprint, "failed", str(err), entry.id)
        reason = ("resumed after restart; " if resumed else "") + how
        self.journal.update(entry.id, status="acted", reason=reason)
        decision = "reverted" if entry.kind == "revert" else ("resumed" if resumed else "acted")
        return Outcome(entry.policy, entry.fingerprint, decision, reason, entry.id)

    def _apply(self, plan: dict[str, Any]) -> str:
        done = []
        for step in plan.get("steps", []):
            promote = getattr(self.actuator, "promote_warm", None)  # actuators with warm pools
            if "scale" in step and step.get("warm_first") and promote is not None:
                how = promote(Workload(**step["scale"]), int(step["replicas"]))
                done.append(f"{step['scale']['name']} to {step['replicas']} replicas ({how})")
            elif "scale" in step:
                how = self.actuator.scale(Workload(**step["scale"]), int(step["replicas"]))
                done.append(f"{step['scale']['name']} to {step['replicas']} replicas ({how})")
            else:
                self.actuator.set_weights(Route(**step["weights"]), step["to"])
                done.append(f"{step['weights']['name']} weights {step['to']}")
        return "; ".join(done) or "notified"

    def _record(
        self,
        key: str,
        alert: Alert,
        policy: Policy,
        status: str,
        reason: str,
        target: str = "",
        plan: dict[str, Any] | None = None,
    ) -> Entry:
        return self.journal.insert(
            key=key,
            policy=policy.name,
            kind=policy.action.kind,
            status=status,
            reason=reason,
            alertname=alert.labels.get("alertname", ""),
            fingerprint=alert.fingerprint,
            slo=alert.labels.get("slo", ""),
            target=target,
            plan=plan or {},
        )

    # ------------------------------------------------------------------ resolved
    def _resolved(self, payload: Payload, alert: Alert, policy: Policy) -> Outcome | None:
        if policy.revert is None:
            return None
        key = f"{alert.key(payload.groupKey)}:{policy.name}"
        acted = self.journal.get(key)
        if acted is None or acted.status != "acted" or acted.kind == "notify_only":
            return None
        revert_key = f"{key}:revert"
        existing = self.journal.get(revert_key)
        if existing is not None:
            return Outcome(
                policy.name, alert.fingerprint, "duplicate", existing.status, existing.id
            )
        entry = self.journal.insert(
            key=revert_key,
            policy=policy.name,
            kind="revert",
            status="pending",
            reason=f"resolved; revert after {policy.revert.after}",
            alertname=acted.alertname,
            fingerprint=acted.fingerprint,
            slo=acted.slo,
            target=acted.target,
            plan=acted.plan,
            due=self.clock() + seconds(policy.revert.after),
            parent=acted.id,
        )
        return Outcome(policy.name, alert.fingerprint, "revert-scheduled", entry.reason, entry.id)

    def _run_due_reverts(self) -> list[Outcome]:
        out: list[Outcome] = []
        if self.kill_switch():
            return out  # reverts wait: the kill switch stops every change
        for entry in self.journal.due_reverts(self.clock()):
            newer = self.journal.newer_action(entry.target, after_id=entry.parent or 0)
            if newer is not None:
                reason = f"superseded by action {newer} on {entry.target}"
                self.journal.update(entry.id, status="skipped", reason=reason)
                out.append(Outcome(entry.policy, entry.fingerprint, "skipped", reason, entry.id))
                continue
            try:
                steps = self._revert_steps(entry.plan)
            except ActuatorError as err:
                self.journal.update(entry.id, reason=f"retrying: {err}")
                continue
            if not steps:
                self.journal.update(entry.id, status="skipped", reason="already back")
                out.append(Outcome(entry.policy, entry.fingerprint, "skipped", "already back"))
                continue
            self.journal.update(entry.id, status="decided", plan={**entry.plan, "steps": steps})
            refreshed = self.journal.get(entry.key)
            assert refreshed is not None
            out.append(self._execute(refreshed))
        return out

    def _revert_steps(self, acted: dict[str, Any]) -> list[dict[str, Any]]:
        """Undo an action: traffic back first, then capacity; never below the state before
        the action (if someone added replicas meanwhile, only our share comes off)."""
        steps: list[dict[str, Any]] = []
        if "route" in acted:
            back = acted["weights_before"] or {}
            if back and self.actuator.weights(Route(**acted["route"])) != back:
                steps.append({"weights": acted["route"], "to": back})
        if "pool" in acted:
            now = self.actuator.replicas(Workload(**acted["pool"]))
            share = int(acted["after"]) - int(acted["before"])
            target = max(int(acted["before"]), now - share)
            if target != now:
                steps.append({"scale": acted["pool"], "replicas": target})
        return steps
