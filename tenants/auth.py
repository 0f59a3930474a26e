"""Who is asking: a bearer token (looked up by its SHA-256 in the tokens file) or a JWT
verified against the identity provider's JWKS.

JWT checks: the header's ``alg`` must be on the config's allowlist of asymmetric algorithms
(``none`` and every HMAC algorithm are refused before any key is touched, so a token signed
with the public key as an HMAC secret never verifies), the ``kid`` must name a key of the
JWKS whose type fits the algorithm, and the signature, ``exp`` (required), ``nbf``, ``iss``
and ``aud`` are checked by PyJWT with the configured leeway.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gpuslo.foundation.durations import parse_duration

from .config import JWT_ALGORITHMS, Jwt, Plane, token_identity

MAX_TOKEN_BYTES = 8192


class Unauthorized(Exception):
    """No usable credentials: 401 with a reason that says what was wrong, not whose."""


@dataclass(frozen=True)
class Principal:
    identity: str
    tenants: tuple[str, ...]
    method: str  # token | jwt


class JwksVerifier:
    """JWT verification against a JWKS file, re-read when the file changes."""

    def __init__(self, path: Path, cfg: Jwt) -> None:
        self.path = path
        self.cfg = cfg
        self.leeway = parse_duration(cfg.leeway)
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._keys: dict[str, Any] = {}
        try:
            self._load()
        except (ValueError, jwt.PyJWTError) as err:
            raise ValueError(f"{path}: not a usable JWKS: {err}") from None

    def _load(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        data = json.loads(self.path.read_text())
        keys = {}
        for jwk in jwt.PyJWKSet.from_dict(data).keys:
            if jwk.key_id is None:
                raise ValueError(f"{self.path}: every key needs a kid")
            keys[jwk.key_id] = jwk
        self._keys, self._mtime = keys, mtime

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed JWT") from None
        alg = header.get("alg")
        if alg not in self.cfg.algorithms or alg not in JWT_ALGORITHMS:
            raise Unauthorized("JWT algorithm not accepted")
        with self._lock:
            with contextlib.suppress(OSError, ValueError, jwt.PyJWTError):
                self._load()  # a broken rewrite of the file keeps the keys we had
            key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise Unauthorized("JWT signed by an unknown key")
        if key.algorithm_name is not None and key.algorithm_name != alg:
            raise Unauthorized("JWT algorithm does not fit its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.cfg.audience,
                issuer=self.cfg.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("JWT expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("JWT not valid yet") from None
        except jwt.PyJWTError:
            raise Unauthorized("JWT not accepted") from None
        return claims


class Authenticator:
    """Credentials to a principal and its tenants."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        cfg = plane.spec.auth.jwt
        self.jwks = (
            JwksVerifier(plane.jwks_path, cfg) if cfg is not None and plane.jwks_path else None
        )

    def principal(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("missing bearer token")
        if len(header) > MAX_TOKEN_BYTES:
            raise Unauthorized("credentials too long")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("expected Authorization: Bearer <token>")
        if credential.count(".") == 2 and self.jwks is not None:
            claims = self.jwks.verify(credential)
            identity = claims.get(self.jwks.cfg.identity_claim)
            if not isinstance(identity, str) or not identity:
                raise Unauthorized("JWT has no identity claim")
            method = "jwt"
        else:
            found = token_identity(self.plane.tokens, credential)
            if found is None:
                raise Unauthorized("invalid bearer token")
            identity, method = found, "token"
        tenants = self.plane.tenants_of(identity)
        if not tenants:
            raise Unauthorized("this identity has no tenant")
        return Principal(identity, tenants, method)
