"""Alertmanager webhook payloads (version 4), validated; a bad payload gets one clear reason."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PayloadError(ValueError):
    """The request body is not an Alertmanager v4 webhook payload."""


class _Model(BaseModel):
    # Alertmanager may add fields in later versions: keep what we know, ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Alert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1)

    def key(self, group_key: str) -> str:
        """Identity of one firing episode: the same alert, group and start, however often
        Alertmanager (or each replica of an HA pair) delivers it."""
        raw = "\0".join((group_key, self.fingerprint, self.startsAt.isoformat()))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def expression(self) -> str | None:
        """The PromQL behind the alert, from Prometheus's generator URL (``g0.expr``)."""
        query = parse_qs(urlparse(self.generatorURL).query)
        exprs = query.get("g0.expr")
        return exprs[0] if exprs else None


class Payload(_Model):
    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    alerts: list[Alert] = Field(min_length=1)


def parse_payload(body: bytes) -> Payload:
    """The payload, or PayloadError with the first problem (field path and message)."""
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"body is not JSON: {err}") from None
    try:
        return Payload.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise PayloadError(f"{where}: {first['msg']}") from None
