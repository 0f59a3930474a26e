"""The tenant plane's files: the plane config (Prometheus, SLO specs, catalog, identities,
tenants and their budgets) and the bearer tokens file (SHA-256 hashes, never the tokens).

apiVersion: gpuslo/v1
kind: TenantPlane
prometheus: http://prometheus:9090
slo_specs: [slos.yaml]                # relative to this file
catalog: catalog.yaml
auth:
  tokens: tokens.yaml
  jwt: {jwks: jwks.json, issuer: https://idp.example/, audience: gpuslo-tenants}
identities:
  - {name: acme-ci, tenants: [acme]}
tenants:
  - {name: acme, budget: {monthly: 5000}}

Validated like every gpuslo spec: each problem as ``file:line:col: field: message``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from gpuslo.foundation import conventions as c
from gpuslo.foundation.errors import SpecError, SpecProblem
from gpuslo.foundation.specmodel import DNS_LABEL, Duration, FrozenStrict
from gpuslo.foundation.yamlpos import load_single, problem_at

# Asymmetric algorithms only: an HMAC key would be a shared secret in a public JWKS, and a
# verifier that accepts both families can be fooled into HMAC-verifying with the public key.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_HEX64 = r"^[0-9a-f]{64}$"


class Jwt(FrozenStrict):
    """JWTs signed by an identity provider, verified against its keys (a JWKS file)."""

    jwks: str = Field(description="JWKS file (JSON), relative to the config")
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: list[Literal[JWT_ALGORITHMS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["RS256", "ES256"], min_length=1
    )
    identity_claim: str = Field(default="sub", min_length=1)
    leeway: Duration = "30s"


class Auth(FrozenStrict):
    tokens: str | None = Field(default=None, description="tokens file, relative to the config")
    jwt: Jwt | None = None


class Identity(FrozenStrict):
    """Who a credential belongs to (a token's identity, or a JWT's identity claim), and the
    tenants it may read."""

    name: str = Field(min_length=1, max_length=256)
    tenants: list[str] = Field(min_length=1)


class Budget(FrozenStrict):
    """A monthly spend budget: becomes a cost SLO (burn alerts) and a forecast alert."""

    monthly: float = Field(gt=0, description="currency units per calendar month (UTC)")
    objective: float = Field(
        default=90.0,
        gt=0,
        lt=100,
        description="% of the month's time slices the spend rate must stay under budget/month",
    )
    forecast_window: Duration = Field(
        default="6h", description="the recent spend rate the forecast alert extrapolates"
    )


class Tenant(FrozenStrict):
    name: str = Field(min_length=1, max_length=63)
    slos: list[str] | None = Field(
        default=None, description="the SLO names that apply to this tenant (default: all)"
    )
    budget: Budget | None = None


class PlaneFile(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["TenantPlane"]
    prometheus: str = Field(pattern=r"^https?://")
    tenant_label: str = Field(default=c.LABEL_TENANT, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    scope_org_id: bool = Field(
        default=False, description="send X-Scope-OrgID: <tenant> (Mimir, Cortex)"
    )
    slo_specs: list[str] = Field(default_factory=list)
    catalog: str | None = None
    slo_step: Duration = "5m"
    cost_step: Duration = "5m"
    cache: Duration = Field(default="1m", description="how long SLO and cost answers are reused")
    auth: Auth
    identities: list[Identity] = Field(min_length=1)
    tenants: list[Tenant] = Field(min_length=1)


class TokenEntry(FrozenStrict):
    identity: str = Field(min_length=1, max_length=256)
    sha256: str = Field(pattern=_HEX64, description="hex SHA-256 of the token")


class TokensFile(FrozenStrict):
    apiVersion: Literal["gpuslo/v1"]
    kind: Literal["TenantTokens"]
    tokens: list[TokenEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Plane:
    """A validated plane config with its paths resolved."""

    path: Path
    spec: PlaneFile
    tokens: dict[str, str]  # sha256 hex -> identity
    jwks_path: Path | None
    slo_paths: tuple[Path, ...]
    catalog_path: Path | None

    def tenants_of(self, identity: str) -> tuple[str, ...]:
        for ident in self.spec.identities:
            if ident.name == identity:
                return tuple(ident.tenants)
        return ()

    def tenant(self, name: str) -> Tenant:
        return next(t for t in self.spec.tenants if t.name == name)


def hash_token(token: str) -> str:
    """The hex SHA-256 a tokens file stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return "gpuslo_" + secrets.token_urlsafe(32)


