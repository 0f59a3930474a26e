"""Incident notifications where the on-call looks: a chat webhook (Slack-compatible JSON, text
and blocks), a generic JSON webhook, and a Grafana annotation on the SLO's drill-down.

Each target gets one message when the incident is explained (or known to be unexplainable)
and one update when it resolves. What was sent is stored on the incident (``deliveries``), so
a repeated delivery, a resolve that overtakes the explanation, or a restart never sends twice.
One notifier thread sends, in order; a failing target is retried a few times, then recorded
as failed (and retried with the incident's next event).

Chat: Slack's incoming webhooks cannot edit a message, so the update is a second message;
when the endpoint answers with a message ``ts`` (Slack's ``chat.postMessage`` Web API), the
update is posted in that message's thread. Grafana: ``POST /api/annotations`` with
``dashboardUID``, ``panelId``, ``time``, ``timeEnd`` (milliseconds), ``tags`` and ``text``,
answered with the annotation's ``id``; on resolve ``PATCH /api/annotations/{id}`` moves
``timeEnd`` to the resolution, turning the mark into a region. Bearer service-account token.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from .incidents import Incident, IncidentMetrics, IncidentStore, page_url
from .policy import Endpoint, GrafanaTarget, IncidentSettings

log = logging.getLogger(__name__)
TIMEOUT = 10.0
RETRIES = (0.5, 1.0, 2.0)  # seconds between attempts
MAX_TEXT = 2900  # a Slack section's text is at most 3000 characters


class NotifyError(Exception):
    """A target refused or could not be reached."""


def _request(
    method: str, url: str, body: Any, token: str | None = None, timeout: float = TIMEOUT
) -> Any:
    """Send JSON; the answer's JSON (or its text), NotifyError for anything but 2xx."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read(1 << 20)
    except urllib.error.HTTPError as err:
        detail = err.read(512).decode(errors="replace").strip()
        raise NotifyError(f"{method} {_redact(url)}: HTTP {err.code} {detail}") from None
    except (OSError, ValueError) as err:
        raise NotifyError(f"{method} {_redact(url)}: {err}") from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _redact(url: str) -> str:
    """A webhook URL without its secret path (Slack's carries the secret in it)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/…"


class Target(Protocol):
    name: str

    def open(self, incident: Incident) -> dict[str, Any]:
        """Announce the incident; what the update needs later (a message or annotation id)."""
        ...

    def resolve(self, incident: Incident, sent: dict[str, Any]) -> None:
        """The one update, when the incident resolves."""
        ...


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _entity(entity: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in entity.items() if v) or "the fleet"


def slack_message(
    incident: Incident, base_url: str | None, resolved: bool = False
) -> dict[str, Any]:
    """Slack-compatible JSON: ``text`` (the notification line) and ``blocks``."""
    url = page_url(base_url, incident.id)
    head = incident.headline()
    if resolved:
        took = _duration((incident.resolved or incident.started) - incident.started)
        text = f"Resolved after {took}: {incident.slo} ({incident.service}). {head}"
    else:
        text = head
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": ("Resolved: " if resolved else "Page: ")
                + f"{incident.slo} ({incident.service})"[:140],
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]}},
    ]
    causes = incident.causes()
    if causes and not resolved:
        lines = [
            f"{i}. *{x['kind'].replace('_', ' ')}* on {_entity(x['entity'])} "
            f"(score {x['score']:.2f})"
            for i, x in enumerate(causes[:3], 1)
        ]
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:MAX_TEXT]}}
        )
    radius = incident.explanation.get("radius")
    context = [f"started {time.strftime('%H:%M:%SZ', time.gmtime(incident.started))}"]
    if radius:
        context.append(
            f"blast radius: {len(radius.get('pods', []))} pods, {radius.get('gpus', 0)} GPUs, "
            f"{len(radius.get('nodes', []))} nodes, pools {', '.join(radius.get('pools', []))}"
        )
    acted = [f"{e.policy}: {e.status}" for e in incident.actions]
    if acted:
        context.append("actions: " + "; ".join(acted))
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)[:3000]}]}
    )
    if base_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the incident"},
                        "url": url,
                    }
                ],
            }
        )
    return {"text": text[:MAX_TEXT], "blocks": blocks}


class ChatTarget:
    name = "chat"

    def __init__(self, url: str, base_url: str | None, token: str | None = None) -> None:
        self.url, self.base_url, self.token = url, base_url, token

    def open(self, incident: Incident) -> dict[str, Any]:
        answer = _request("POST", self.url, slack_message(incident, self.base_url), self.token)
        if isinstance(answer, dict) and answer.get("ts"):  # chat.postMessage
            return {"ts": answer["ts"], "channel": answer.get("channel")}
        return {}

    def resolve(self, incident: Incident, sent: dict[str, Any]) -> None:
        body = slack_message(incident, self.base_url, resolved=True)
        if sent.get("ts"):
            body["thread_ts"] = sent["ts"]
            if sent.get("channel"):
                body["channel"] = sent["channel"]
        _request("POST", self.url, body, self.token)


class WebhookTarget:
    name = "webhook"

    def __init__(self, url: str, base_url: str | None, token: str | None = None) -> None:
        self.url, self.base_url, self.token = url, base_url, token

    def open(self, incident: Incident) -> dict[str, Any]:
        body = {"event": "incident.opened", "incident": incident.public(self.base_url)}
        _request("POST", self.url, body, self.token)
        return {}

    def resolve(self, incident: Incident, sent: dict[str, Any]) -> None:
        body = {"event": "incident.resolved", "incident": incident.public(self.base_url)}
        _request("POST", self.url, body, self.token)


class GrafanaAnnotations:
    """Grafana's annotations HTTP API (``/api/annotations``), with a service-account token."""

    name = "grafana"

    def __init__(
        self,
        url: str,
        token: str,
        dashboard_uid: Callable[[Incident], str],
        panel_id: int = 1,
        base_url: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token, self.dashboard_uid, self.panel_id = token, dashboard_uid, panel_id
        self.base_url = base_url

    def _tags(self, incident: Incident, resolved: bool) -> list[str]:
        tags = ["gpuslo", "incident", f"slo:{incident.slo}"]
        if incident.service:
            tags.append(f"service:{incident.service}")
        causes = incident.causes()
        if causes:
            tags.append(f"cause:{causes[0]['kind']}")
        if resolved:
            tags.append("resolved")
        return tags

    def _text(self, incident: Incident) -> str:
        text = incident.headline()
        if self.base_url:
            text += f' <a href="{page_url(self.base_url, incident.id)}">incident</a>'
        return text

    def open(self, incident: Incident) -> dict[str, Any]:
        at = int(incident.started * 1000)
        body: dict[str, Any] = {"dashboardUID": self.dashboard_uid(incident)}
        if self.panel_id:
            body["panelId"] = self.panel_id
        body |= {
            "time": at,
            "timeEnd": at,
            "tags": self._tags(incident, False),
            "text": self._text(incident),
        }
        answer = _request("POST", f"{self.url}/api/annotations", body, self.token)
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise NotifyError(f"Grafana answered without an annotation id: {answer!r}"[:300])
        return {"id": answer["id"]}

    def resolve(self, incident: Incident, sent: dict[str, Any]) -> None:
        if "id" not in sent:
            raise NotifyError("no annotation id to update")
        body = {
            "timeEnd": int((incident.resolved or time.time()) * 1000),
            "tags": self._tags(incident, True),
            "text": self._text(incident),
        }
        _request("PATCH", f"{self.url}/api/annotations/{int(sent['id'])}", body, self.token)


def _secret(path: str, base: Path, what: str) -> str:
    file = Path(path) if Path(path).is_absolute() else base / path
    try:
        text = file.read_text().strip()
    except OSError as err:
        raise ValueError(f"{what} {file}: {err.strerror}") from None
    if not text:
        raise ValueError(f"{what} {file} is empty")
    return text


def _endpoint(ep: Endpoint, base: Path, what: str) -> tuple[str, str | None]:
    url = ep.url or _secret(ep.url_file or "", base, f"{what}.url_file")
    token = _secret(ep.token_file, base, f"{what}.token_file") if ep.token_file else None
    return url, token


def targets(
    settings: IncidentSettings, policy_path: str | Path, dashboard_uid: Callable[[Incident], str]
) -> list[Target]:
    """The configured targets; secret files (relative to the policy file) are read now, and a
    missing one is a ValueError naming it."""
    base = Path(policy_path).parent
    out: list[Target] = []
    if settings.chat is not None:
        url, token = _endpoint(settings.chat, base, "incidents.chat")
        out.append(ChatTarget(url, settings.external_url, token))
    if settings.webhook is not None:
        url, token = _endpoint(settings.webhook, base, "incidents.webhook")
        out.append(WebhookTarget(url, settings.external_url, token))
    if settings.grafana is not None:
        g: GrafanaTarget = settings.grafana
        token = _secret(g.token_file, base, "incidents.grafana.token_file")
        fixed = g.dashboard_uid
        out.append(
            GrafanaAnnotations(
                g.url,
                token,
                (lambda _i: fixed) if fixed else dashboard_uid,
                g.panel_id,
                settings.external_url,
            )
        )
    return out


class Notifier:
    """One thread sending each incident's message and update to every target, once each."""

    def __init__(
        self,
        store: IncidentStore,
        targets: Sequence[Target],
        metrics: IncidentMetrics | None = None,
        size: int = 10_000,
        retries: Sequence[float] = RETRIES,
    ) -> None:
        self.store, self.targets, self.metrics = store, list(targets), metrics
        self.retries = tuple(retries)
        self._queue: queue.Queue[str | None] = queue.Queue(size)
        self._thread: threading.Thread | None = None
        self._error = ""  # the last failure (the notifier thread's own)

    def enqueue(self, ident: str) -> None:
        if not self.targets:
            return
        try:
            self._queue.put_nowait(ident)
        except queue.Full:  # the incident keeps its unsent state; a restart resends
            log.warning("notification queue full: incident %s not announced now", ident)

    def start(self) -> Notifier:
        if self.targets and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="incident-notify", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            ident = self._queue.get()
            if ident is None:
                return
            try:
                self.send(ident)
            except Exception:
                log.exception("notifying incident %s failed", ident)

    def send(self, ident: str) -> None:
        """Whatever the incident still owes its targets: the message, then the update."""
        incident = self.store.get(ident)
        if incident is None or incident.explanation_status == "pending":
            return  # the explanation worker enqueues it when done
        for target in self.targets:
            sent = dict(incident.deliveries.get(target.name, {}))
            if "opened" not in sent:
                ref = self._try(target, "open", partial(target.open, incident))
                if ref is None:
                    self.store.delivered(ident, target.name, {"error": self._error})
                    continue
                sent = {**ref, "opened": time.time()}
                self.store.delivered(ident, target.name, sent)
            if incident.status == "resolved" and "resolved" not in sent:
                done = self._try(target, "resolve", partial(target.resolve, incident, sent))
                if done is not None:
                    sent = {**sent, "resolved": time.time()}
                    sent.pop("error", None)
                else:
                    sent = {**sent, "error": self._error}
                self.store.delivered(ident, target.name, sent)

    def _try(self, target: Target, what: str, call: Callable[[], Any]) -> dict[str, Any] | None:
        err: Exception | None = None
        for pause in (0.0, *self.retries):
            time.sleep(pause)
            try:
                result = call()
            except NotifyError as e:
                err = e
                continue
            if self.metrics is not None:
                self.metrics.notifications.labels(target.name, "sent").inc()
            return dict(result or {})
        self._error = str(err)
        log.warning("incident notification to %s (%s) failed: %s", target.name, what, err)
        if self.metrics is not None:
            self.metrics.notifications.labels(target.name, "failed").inc()
        return None
