"""Alertmanager configuration for gpuslo's alerts: pages and tickets to their receivers,
every burn and no-data alert to the remediation hook with bearer auth, and tickets inhibited
while a page for the same SLO fires. OpenSLO ``AlertNotificationTarget``s become receivers,
routed the alerts of the policies that name them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from gpuslo.foundation.errors import SpecProblem
from gpuslo.slo_engine.model import SLO
from gpuslo.slo_engine.openslo import NotificationRoute
from gpuslo.slo_engine.rules import ALERT_NO_DATA, inhibit_rules

HOOK = "gpuslo-remediation"
RECEIVER_PREFIX = "openslo-"
_EMAIL = re.compile(r"^(mailto:)?([^@\s:/]+@[^@\s/]+\.[^@\s/]+)$")
_URL = re.compile(r"^https?://[^\s]+$")


def _regex_literal(name: str) -> str:
    """A name as a literal inside an Alertmanager (RE2) regex matcher."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)


def notification_receiver(
    name: str, target: str, smtp: bool = False
) -> tuple[dict[str, Any], str | None]:
    """The Alertmanager receiver for one OpenSLO AlertNotificationTarget, and a warning when
    its ``target`` names no place gpuslo can route to.

    - an email address (``oncall@example.com``, ``mailto:…``): ``email_configs`` (needs the
      global SMTP settings, ``--smtp-smarthost`` and ``--smtp-from``);
    - a Slack incoming-webhook URL (``https://hooks.slack.com/…``): ``slack_configs``;
    - ``pagerduty:<routing key>``: ``pagerduty_configs`` (Events API v2);
    - any other http(s) URL: ``webhook_configs`` (Alertmanager's webhook payload);
    - anything else (``email``, ``slack`` without an address): a receiver with no notifier,
      to fill in, and a warning.
    """
    receiver: dict[str, Any] = {"name": RECEIVER_PREFIX + name}
    email = _EMAIL.match(target)
    if email:
        if not smtp:
            return receiver, (
                f"email target {target!r}: give --smtp-smarthost and --smtp-from to send mail; "
                f"receiver {receiver['name']!r} has no notifier"
            )
        receiver["email_configs"] = [{"to": email.group(2), "send_resolved": True}]
    elif target.startswith("https://hooks.slack.com/"):
        receiver["slack_configs"] = [{"api_url": target, "send_resolved": True}]
    elif target.startswith("pagerduty:") and len(target) > len("pagerduty:"):
        key = target.removeprefix("pagerduty:")
        receiver["pagerduty_configs"] = [{"routing_key": key, "send_resolved": True}]
    elif _URL.match(target):
        receiver["webhook_configs"] = [{"url": target, "send_resolved": True}]
    else:
        return receiver, (
            f"target {target!r} is not an email address, a Slack webhook URL, "
            f"pagerduty:<routing key> or an http(s) URL; receiver {receiver['name']!r} has no "
            "notifier: fill it in"
        )
    return receiver, None


def notification_routing(
    routes: Sequence[NotificationRoute], smtp: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[SpecProblem]]:
    """(receivers, routes, warnings) for the OpenSLO notification targets: each policy's alerts
    (its SLOs and tiers) go to each of its targets, and keep routing to pages and tickets."""
    receivers: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    warnings: list[SpecProblem] = []
    for r in routes:
        if r.target not in receivers:
            receiver, warning = notification_receiver(r.target, r.address, smtp)
            receivers[r.target] = receiver
            if warning:
                warnings.append(SpecProblem(*r.source, "spec.target", warning, "warning"))
        if not r.slos or not r.tiers:
            continue
        out.append(
            {
                "receiver": RECEIVER_PREFIX + r.target,
                "matchers": [
                    f'slo=~"{"|".join(map(_regex_literal, r.slos))}"',
                    f'tier=~"{"|".join(map(_regex_literal, r.tiers))}"',
                ],
                "continue": True,
            }
        )
    return [receivers[k] for k in sorted(receivers)], out, warnings


def alertmanager_config(
    slos: Iterable[SLO],
    hook_url: str,
    token_file: str | None = None,
    pages_webhook: str | None = None,
    tickets_webhook: str | None = None,
    notifications: Sequence[NotificationRoute] = (),
    smtp: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole ``alertmanager.yml`` as data; ``notifications`` are the OpenSLO policies'
    targets (``openslo_routes``), ``smtp`` the global ``smtp_smarthost`` and ``smtp_from``."""
    slos = list(slos)
    extra_receivers, extra_routes, _ = notification_routing(notifications, bool(smtp))
    names = sorted({s.alert_name for s in slos} | {ALERT_NO_DATA})
    hook: dict[str, Any] = {"url": hook_url.rstrip("/") + "/v1/alerts", "send_resolved": True}
    if token_file:
        hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": token_file}}

    def receiver(name: str, url: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        if url:
            out["webhook_configs"] = [{"url": url, "send_resolved": True}]
        return out

    config: dict[str, Any] = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "service", "slo", "tier"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    # The hook sees every burn (its policies choose what to act on) and keeps
                    # routing: the humans still get the page or ticket.
                    "receiver": HOOK,
                    "matchers": [f'alertname=~"{"|".join(names)}"'],
                    "group_wait": "0s",
                    "group_interval": "1m",
                    "continue": True,
                },
                *extra_routes,
                {"receiver": "pages", "matchers": ['severity="page"'], "repeat_interval": "1h"},
                {
                    "receiver": "tickets",
                    "matchers": ['severity="ticket"'],
                    "repeat_interval": "12h",
                },
            ],
        },
        "receivers": [
            {"name": "default"},
            {"name": HOOK, "webhook_configs": [hook]},
            receiver("pages", pages_webhook),
            receiver("tickets", tickets_webhook),
            *extra_receivers,
        ],
        "inhibit_rules": inhibit_rules(slos),
    }
    if smtp:
        return {"global": dict(smtp), **config}
    return config
