"""The chargeback report as FOCUS 1.3 rows (FinOps Open Cost and Usage Specification, Cost and
Usage dataset), checked against the column definitions before they are written.

Each (model, tenant) row of the report is one *allocated charge* of the model's GPU cost
(FOCUS 1.3 "split cost allocation"): ``ResourceId`` is the model (the origin resource),
``AllocatedResourceId`` the tenant's part of it, ``AllocatedMethodId`` how it was split
(the tenant's share of the model's requests). Idle and unattributed cost are the unallocated
portion, so their allocation columns are null. Costs are at catalog list prices, so
``ListCost``, ``ContractedCost``, ``EffectiveCost`` and ``BilledCost`` are the same amount.
Tenants are sub-accounts (``SubAccountId``). Date/times are ISO 8601 UTC with a ``Z``;
amounts are decimals; the currency is an ISO 4217 code.

Column facts (name, feature level, type, nulls, allowed values) follow the FOCUS 1.3
column pages; the table below is ours.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .allocation import IDLE, NO_TRAFFIC, UNATTRIBUTED

FOCUS_VERSION = "1.3"
ALLOCATION_METHOD = "gpuslo-request-share"


@dataclass(frozen=True)
class Column:
    name: str
    level: str  # Mandatory | Conditional | Recommended
    kind: str  # String | Decimal | DateTime | JSON
    nullable: bool
    allowed: tuple[str, ...] = ()


COLUMNS: tuple[Column, ...] = (
    Column("AllocatedMethodDetails", "Recommended", "JSON", True),
    Column("AllocatedMethodId", "Conditional", "String", True),
    Column("AllocatedResourceId", "Conditional", "String", True),
    Column("AllocatedResourceName", "Conditional", "String", True),
    Column("AllocatedTags", "Conditional", "JSON", True),
    Column("BilledCost", "Mandatory", "Decimal", False),
    Column("BillingAccountId", "Mandatory", "String", False),
    Column("BillingAccountName", "Mandatory", "String", True),
    Column("BillingCurrency", "Mandatory", "String", False),
    Column("BillingPeriodEnd", "Mandatory", "DateTime", False),
    Column("BillingPeriodStart", "Mandatory", "DateTime", False),
    Column(
        "ChargeCategory",
        "Mandatory",
        "String",
        False,
        ("Usage", "Purchase", "Tax", "Credit", "Adjustment"),
    ),
    Column("ChargeClass", "Mandatory", "String", True, ("Correction",)),
    Column("ChargeDescription", "Mandatory", "String", True),
    Column(
        "ChargeFrequency", "Recommended", "String", False, ("One-Time", "Recurring", "Usage-Based")
    ),
    Column("ChargePeriodEnd", "Mandatory", "DateTime", False),
    Column("ChargePeriodStart", "Mandatory", "DateTime", False),
    Column("ConsumedQuantity", "Conditional", "Decimal", True),
    Column("ConsumedUnit", "Conditional", "String", True),
    Column("ContractedCost", "Mandatory", "Decimal", False),
    Column("EffectiveCost", "Mandatory", "Decimal", False),
    Column("HostProviderName", "Mandatory", "String", True),
    Column("InvoiceIssuerName", "Mandatory", "String", False),
    Column("ListCost", "Mandatory", "Decimal", False),
    Column(
        "PricingCategory",
        "Conditional",
        "String",
        True,
        ("Standard", "Dynamic", "Committed", "Other"),
    ),
    Column("ResourceId", "Conditional", "String", True),
    Column("ResourceName", "Conditional", "String", True),
    Column("ResourceType", "Conditional", "String", True),
    Column("ServiceCategory", "Mandatory", "String", False),
    Column("ServiceName", "Mandatory", "String", False),
    Column("ServiceProviderName", "Mandatory", "String", False),
    Column("SkuId", "Conditional", "String", True),
    Column("SubAccountId", "Conditional", "String", True),
    Column("SubAccountName", "Conditional", "String", True),
    Column("Tags", "Conditional", "JSON", True),
)
_BY_NAME = {col.name: col for col in COLUMNS}
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


class FocusError(ValueError):
    """A row that breaks a FOCUS column definition: which row, column and rule."""


@dataclass(frozen=True)
class Account:
    """Who bills: the provider running gpuslo, and the billing account the export is for."""

    provider: str = "gpuslo"
    host_provider: str | None = None  # default: the provider
    account_id: str = "gpuslo"
    account_name: str | None = None
    service_name: str = "GPU inference"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def billing_period(ts: float) -> tuple[float, float]:
    """The UTC calendar month holding ``ts``."""
    d = datetime.fromtimestamp(ts, UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def _money(value: Any) -> str:
    v = float(value or 0.0)
    if not math.isfinite(v):
        raise FocusError(f"cost is not a finite number: {value!r}")
    return format(Decimal(repr(v)).quantize(Decimal("0.0000000001")).normalize(), "f")


def focus_rows(
    table: Iterable[Mapping[str, Any]],
    start: float,
    end: float,
    currency: str,
    account: Account | None = None,
) -> list[dict[str, Any]]:
    """The report's rows (``cost_model.report.rows``) as FOCUS 1.3 rows for the charge period
    ``[start, end)``; the billing period is the UTC month ``start`` falls in."""
    account = account or Account()
    bp_start, bp_end = billing_period(start)
    out = []
    for row in table:
        model, tenant = str(row["model"]), str(row.get("tenant") or "")
        dollars = _money(row.get("allocated_dollars"))
        unallocated = model in (IDLE, UNATTRIBUTED)
        allocated = not unallocated and tenant not in ("", NO_TRAFFIC)
        tokens = float(row.get("input_tokens") or 0.0) + float(row.get("output_tokens") or 0.0)
        if model == IDLE:
            description = "GPU time no pod held (idle)"
        elif model == UNATTRIBUTED:
            description = "GPU and CPU time of pods serving no known model"
        elif allocated:
            description = f"GPU time of model {model}, tenant {tenant}'s share by requests"
        else:
            description = f"GPU time of model {model} with no tenant traffic"
        out.append(
            {
                "AllocatedMethodDetails": json.dumps(
                    {
                        "basis": "allocation",
                        "split": "share of the model's requests over the charge period",
                    }
                )
                if allocated
                else None,
                "AllocatedMethodId": ALLOCATION_METHOD if allocated else None,
                "AllocatedResourceId": f"{model}/{tenant}" if allocated else None,
                "AllocatedResourceName": tenant if allocated else None,
                "AllocatedTags": json.dumps({"tenant": tenant}) if allocated else None,
                "BilledCost": dollars,
                "BillingAccountId": account.account_id,
                "BillingAccountName": account.account_name,
                "BillingCurrency": currency,
                "BillingPeriodEnd": _iso(bp_end),
                "BillingPeriodStart": _iso(bp_start),
                "ChargeCategory": "Usage",
                "ChargeClass": None,
                "ChargeDescription": description,
                "ChargeFrequency": "Usage-Based",
                "ChargePeriodEnd": _iso(end),
                "ChargePeriodStart": _iso(start),
                "ConsumedQuantity": _money(tokens) if allocated and tokens else None,
                "ConsumedUnit": "Tokens" if allocated and tokens else None,
                "ContractedCost": dollars,
                "EffectiveCost": dollars,
                "HostProviderName": account.host_provider or account.provider,
                "InvoiceIssuerName": account.provider,
                "ListCost": dollars,
                "PricingCategory": "Standard",
                "ResourceId": None if unallocated else model,
                "ResourceName": None if unallocated else model,
                "ResourceType": None if unallocated else "Model",
                "ServiceCategory": "AI and Machine Learning",
                "ServiceName": account.service_name,
                "ServiceProviderName": account.provider,
                "SkuId": "gpu-time",
                "SubAccountId": tenant if allocated else None,
                "SubAccountName": tenant if allocated else None,
                "Tags": json.dumps({"gpuslo/model": model}) if not unallocated else None,
            }
        )
    validate(out)
    return out


def validate(rows: Iterable[Mapping[str, Any]]) -> None:
    """FocusError at the first value that breaks its column's definition: every Mandatory
    column present, non-null where nulls are not allowed, types and formats (ISO 8601 UTC
    date/times, decimals, ISO 4217 currency, JSON objects), allowed values."""
    for i, row in enumerate(rows):
        missing = [c.name for c in COLUMNS if c.level == "Mandatory" and c.name not in row]
        if missing:
            raise FocusError(f"row {i}: missing mandatory column(s) {', '.join(missing)}")
        for name, value in row.items():
            col = _BY_NAME.get(name)
            if col is None:
                if not name.startswith("x_"):
                    raise FocusError(f"row {i}: {name}: not a FOCUS column (custom ones start x_)")
                continue
            where = f"row {i}: {name}"
            if value is None:
                if not col.nullable:
                    raise FocusError(f"{where}: must not be null")
                continue
            if not isinstance(value, str):
                raise FocusError(f"{where}: must be written as text, got {type(value).__name__}")
            if col.kind == "DateTime" and not _DATETIME.match(value):
                raise FocusError(f"{where}: not an ISO 8601 UTC date/time YYYY-MM-DDTHH:mm:ssZ")
            if col.kind == "Decimal" and not _DECIMAL.match(value):
                raise FocusError(f"{where}: not a decimal number: {value!r}")
            if col.kind == "JSON":
                try:
                    if not isinstance(json.loads(value), dict):
                        raise ValueError
                except ValueError:
                    raise FocusError(f"{where}: not a JSON object") from None
            if col.allowed and value not in col.allowed:
                raise FocusError(f"{where}: {value!r} is not one of {', '.join(col.allowed)}")
            if name.endswith("Currency") and not _CURRENCY.match(value):
                raise FocusError(f"{where}: not an ISO 4217 currency code: {value!r}")
        for a, b in (
            ("BillingPeriodStart", "BillingPeriodEnd"),
            ("ChargePeriodStart", "ChargePeriodEnd"),
        ):
            if row[a] >= row[b]:
                raise FocusError(f"row {i}: {a} must be before {b}")
        if (row.get("AllocatedMethodId") is None) != (row.get("AllocatedResourceId") is None):
            raise FocusError(f"row {i}: AllocatedMethodId and AllocatedResourceId go together")


def write_focus(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """focus.csv and focus.parquet (every value as text, FOCUS column order)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=[c.name for c in COLUMNS])
    paths = [out / "focus.csv", out / "focus.parquet"]
    frame.to_csv(paths[0], index=False)
    frame.to_parquet(paths[1], index=False)
    return paths
