"""Live incidents: every page the hook receives is explained at its ``startsAt``, stored with
the journal and announced where the on-call looks.

An incident is one firing episode of one alert: Alertmanager's fingerprint and the alert's
``startsAt``. The group key is left out on purpose (the journal's episode key has it): the
same page routed to the hook by two routes, or delivered by both replicas of an HA pair, is
still one incident.

What happens to a page, and on which thread:

1. the HTTP thread writes the incident row (``INSERT OR IGNORE``: a duplicate delivery finds
   it) and offers it to a bounded queue without waiting; a full queue (an alert storm) marks
   the incident's explanation ``skipped`` and counts it. Then the remediator decides as
   before: the action path never waits on an explanation;
2. one of ``workers`` explanation threads runs the correlator (``gpuslo explain``) for the
   alert's SLO at its ``startsAt`` and stores the ranked causes with their evidence, and the
   evidence series for the page's charts;
3. one notifier thread sends the incident to the chat webhook, the generic webhook and
   Grafana once, and once more when it resolves (``notify``).

Rows are in the journal's SQLite file (table ``incidents``), written in its transactions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpuslo.foundation import conventions as c

from .journal import Entry, Journal, _iso
from .policy import IncidentSettings
from .webhook import Alert, Payload

log = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,               -- fingerprint + startsAt
    fingerprint TEXT NOT NULL,
    slo TEXT NOT NULL DEFAULT '',
    service TEXT NOT NULL DEFAULT '',
    tier TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL DEFAULT '',
    alertname TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    annotations TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,              -- firing | resolved
    started REAL NOT NULL,             -- the alert's startsAt
    received REAL NOT NULL,            -- the first delivery
    explanation_status TEXT NOT NULL,  -- pending | explained | failed | skipped | unavailable
    explanation TEXT NOT NULL DEFAULT '{}',
    explained REAL,
    resolved REAL,
    deliveries TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS incidents_slo ON incidents (slo, service, tier, started)",
    "CREATE INDEX IF NOT EXISTS incidents_started ON incidents (started)",
    """CREATE TABLE IF NOT EXISTS incident_actions (
    incident TEXT NOT NULL REFERENCES incidents(id),
    entry INTEGER NOT NULL REFERENCES actions(id),
    PRIMARY KEY (incident, entry)
)""",
)
EXPLANATION_STATES = ("pending", "explained", "failed", "skipped", "unavailable")
TOP_CAUSES = 5  # stored per incident
CHARTED = 3  # causes whose evidence series are stored for the page's charts
CHART_POINTS = 240


def incident_id(alert: Alert) -> str:
    """One firing episode of one alert, however often and by whichever route it arrives."""
    raw = "\0".join((alert.fingerprint, alert.startsAt.isoformat()))
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


@dataclass
class Incident:
    id: str
    fingerprint: str
    slo: str
    service: str
    tier: str
    severity: str
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    status: str
    started: float
    received: float
    explanation_status: str
    explanation: dict[str, Any]
    explained: float | None
    resolved: float | None
    deliveries: dict[str, Any]
    updated: float
    actions: list[Entry] = field(default_factory=list)

    def causes(self) -> list[dict[str, Any]]:
        return list(self.explanation.get("causes", []))

    def headline(self) -> str:
        """One line: the SLO and the most probable cause, or why there is none."""
        what = f"{self.slo} ({self.service})" if self.service else self.slo
        causes = self.causes()
        if causes:
            return f"{what} is burning its error budget. Probable cause: {causes[0]['summary']}"
        reason = self.explanation.get("reason") or {
            "pending": "explanation in progress",
            "explained": "no signal in the SLO's blast radius changed with the burn",
        }.get(self.explanation_status, self.explanation_status)
        return f"{what} is burning its error budget. No cause named: {reason}"

    def public(self, base_url: str | None = None) -> dict[str, Any]:
        """The JSON record (``GET /v1/incidents/{id}``)."""
        return {
            "id": self.id,
            "url": page_url(base_url, self.id),
            "slo": self.slo,
            "service": self.service,
            "tier": self.tier,
            "severity": self.severity,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "annotations": self.annotations,
            "status": self.status,
            "started_at": _iso(self.started),
            "received_at": _iso(self.received),
            "explained_at": None if self.explained is None else _iso(self.explained),
            "resolved_at": None if self.resolved is None else _iso(self.resolved),
            "summary": self.headline(),
            "explanation": {"status": self.explanation_status, **self.explanation},
            "actions": [e.public() for e in self.actions],
            "deliveries": self.deliveries,
        }

    def result(self) -> dict[str, Any]:
        """The compact record scenarios compare (``result.json``): Unix seconds."""
        return {
            "slo": self.slo,
            "started_at": self.started,
            "explained_at": self.explained,
            "causes": [
                {"kind": x["kind"], "entity": x["entity"], "score": x["score"]}
                for x in self.causes()
            ],
        }


def page_url(base_url: str | None, incident: str) -> str:
    """The incident's HTML page (relative without an external URL)."""
    return f"{(base_url or '').rstrip('/')}/incidents/{incident}"


