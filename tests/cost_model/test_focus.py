"""FOCUS 1.3 rows from the chargeback report: tenants' allocated charges, the unallocated
idle and unattributed portions, and the column checks that refuse what FOCUS does not allow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuslo.cost_model.allocation import IDLE, NO_TRAFFIC, UNATTRIBUTED
from gpuslo.cost_model.focus import COLUMNS, FocusError, focus_rows, validate, write_focus

START = datetime(2026, 5, 31, 22, 0, tzinfo=UTC).timestamp()
END = datetime(2026, 6, 1, 2, 0, tzinfo=UTC).timestamp()
TABLE = [
    {
        "model": "llama",
        "tenant": "acme",
        "allocated_dollars": 2.5,
        "input_tokens": 1e6,
        "output_tokens": 5e5,
        "requests": 100.0,
    },
    {
        "model": "llama",
        "tenant": "globex",
        "allocated_dollars": 1.25,
        "input_tokens": 0.0,
        "output_tokens": 0.0,
        "requests": 50.0,
    },
    {"model": "mistral", "tenant": NO_TRAFFIC, "allocated_dollars": 0.75},
    {"model": UNATTRIBUTED, "tenant": "", "allocated_dollars": 0.1},
    {"model": IDLE, "tenant": "", "allocated_dollars": 1 / 3},
]


def test_each_tenant_row_is_an_allocated_charge_of_its_model() -> None:
    rows = focus_rows(TABLE, START, END, "USD")
    acme = rows[0]
    assert acme["BilledCost"] == acme["EffectiveCost"] == acme["ListCost"] == "2.5"
    assert acme["ContractedCost"] == "2.5"
    assert acme["SubAccountId"] == "acme" and acme["ResourceId"] == "llama"
    assert acme["AllocatedResourceId"] == "llama/acme" and acme["AllocatedMethodId"]
    assert acme["ConsumedQuantity"] == "1500000" and acme["ConsumedUnit"] == "Tokens"
    assert acme["ChargeCategory"] == "Usage" and acme["ChargeClass"] is None
    # the charge period is the report's window; the billing period the UTC month it starts in
    assert (acme["ChargePeriodStart"], acme["ChargePeriodEnd"]) == (
        "2026-05-31T22:00:00Z",
        "2026-06-01T02:00:00Z",
    )
    assert (acme["BillingPeriodStart"], acme["BillingPeriodEnd"]) == (
        "2026-05-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
    )
    assert rows[1]["ConsumedQuantity"] is None  # no tokens: no consumed quantity


def test_idle_unattributed_and_untrafficked_cost_is_not_allocated() -> None:
    rows = focus_rows(TABLE, START, END, "USD")
    for row in rows[2:]:
        assert row["AllocatedResourceId"] is None and row["AllocatedMethodId"] is None
        assert row["SubAccountId"] is None
    assert rows[3]["ResourceId"] is None and rows[4]["ResourceId"] is None
    assert rows[4]["BilledCost"] == "0.3333333333"  # a decimal, not binary noise
    total = sum(float(r["BilledCost"]) for r in rows)
    assert total == pytest.approx(sum(r["allocated_dollars"] for r in TABLE), abs=1e-9)


def test_every_mandatory_column_is_present() -> None:
    (row,) = focus_rows(TABLE[:1], START, END, "EUR")
    mandatory = {c.name for c in COLUMNS if c.level == "Mandatory"}
    assert mandatory <= set(row)
    assert {
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "ServiceName",
        "HostProviderName",
        "ServiceProviderName",
    } <= mandatory


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BillingPeriodStart": "2026-05-01 00:00:00"}, "ISO 8601"),
        ({"ChargePeriodEnd": "2026-06-01T02:00:00+00:00"}, "ISO 8601"),
        ({"BilledCost": "1e3"}, "decimal"),
        ({"BilledCost": None}, "null"),
        ({"BillingCurrency": "usd"}, "ISO 4217"),
        ({"ChargeCategory": "Compute"}, "not one of"),
        ({"Tags": "[1]"}, "JSON object"),
        ({"Colour": "x"}, "not a FOCUS column"),
        ({"ChargePeriodStart": "2026-06-01T03:00:00Z"}, "before"),
        ({"AllocatedResourceId": None}, "go together"),
    ],
)
def test_rows_breaking_a_column_definition_are_refused(change: dict, message: str) -> None:
    (row,) = focus_rows(TABLE[:1], START, END, "USD")
    with pytest.raises(FocusError, match=message):
        validate([{**row, **change}])
    without = {k: v for k, v in row.items() if k != "ServiceName"}
    with pytest.raises(FocusError, match="missing mandatory"):
        validate([without])


def test_the_export_is_written_in_focus_column_order(tmp_path: Path) -> None:
    import pandas as pd

    csv, parquet = write_focus(tmp_path, focus_rows(TABLE, START, END, "USD"))
    frame = pd.read_parquet(parquet)
    assert list(frame.columns) == [c.name for c in COLUMNS]
    assert len(pd.read_csv(csv)) == len(TABLE)


def _history(path: Path, start: int, minutes: int = 20) -> None:
    """One H100 held by one llama pod; acme sends 3 requests/s, globex 1 (OpenMetrics)."""
    times = range(start, start + minutes * 60, 15)
    series = {
        "gpuslo_gpu_up": ('{UUID="GPU-1",Hostname="node-1"}', lambda t: 1),
        "gpuslo_gpu_pod_info": (
            '{UUID="GPU-1",Hostname="node-1",namespace="inf",pod="llama-0"}',
            lambda t: 1,
        ),
    }
    lines = []
    for name, (labels, value) in series.items():
        lines.append(f"# TYPE {name} gauge")
        lines += [f"{name}{labels} {value(t)} {t}" for t in times]
    lines.append("# TYPE gen_ai_server_requests counter")
    for tenant, rate in (("acme", 3), ("globex", 1)):
        labels = (
            f'{{model="llama",namespace="inf",pod="llama-0",tenant="{tenant}",outcome="success"}}'
        )
        lines += [f"gen_ai_server_requests_total{labels} {rate * (t - start)} {t}" for t in times]
    path.write_text("\n".join(lines) + "\n# EOF\n")


@pytest.mark.component
def test_the_chargeback_command_writes_valid_focus_rows(tmp_path: Path) -> None:
    import pandas as pd

    from tests.conftest import H100_CATALOG, need, run_gpuslo

    need("promtool")
    start = 1_790_000_000
    _history(tmp_path / "history.om", start)
    (tmp_path / "catalog.yaml").write_text(H100_CATALOG)
    out = tmp_path / "chargeback"
    proc = run_gpuslo(
        "cost",
        "report",
        str(tmp_path / "catalog.yaml"),
        "--data",
        str(tmp_path / "history.om"),
        "--from",
        str(start + 300),
        "--to",
        str(start + 900),
        "--step",
        "15s",
        "--focus",
        "-o",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out / "focus.csv", dtype=str, keep_default_na=False)
    validate([{k: (v or None) for k, v in row.items()} for row in frame.to_dict("records")])
    tenants = frame[frame["SubAccountId"] != ""].set_index("SubAccountId")
    acme, globex = (float(tenants.loc[t, "BilledCost"]) for t in ("acme", "globex"))
    assert acme / globex == pytest.approx(3.0, rel=0.05)  # the model split by requests
    report = json.loads((out / "report.json").read_text())
    assert frame["BilledCost"].astype(float).sum() == pytest.approx(
        report["summary"]["bill_dollars"], rel=1e-9
    )
    assert set(frame["ChargePeriodStart"]) == {"2026-09-21T14:18:20Z"}  # start + 300, UTC
