"""Alertmanager configuration for gpuslo's alerts: pages and tickets to their receivers,
every burn and no-data alert to the remediation hook with bearer auth, and tickets inhibited
while a page for the same SLO fires."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gpuslo.slo_engine.model import SLO
from gpuslo.slo_engine.rules import ALERT_NO_DATA, inhibit_rules

HOOK = "gpuslo-remediation"


def alertmanager_config(
    slos: Iterable[SLO],
    hook_url: str,
    token_file: str | None = None,
    pages_webhook: str | None = None,
    tickets_webhook: str | None = None,
) -> dict[str, Any]:
    """The whole ``alertmanager.yml`` as data."""
    slos = list(slos)
    names = sorted({s.alert_name for s in slos} | {ALERT_NO_DATA})
    hook: dict[str, Any] = {"url": hook_url.rstrip("/") + "/v1/alerts", "send_resolved": True}
    if token_file:
        hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": token_file}}

    def receiver(name: str, url: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        if url:
            out["webhook_configs"] = [{"url": url, "send_resolved": True}]
        return out

    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "slo", "tier"],
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
        ],
        "inhibit_rules": inhibit_rules(slos),
    }
