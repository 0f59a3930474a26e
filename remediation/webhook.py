"""Alertmanager webhook payloads (version 4), validated; a bad payload gets one clear reason.

Parsing is bounded: JSON nested deeper than ``MAX_DEPTH`` and numbers longer than
``MAX_NUMBER_CHARS`` characters are refused before the decoder recurses or converts them.

Every version-4 shape real senders produce is accepted: Alertmanager before 0.19 sends no
per-alert ``fingerprint`` (it is derived from the labels exactly as Alertmanager computes it,
see :func:`fingerprint`), and some relays drop the per-alert ``status`` (the group's ``status``
stands in).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from itertools import accumulate
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_DEPTH = 32  # an Alertmanager payload is 3 deep (payload > alerts > alert > labels)
MAX_NUMBER_CHARS = 64  # the only number Alertmanager sends is truncatedAlerts

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON string literal (escapes included); unterminated ones are left for the decoder.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class PayloadError(ValueError):
    """The request body is not an Alertmanager v4 webhook payload."""


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (prometheus/common ``model.LabelSet.Fingerprint``
    as ``%016x``): FNV-1a 64 over the label names in byte order, each name and each value
    followed by the separator byte 0xff. Lone surrogates (invalid UTF-8 that Go's decoder turns
    into U+FFFD) become U+FFFD here too."""
    h = _FNV_OFFSET
    pairs = sorted(
        (_SURROGATE.sub("\ufffd", k).encode(), _SURROGATE.sub("\ufffd", v).encode())
        for k, v in labels.items()
    )
    for name, value in pairs:
        for part in (name, value):
            for byte in part + b"\xff":
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


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

    @model_validator(mode="before")
    @classmethod
    def _derive_fingerprint(cls, data: Any) -> Any:
        # Alertmanager < 0.19 sends none: derive it from the labels, as Alertmanager does.
        if isinstance(data, dict) and data.get("fingerprint") in (None, ""):
            labels = data.get("labels")
            if isinstance(labels, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                return {**data, "fingerprint": fingerprint(labels)}
        return data

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

    @model_validator(mode="before")
    @classmethod
    def _alert_status_from_group(cls, data: Any) -> Any:
        # Relays that drop the per-alert status: the group's status is the alerts' status.
        if (
            isinstance(data, dict)
            and data.get("status") in ("firing", "resolved")
            and isinstance(data.get("alerts"), list)
        ):
            alerts = [
                {**a, "status": data["status"]}
                if isinstance(a, dict) and a.get("status") is None
                else a
                for a in data["alerts"]
            ]
            return {**data, "alerts": alerts}
        return data


def _number(text: str) -> NoReturn:
    raise PayloadError(f"number too long: {len(text)} characters (at most {MAX_NUMBER_CHARS})")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        _number(text)
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        _number(text)
    return float(text)


def _parse_constant(name: str) -> Any:
    raise PayloadError(f"body is not JSON: {name} is not a JSON value")


def json_depth(body: bytes) -> int:
    """How deep the brackets of ``body`` nest, outside string literals (C-speed passes: the
    strings are cut out, everything but brackets deleted, then a running sum)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(map(_STEP.__getitem__, brackets)))


def parse_payload(body: bytes) -> Payload:
    """The payload, or PayloadError with the first problem (field path and message)."""
    try:
        text = body.decode()  # Alertmanager sends UTF-8; the depth scan reads UTF-8 bytes
    except UnicodeDecodeError as err:
        raise PayloadError(f"body is not JSON: not UTF-8 ({err})") from None
    depth = json_depth(body)
    if depth > MAX_DEPTH:
        raise PayloadError(f"body is nested too deep: {depth} levels (at most {MAX_DEPTH})")
    try:
        data: Any = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as err:
        raise PayloadError(f"body is not JSON: {err}") from None
    except (RecursionError, ValueError) as err:  # a bound above (PayloadError), or any other
        if isinstance(err, PayloadError):
            raise
        raise PayloadError(f"body is not JSON: {err}") from None
    try:
        return Payload.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise PayloadError(f"{where}: {first['msg']}") from None