def token_identity(tokens: dict[str, str], token: str) -> str | None:
    """The identity of a presented token, compared in constant time over every entry."""
    digest = hash_token(token)
    found = None
    for stored, identity in tokens.items():
        if hmac.compare_digest(stored, digest):
            found = identity
    return found


def load_plane(path: str | Path) -> Plane:
    """Validate a plane config and the tokens file it names; SpecError lists every problem."""
    path = Path(path)
    spec, node = load_single(path, PlaneFile, "TenantPlane")
    problems: list[SpecProblem] = []
    base = path.parent

    tenant_names: dict[str, int] = {}
    for i, t in enumerate(spec.tenants):
        if not re.match(DNS_LABEL, t.name):
            problems.append(
                problem_at(path, node, ("tenants", i, "name"), "must be a DNS label (a-z, 0-9, -)")
            )
        if t.name in tenant_names:
            message = f"{t.name!r} is already tenants[{tenant_names[t.name]}]"
            problems.append(problem_at(path, node, ("tenants", i, "name"), message))
        tenant_names.setdefault(t.name, i)
    seen: dict[str, int] = {}
    for i, ident in enumerate(spec.identities):
        if ident.name in seen:
            message = f"{ident.name!r} is already identities[{seen[ident.name]}]"
            problems.append(problem_at(path, node, ("identities", i, "name"), message))
        seen.setdefault(ident.name, i)
        for j, name in enumerate(ident.tenants):
            if name not in tenant_names:
                problems.append(
                    problem_at(path, node, ("identities", i, "tenants", j), f"no tenant {name!r}")
                )
    if spec.auth.tokens is None and spec.auth.jwt is None:
        problems.append(problem_at(path, node, ("auth",), "give tokens, jwt or both"))

    def existing(rel: str, loc: tuple[str | int, ...]) -> Path | None:
        full = base / rel
        if not full.is_file():
            problems.append(problem_at(path, node, loc, f"no such file: {full}"))
            return None
        return full

    tokens: dict[str, str] = {}
    if spec.auth.tokens is not None:
        tpath = existing(spec.auth.tokens, ("auth", "tokens"))
        if tpath is not None:
            try:
                tokens = _load_tokens(tpath, seen)
            except SpecError as err:
                problems += err.problems
    jwks = existing(spec.auth.jwt.jwks, ("auth", "jwt", "jwks")) if spec.auth.jwt else None
    slo_paths = [existing(p, ("slo_specs", i)) for i, p in enumerate(spec.slo_specs)]
    catalog = existing(spec.catalog, ("catalog",)) if spec.catalog else None
    if problems:
        raise SpecError(problems)
    return Plane(path, spec, tokens, jwks, tuple(p for p in slo_paths if p is not None), catalog)


def _load_tokens(path: Path, identities: dict[str, int]) -> dict[str, str]:
    spec, node = load_single(path, TokensFile, "TenantTokens")
    out: dict[str, str] = {}
    problems = []
    for i, entry in enumerate(spec.tokens):
        if entry.sha256 in out:
            problems.append(
                problem_at(path, node, ("tokens", i, "sha256"), "the same token is listed twice")
            )
        if entry.identity not in identities:
            problems.append(
                problem_at(
                    path,
                    node,
                    ("tokens", i, "identity"),
                    f"no identity {entry.identity!r} in the plane config",
                )
            )
        out[entry.sha256] = entry.identity
    if problems:
        raise SpecError(problems)
    return out
