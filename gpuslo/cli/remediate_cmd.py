"""``gpuslo remediate``: validate remediation policies and run the Alertmanager webhook hook."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError
from gpuslo.foundation import conventions as c

EPILOG = """\
examples:
  gpuslo remediate validate policy.yaml
  gpuslo remediate serve --policy policy.yaml --journal /var/lib/gpuslo/journal.db \\
      --token-file /etc/gpuslo/token --actuator kubernetes
  gpuslo remediate serve --policy policy.yaml --dry-run     # decide and record, never act

Every page (severity=page with an slo label) becomes an incident, explained at its startsAt
(needs settings.prometheus and settings.slo_specs) and sent to settings.incidents' chat
webhook, generic webhook and Grafana: GET /v1/incidents, /incidents/ID (docs/incidents.md).

Alertmanager receiver:
  receivers:
    - name: gpuslo
      webhook_configs:
        - url: http://gpuslo-remediate:9836/v1/alerts
          send_resolved: true        # needed for reverts
          http_config: {authorization: {credentials_file: /etc/alertmanager/gpuslo-token}}
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "remediate",
        help="act on burning SLO budgets from Alertmanager webhooks",
        description="Receive Alertmanager webhooks and act within policy bounds: scale a "
        "serving pool, shift traffic to a CPU fallback, revert when the alert resolves. Every "
        "decision is written to a SQLite journal before and after acting.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = p.add_subparsers(dest="remediate_command", metavar="SUBCOMMAND", required=True)
    v = rsub.add_parser("validate", help="check a policy file; print every problem")
    v.add_argument("policy", metavar="FILE")
    v.set_defaults(func=validate)
    s = rsub.add_parser("serve", help="run the webhook service")
    s.add_argument("--policy", required=True, metavar="FILE", help="remediation policy (YAML)")
    s.add_argument(
        "--listen",
        default=f"127.0.0.1:{c.REMEDIATION_DEFAULT_PORT}",
        metavar="HOST:PORT",
        help="address to serve on (default: %(default)s)",
    )
    s.add_argument(
        "--journal",
        default="gpuslo-remediation.db",
        type=Path,
        metavar="PATH",
        help="SQLite journal of every decision (default: %(default)s)",
    )
    s.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="bearer token required on /v1/* (or set GPUSLO_REMEDIATE_TOKEN)",
    )
    s.add_argument("--tls-cert", type=Path, metavar="PATH", help="serve HTTPS with this cert")
    s.add_argument("--tls-key", type=Path, metavar="PATH", help="key of --tls-cert")
    s.add_argument(
        "--client-ca", type=Path, metavar="PATH", help="require client certificates (mTLS)"
    )
    s.add_argument(
        "--actuator",
        choices=("log", "twin", "kubernetes"),
        default="log",
        help="what to act on: log (record only), twin (the digital twin), kubernetes "
        "(default: %(default)s)",
    )
    s.add_argument("--twin-url", metavar="URL", help="the twin's API, for --actuator twin")
    s.add_argument("--dry-run", action="store_true", help="decide and record, never act")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    s.set_defaults(func=serve)


def validate(args: argparse.Namespace) -> int:
    from gpuslo.remediation.policy import load_policy

    spec = load_policy(args.policy)
    print(f"{len(spec.policies)} polic{'y' if len(spec.policies) == 1 else 'ies'} valid")
    return 0


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            token: str = Path(args.token_file).read_text().strip()
        except OSError as err:
            raise UsageError(f"--token-file {args.token_file}: {err.strerror}") from None
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        return token
    env: str | None = os.environ.get("GPUSLO_REMEDIATE_TOKEN")
    return env or None


def _actuator(args: argparse.Namespace) -> Any:
    from gpuslo.remediation.actuators import LogActuator, TwinActuator

    if args.actuator == "log":
        return LogActuator()
    if args.actuator == "twin":
        if not args.twin_url:
            raise UsageError("--actuator twin needs --twin-url")
        return TwinActuator(args.twin_url)
    from gpuslo.remediation.kube import KubernetesActuator

    return KubernetesActuator.from_environment()


def _incidents(spec: Any, policy_path: Path, journal: Any, metrics: Any) -> Any:
    """The incident service of the policy's settings (None when switched off)."""
    from gpuslo.remediation.incidents import Explainer, Incidents, IncidentStore
    from gpuslo.remediation.notify import Notifier, targets

    settings = spec.settings
    if not settings.incidents.enabled:
        return None
    store = IncidentStore(journal)
    explainer = (
        Explainer.from_settings(settings, policy_path)
        if settings.prometheus and settings.slo_specs
        else None
    )
    incidents = Incidents(store, settings.incidents, metrics.registry, explain=explainer)

    def uid(incident: Any) -> str:
        from gpuslo.remediation.incidents import dashboard_uid

        if explainer is not None:
            return explainer.dashboard_uid(incident.slo, incident.service)
        return dashboard_uid(incident.slo, incident.service, False)

    try:
        sinks = targets(settings.incidents, policy_path, uid)
    except ValueError as err:
        raise UsageError(f"{policy_path}: settings.{err}") from None
    incidents.notifier = Notifier(store, sinks, incidents.metrics)
    queued = incidents.resume()
    if queued:
        logging.getLogger(__name__).info("explaining %d incidents left from before", queued)
    return incidents


def serve(args: argparse.Namespace) -> int:
    from gpuslo.remediation.engine import CauseCheck, DataCheck, Remediator
    from gpuslo.remediation.journal import Journal
    from gpuslo.remediation.policy import load_policy
    from gpuslo.remediation.server import Hook, Metrics, tls_context

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = load_policy(args.policy)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.client_ca is not None and args.tls_cert is None:
        raise UsageError("--client-ca needs --tls-cert and --tls-key")
    token = _token(args)
    if token is None:
        logging.getLogger(__name__).warning(
            "no bearer token: anyone who can reach %s can trigger actions", args.listen
        )
    tls = tls_context(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    metrics = Metrics()
    try:
        journal = Journal(args.journal)
    except Exception as err:  # sqlite3.Error and OSError: a path the user gave
        raise UsageError(f"--journal {args.journal}: {err}") from None
    settings = spec.settings
    remediator = Remediator(
        spec,
        journal,
        _actuator(args),
        data_check=DataCheck(settings.prometheus) if settings.prometheus else None,
        cause_check=CauseCheck.from_settings(settings, args.policy)
        if settings.prometheus and settings.slo_specs
        else None,
        dry_run=True if args.dry_run else None,
        on_outcome=metrics.outcome,
    )
    for o in remediator.resume():
        logging.getLogger(__name__).info(
            "resumed %s after restart: %s %s", o.policy, o.decision, o.reason
        )
    incidents = _incidents(spec, args.policy, journal, metrics)
    try:
        hook = Hook(remediator, metrics, host, int(port), token=token, tls=tls, incidents=incidents)
    except OSError as err:
        raise UsageError(f"cannot listen on {args.listen}: {err.strerror}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hook.start()
    print(f"gpuslo remediate: serving on {host}:{hook.port}", flush=True)
    try:
        stop.wait()
    finally:
        hook.stop()
        journal.close()
    return 0