class IncidentStore:
    """Incidents in the journal's database, written in its transactions (same file, same
    lock, same durability: WAL and synchronous commits)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        with journal.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def record(
        self, alerts: Sequence[Alert], now: float, explanation: tuple[str, dict[str, Any]] | None
    ) -> list[tuple[Alert, str, bool]]:
        """Open the incidents of firing pages and resolve those of resolved ones, in one
        transaction: (alert, incident id, whether this delivery opened or resolved it; a
        duplicate delivery: False). ``explanation``: the state new incidents start in
        (None: pending, for a worker)."""
        status, body = explanation or ("pending", {})
        out = []
        with self.journal.transaction() as db:
            for alert in alerts:
                ident = incident_id(alert)
                if alert.status == "firing":
                    out.append((alert, ident, self._open(db, alert, ident, now, status, body)))
                    continue
                ended = alert.endsAt.timestamp() if alert.endsAt is not None else now
                cur = db.execute(
                    "UPDATE incidents SET status = 'resolved', resolved = ?, updated = ? "
                    "WHERE id = ? AND status = 'firing'",
                    (ended, now, ident),
                )
                out.append((alert, ident, cur.rowcount == 1))
        return out

    @staticmethod
    def _open(
        db: Any, alert: Alert, ident: str, now: float, status: str, body: dict[str, Any]
    ) -> bool:
        labels = alert.labels
        cur = db.execute(
            "INSERT OR IGNORE INTO incidents (id, fingerprint, slo, service, tier, severity, "
            "alertname, labels, annotations, status, started, received, explanation_status, "
            "explanation, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'firing', ?, ?, ?, ?, ?)",
            (
                ident,
                alert.fingerprint,
                labels.get(c.LABEL_SLO, ""),
                labels.get(c.LABEL_SERVICE, ""),
                labels.get(c.LABEL_TIER, ""),
                labels.get(c.LABEL_SEVERITY, ""),
                labels.get("alertname", ""),
                json.dumps(labels, sort_keys=True),
                json.dumps(alert.annotations, sort_keys=True),
                alert.startsAt.timestamp(),
                now,
                status,
                json.dumps(body, sort_keys=True),
                now,
            ),
        )
        return bool(cur.rowcount == 1)

    def link(self, ident: str, entries: Sequence[int]) -> None:
        """Journal entries (the hook's decisions) that belong to the incident."""
        if not entries:
            return
        with self.journal.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO incident_actions (incident, entry) VALUES (?, ?)",
                [(ident, e) for e in entries],
            )

    def explained(
        self, ident: str, status: str, explanation: dict[str, Any], at: float | None
    ) -> bool:
        """Store the explanation once (a worker after a restart finds it done: False); ``at``:
        when it was explained (None for a page that was not: skipped, unavailable)."""
        with self.journal.transaction() as db:
            cur = db.execute(
                "UPDATE incidents SET explanation_status = ?, explanation = ?, explained = ?, "
                "updated = ? WHERE id = ? AND explanation_status = 'pending'",
                (
                    status,
                    json.dumps(explanation, sort_keys=True),
                    at,
                    self.journal.clock(),
                    ident,
                ),
            )
            return cur.rowcount == 1

    def add_charts(self, ident: str, explanation: dict[str, Any]) -> None:
        """The explanation again, with its chart series (after it was stored without)."""
        with self.journal.transaction() as db:
            db.execute(
                "UPDATE incidents SET explanation = ? WHERE id = ? AND explanation_status = "
                "'explained'",
                (json.dumps(explanation, sort_keys=True), ident),
            )

    def delivered(self, ident: str, target: str, state: dict[str, Any]) -> None:
        with self.journal.transaction() as db:
            row = db.execute("SELECT deliveries FROM incidents WHERE id = ?", (ident,)).fetchone()
            if row is None:
                return
            deliveries = json.loads(row[0])
            deliveries[target] = state
            db.execute(
                "UPDATE incidents SET deliveries = ?, updated = ? WHERE id = ?",
                (json.dumps(deliveries, sort_keys=True), self.journal.clock(), ident),
            )

    def get(self, ident: str, with_actions: bool = True) -> Incident | None:
        rows = self._select("WHERE id = ?", (ident,), 1)
        if not rows:
            return None
        if with_actions:
            rows[0].actions = self.actions(ident)
        return rows[0]

    def query(
        self,
        slo: str | None = None,
        service: str | None = None,
        tier: str | None = None,
        status: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Newest first (by startsAt)."""
        clauses: list[str] = []
        args: list[Any] = []
        for col, value in (("slo", slo), ("service", service), ("tier", tier), ("status", status)):
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        if since is not None:
            clauses.append("started >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(where, tuple(args), limit)

    def pending(self) -> list[Incident]:
        """Incidents a restart left unexplained."""
        return self._select("WHERE explanation_status = 'pending'", (), 100_000, oldest=True)

    def actions(self, ident: str) -> list[Entry]:
        """The journal entries linked to the incident, and the reverts of those."""
        from .journal import _entry

        with self.journal.transaction() as db:
            rows = db.execute(
                "SELECT * FROM actions WHERE id IN (SELECT entry FROM incident_actions WHERE "
                "incident = ?) OR parent IN (SELECT entry FROM incident_actions WHERE "
                "incident = ?) ORDER BY id",
                (ident, ident),
            ).fetchall()
        return [_entry(r) for r in rows]

    def _select(
        self, where: str, args: tuple[Any, ...], limit: int, oldest: bool = False
    ) -> list[Incident]:
        order = "ASC" if oldest else "DESC"
        with self.journal.transaction() as db:
            rows = db.execute(
                f"SELECT * FROM incidents {where} ORDER BY started {order}, id LIMIT ?",
                (*args, limit),
            ).fetchall()
        out = []
        for row in rows:
            data = dict(row)
            for key in ("labels", "annotations", "explanation", "deliveries"):
                data[key] = json.loads(data[key] or "{}")
            out.append(Incident(**data))
        return out


class ExplainError(Exception):
    """Why a page cannot be explained (no such SLO, no data): stored as the reason."""


class Explainer:
    """``gpuslo explain`` for a page: the correlator for the alert's SLO at its startsAt, as a
    JSON-ready dict, with the evidence series of the top causes for the page's charts."""

    def __init__(
        self,
        url: str,
        slos: Sequence[Any],
        step: float = 60.0,
        config: Any = None,
        timeout: float = 30.0,
    ) -> None:
        self.url, self.slos, self.step, self.config = url, list(slos), step, config
        self.timeout = timeout
        names = [s.name for s in self.slos]
        self.shared = {n for n in names if names.count(n) > 1}  # drill-downs named by service

    @classmethod
    def from_settings(cls, settings: Any, policy_path: str | os.PathLike[str]) -> Explainer:
        from gpuslo.slo_engine import load_specs

        from .policy import seconds

        base = Path(policy_path).parent
        slos, _ = load_specs([base / p for p in settings.slo_specs])
        return cls(
            settings.prometheus,
            slos,
            seconds(settings.explain_step),
            config=settings.correlator_config(),
        )

    def find(self, labels: Mapping[str, str]) -> Any:
        name, service = labels.get(c.LABEL_SLO, ""), labels.get(c.LABEL_SERVICE)
        found = [s for s in self.slos if s.name == name and service in (None, s.service)]
        if len(found) != 1:
            what = "no SLO" if not found else f"{len(found)} SLOs (give the service label)"
            raise ExplainError(f"{what} named {name!r} in settings.slo_specs")
        return found[0]

    def __call__(self, labels: Mapping[str, str], at: float) -> dict[str, Any]:
        from gpuslo.foundation.prometheus import HistoryError
        from gpuslo.slo_engine.correlate import explain

        slo = self.find(labels)
        try:
            result = explain(self.url, slo, at, self.step, config=self.config, timeout=self.timeout)
        except (HistoryError, OSError, ValueError) as err:
            raise ExplainError(f"cause analysis failed: {err}") from None
        return result.as_dict(top=TOP_CAUSES)

    def charts(self, explanation: dict[str, Any]) -> dict[str, Any]:
        """The explanation with the series of its top causes' first evidence (for the page's
        charts), fetched after the explanation is stored: they do not delay it."""
        out: dict[str, Any] = json.loads(json.dumps(explanation))
        for cause in out.get("causes", [])[:CHARTED]:
            for ev in cause["evidence"][:1]:
                ev["series"] = self._series(ev["query"], cause["entity"], out["onset"])
        return out

    def _series(self, expr: str, entity: Mapping[str, str], onset: float) -> list[list[float]]:
        """The evidence's own series around the onset (the entity's), thinned for a chart."""
        from gpuslo.foundation.prometheus import HistoryError, range_series
        from gpuslo.slo_engine.correlate import AFTER, BEFORE, SEARCH_AFTER, SEARCH_BEFORE

        host = getattr(getattr(self.config, "naming", None), "host_label", c.LABEL_HOSTNAME)
        start = onset - SEARCH_BEFORE - BEFORE
        end = min(onset + SEARCH_AFTER + AFTER, time.time())
        try:
            series = range_series(
                self.url, only(expr, entity, host), start, end, self.step, timeout=self.timeout
            )
        except (HistoryError, OSError, ValueError):
            return []
        for s in series:
            metric = dict(s["metric"])
            if host in metric:
                metric.setdefault(c.LABEL_HOSTNAME, metric[host])
            if all(metric.get(k, "") == v for k, v in entity.items()):
                values = [[float(t), float(v)] for t, v in s["values"]]
                stride = max(1, len(values) // CHART_POINTS)
                return values[::stride]
        return []

    def dashboard_uid(self, slo: str, service: str) -> str:
        """The SLO's generated drill-down dashboard (``gpuslo dashboards generate``)."""
        return dashboard_uid(slo, service, slo in self.shared)


def only(expr: str, entity: Mapping[str, str], host: str = c.LABEL_HOSTNAME) -> str:
    """``expr`` restricted to one entity's series in PromQL (``and on`` a constant vector
    carrying the entity's labels), so a chart fetches one series, not the whole radius."""
    if not entity:
        return expr
    names, const = [], "vector(1)"
    for key, value in entity.items():
        name = host if key == c.LABEL_HOSTNAME else key
        names.append(name)
        literal = json.dumps(value.replace("$", "$$"))  # label_replace expands $1
        const = f'label_replace({const}, "{name}", {literal}, "", "")'
    return f"({expr}) and on ({', '.join(names)}) {const}"


def dashboard_uid(slo: str, service: str, qualified: bool) -> str:
    """``dashboards.generate.slo_detail``'s uid: by name, or service and name when two
    services share the name; at most 40 characters (Grafana's limit)."""
    ident = f"{service}-{slo}" if qualified else slo
    return f"gpuslo-slo-{ident}"[:40]


class IncidentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.skipped = Counter(
            c.INCIDENT_EXPLANATIONS_SKIPPED.name.removesuffix("_total"),
            c.INCIDENT_EXPLANATIONS_SKIPPED.help,
            registry=registry,
        )
        self.latency = Histogram(
            c.INCIDENT_EXPLANATION_SECONDS.name,
            c.INCIDENT_EXPLANATION_SECONDS.help,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.depth = Gauge(
            c.INCIDENT_QUEUE_DEPTH.name, c.INCIDENT_QUEUE_DEPTH.help, registry=registry
        )
        self.notifications = Counter(
            c.INCIDENT_NOTIFICATIONS.name.removesuffix("_total"),
            c.INCIDENT_NOTIFICATIONS.help,
            [c.LABEL_NOTIFY_TARGET, c.LABEL_NOTIFY_OUTCOME],
            registry=registry,
        )


ExplainFn = Callable[[Mapping[str, str], float], dict[str, Any]]


class Incidents:
    """The incident service beside the remediator: ``observe`` a delivery before deciding,
    ``link`` the outcomes after; explanation and notification run on their own threads."""

    def __init__(
        self,
        store: IncidentStore,
        settings: IncidentSettings,
        registry: CollectorRegistry,
        explain: ExplainFn | None = None,
        notifier: Any = None,
        clock: Callable[[], float] = time.time,
        unavailable: str = "the policy has no settings.prometheus and settings.slo_specs",
    ) -> None:
        self.store = store
        self.settings = settings
        self.explain = explain
        self.notifier = notifier
        self.clock = clock
        self.unavailable = unavailable
        self._queue: queue.Queue[tuple[str, float] | None] = queue.Queue(settings.queue)
        self.metrics = IncidentMetrics(registry)
        self.metrics.depth.set_function(self._queue.qsize)
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str | None:
        return self.settings.external_url

    def is_page(self, alert: Alert) -> bool:
        labels = alert.labels
        return bool(labels.get(c.LABEL_SLO)) and all(
            labels.get(k) == v for k, v in self.settings.match.items()
        )

    # ------------------------------------------------------------------ threads
    def start(self) -> Incidents:
        for i in range(self.settings.workers if self.explain is not None else 0):
            t = threading.Thread(target=self._work, name=f"incident-explain-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.notifier is not None:
            self.notifier.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout)
        if self.notifier is not None:
            self.notifier.stop()

    def resume(self) -> int:
        """At start-up: queue the incidents a restart left unexplained; notify the rest."""
        n = 0
        for incident in self.store.pending():
            self._offer(incident.id, incident.received)
            n += 1
        if self.notifier is not None:
            for incident in self.store.query(limit=1000):
                if incident.explanation_status != "pending":
                    self.notifier.enqueue(incident.id)
        return n

    # ------------------------------------------------------------------ the HTTP thread
    def observe(self, payload: Payload) -> dict[str, str]:
        """Open (or resolve) the incidents of a delivery's pages: one SQLite transaction and
        a queue offer, never a wait on Prometheus. Returns fingerprint -> incident id."""
        now = self.clock()
        pages = [a for a in payload.alerts if self.is_page(a)]
        if not pages:
            return {}
        start = None if self.explain is not None else ("unavailable", {"reason": self.unavailable})
        out: dict[str, str] = {}
        for alert, ident, changed in self.store.record(pages, now, start):
            out[alert.fingerprint] = ident
            if not changed:
                continue  # a duplicate delivery
            if alert.status == "firing" and self.explain is not None:
                self._offer(ident, now)
            elif self.notifier is not None:  # unavailable: announce now; resolved: update
                self.notifier.enqueue(ident)
        return out

    def link(self, pages: Mapping[str, str], outcomes: Sequence[Any]) -> None:
        """The hook's decisions on the pages (outcomes with a journal entry)."""
        by_incident: dict[str, list[int]] = {}
        for o in outcomes:
            ident = pages.get(o.fingerprint)
            if ident is not None and o.entry_id is not None:
                by_incident.setdefault(ident, []).append(o.entry_id)
        for ident, entries in by_incident.items():
            self.store.link(ident, entries)

    def _offer(self, ident: str, received: float) -> None:
        if self.explain is None:
            self._finish(ident, received, "unavailable", {"reason": self.unavailable})
            return
        try:
            self._queue.put_nowait((ident, received))
        except queue.Full:
            self.metrics.skipped.inc()
            reason = f"explanation queue full ({self.settings.queue} pages waiting): alert storm"
            log.warning("incident %s: %s", ident, reason)
            self._finish(ident, received, "skipped", {"reason": reason})

    # ------------------------------------------------------------------ workers
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            ident, received = job
            try:
                self._explain_one(ident, received)
            except Exception:  # keep the worker alive; the incident stays pending
                log.exception("explaining incident %s failed", ident)

    def _explain_one(self, ident: str, received: float) -> None:
        incident = self.store.get(ident, with_actions=False)
        if incident is None or incident.explanation_status != "pending":
            return
        assert self.explain is not None
        try:
            result = self.explain(incident.labels, incident.started)
            status = "explained"
        except ExplainError as err:
            result, status = {"reason": str(err)}, "failed"
        except Exception as err:  # a correlator bug must not lose the incident
            log.exception("incident %s: explanation raised", ident)
            result, status = {"reason": f"internal error: {type(err).__name__}: {err}"}, "failed"
        self._finish(ident, received, status, result)
        charts = getattr(self.explain, "charts", None)
        if status == "explained" and charts is not None:
            self.store.add_charts(ident, charts(result))

    def _finish(self, ident: str, received: float, status: str, result: dict[str, Any]) -> None:
        now = self.clock()
        at = now if status in ("explained", "failed") else None  # skipped: never explained
        if self.store.explained(ident, status, result, at):
            if status in ("explained", "failed"):
                self.metrics.latency.observe(max(0.0, now - received))
            if self.notifier is not None:
                self.notifier.enqueue(ident)
