"""``gpuslo tenants``: the tenant plane (per-tenant SLOs, costs, budgets and an isolated
Prometheus query API)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError
from gpuslo.foundation import conventions as c

EPILOG = f"""\
examples:
  gpuslo tenants token acme-ci                  # a new token; its hash goes in tokens.yaml
  gpuslo tenants validate tenants.yaml
  gpuslo tenants rules tenants.yaml -o rules/   # budget SLO + forecast alerts per tenant
  gpuslo tenants rewrite --tenant acme 'sum(rate(gen_ai_server_requests_total[5m]))'
  gpuslo tenants serve tenants.yaml --listen 0.0.0.0:{c.TENANTS_DEFAULT_PORT}

  curl -H "Authorization: Bearer $TOKEN" http://localhost:{c.TENANTS_DEFAULT_PORT}/v1/tenants/acme/slos
  curl -H "Authorization: Bearer $TOKEN" \\
      --data-urlencode 'query=sum(rate(gen_ai_server_requests_total[5m]))' \\
      http://localhost:{c.TENANTS_DEFAULT_PORT}/tenants/acme/api/v1/query

Every PromQL a tenant sends is parsed and each selector gets {c.LABEL_TENANT}="<tenant>";
what cannot be made safe is refused with a 4xx and the reason (docs/tenants.md).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tenants",
        help="the tenant plane: each tenant's SLOs, costs, budgets and an isolated query API",
        description="Serve each tenant its own SLOs, spend, unit costs and budget, and a "
        "Prometheus-compatible query API (for Grafana) that rewrites every query to the "
        "tenant's own series. Identity from hashed bearer tokens or JWTs (JWKS).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="tenants_command", metavar="SUBCOMMAND", required=True)
    v = tsub.add_parser(
        "validate",
        help="check a plane config and its tokens file",
        description="Check a TenantPlane config, the tokens file, JWKS, SLO specs and catalog "
        "it names: every problem as file:line:col: field: message.",
    )
    v.add_argument("config", metavar="CONFIG")
    v.set_defaults(func=validate)
    s = tsub.add_parser(
        "serve",
        help="run the tenant API",
        description="Serve the tenant API (see docs/tenants.md for the endpoints).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("config", metavar="CONFIG")
    s.add_argument(
        "--listen",
        default=f"127.0.0.1:{c.TENANTS_DEFAULT_PORT}",
        metavar="HOST:PORT",
        help="address to serve on (default: %(default)s)",
    )
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    s.set_defaults(func=serve)
    t = tsub.add_parser(
        "token",
        help="make a new bearer token and print its tokens-file entry",
        description="Print a new random token (give it to the tenant; it is not stored) and "
        "the tokens-file entry holding only its SHA-256.",
    )
    t.add_argument("identity", metavar="IDENTITY")
    t.set_defaults(func=token)
    h = tsub.add_parser(
        "hash-token",
        help="print the SHA-256 of a token read from stdin",
        description="Read a token from stdin and print the hex SHA-256 a tokens file stores.",
    )
    h.set_defaults(func=hash_token)
    r = tsub.add_parser(
        "rules",
        help="write each tenant's budget SLO and forecast alert as Prometheus rules",
        description="Write gpuslo-tenant-budgets.rules.yaml: a cost SLO per tenant with a "
        "budget (burn-rate alerts over the calendar month) and a forecast alert. They read the "
        "cost recording rules (gpuslo cost rules).",
    )
    r.add_argument("config", metavar="CONFIG")
    r.add_argument("-o", "--output", required=True, type=Path, metavar="DIR")
    r.set_defaults(func=rules)
    w = tsub.add_parser(
        "rewrite",
        help="show a query as the tenant API runs it (or why it is refused)",
        description="Print QUERY with the tenant matcher in every selector, or the refusal.",
    )
    w.add_argument("query", metavar="QUERY")
    w.add_argument("--tenant", required=True)
    w.add_argument("--label", default=c.LABEL_TENANT, help="tenant label (default: %(default)s)")
    w.set_defaults(func=rewrite)


def _plane(path: str) -> Any:
    from gpuslo.tenants.config import load_plane

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    return load_plane(path)


def validate(args: argparse.Namespace) -> int:
    from gpuslo.tenants.views import Views

    plane = _plane(args.config)
    views = Views(plane)
    slos = views.slos()  # SpecError: every problem with its place
    if plane.catalog_path is not None:
        views.catalog()
    if plane.jwks_path is not None:
        from gpuslo.tenants.auth import Authenticator

        try:
            Authenticator(plane)
        except (OSError, ValueError) as err:
            raise UsageError(str(err)) from None
    print(
        f"{args.config}: ok ({len(plane.spec.tenants)} tenants, {len(plane.spec.identities)} "
        f"identities, {len(plane.tokens)} tokens, {len(slos)} SLOs)"
    )
    return 0


def serve(args: argparse.Namespace) -> int:
    from gpuslo.tenants.server import TenantApi

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plane = _plane(args.config)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
    try:
        api = TenantApi(plane, host, int(port))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot start: {err}") from None
    api.views.slos()  # spec problems now, not on the first request
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    api.start()
    print(f"gpuslo tenants: serving on {host}:{api.port}", flush=True)
    try:
        stop.wait()
    finally:
        api.stop()
    return 0


def token(args: argparse.Namespace) -> int:
    from gpuslo.tenants.config import hash_token as digest
    from gpuslo.tenants.config import new_token

    secret = new_token()
    print(f"token (give it to {args.identity}; it is not stored anywhere): {secret}")
    print("tokens-file entry:")
    print(f"  - {{identity: {args.identity}, sha256: {digest(secret)}}}")
    return 0


def hash_token(args: argparse.Namespace) -> int:
    from gpuslo.tenants.config import hash_token as digest

    secret = sys.stdin.readline().strip()
    if not secret:
        raise UsageError("no token on stdin")
    print(digest(secret))
    return 0


def rules(args: argparse.Namespace) -> int:
    import yaml

    from gpuslo.foundation.output import prepare_output_dir, write_text
    from gpuslo.tenants.budget import rule_groups

    plane = _plane(args.config)
    groups = rule_groups(plane)
    if not groups:
        raise UsageError(f"{args.config}: no tenant has a budget")
    target = prepare_output_dir(args.output) / "gpuslo-tenant-budgets.rules.yaml"
    header = f"# Generated by gpuslo tenants rules from {Path(args.config).name}; do not edit.\n"
    write_text(target, header + yaml.safe_dump({"groups": groups}, sort_keys=False))
    print(target)
    return 0


def rewrite(args: argparse.Namespace) -> int:
    from gpuslo.tenants.promql import Refused, Scope, enforce

    try:
        print(enforce(args.query, Scope(args.tenant, args.label)))
    except Refused as err:
        print(f"gpuslo tenants: refused ({err.status}): {err.reason}", file=sys.stderr)
        return 1
    return 0
