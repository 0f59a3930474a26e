"""The plane config and tokens file (problems with their place), tokens stored only as
hashes, the budget's forecast, and the budget rules Prometheus loads."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gpuslo.foundation.errors import SpecError
from gpuslo.tenants.config import hash_token, load_plane, token_identity
from gpuslo.tenants.views import forecast, month_bounds
from tests.conftest import need, run_gpuslo
from tests.tenants.conftest import Keys, write_plane


def test_a_valid_plane_loads_with_hashed_tokens_only(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    plane = load_plane(files.config)
    assert plane.tenants_of("alpha-ci") == ("alpha",)
    text = (tmp_path / "tokens.yaml").read_text()
    for secret in files.tokens.values():
        assert secret not in text  # only hashes are stored
        assert token_identity(plane.tokens, secret) is not None
    assert token_identity(plane.tokens, "guess") is None


def test_problems_name_the_file_line_and_field(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    good = files.config.read_text()
    text = good.replace("tenants: [beta]}", "tenants: [gamma]}", 1)
    files.config.write_text(text)
    with pytest.raises(SpecError) as err:
        load_plane(files.config)
    (problem,) = err.value.problems
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "gamma" in t)
    assert problem.line == line and problem.field == "identities[1].tenants[0]"
    assert "no tenant 'gamma'" in problem.message
    files.config.write_text(good.replace("slo_step: 1m", "slo_step: often"))
    with pytest.raises(SpecError) as err:
        load_plane(files.config)
    (problem,) = err.value.problems
    assert problem.field == "slo_step" and problem.line == 6


def test_a_plaintext_token_in_the_tokens_file_is_an_error(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    (tmp_path / "tokens.yaml").write_text(
        "apiVersion: gpuslo/v1\nkind: TenantTokens\ntokens:\n"
        "  - {identity: alpha-ci, sha256: alpha-token-0123456789}\n"
    )
    with pytest.raises(SpecError) as err:
        load_plane(files.config)
    (problem,) = err.value.problems
    assert problem.line == 4 and problem.field == "tokens[0].sha256"


def test_the_cli_validates_and_prints_one_line_per_problem(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    ok = run_gpuslo("tenants", "validate", str(files.config))
    assert ok.returncode == 0 and "2 tenants" in ok.stdout, ok.stderr
    files.config.write_text(files.config.read_text().replace("kind: TenantPlane", "kind: Nope"))
    bad = run_gpuslo("tenants", "validate", str(files.config))
    assert bad.returncode == 1 and "tenants.yaml:2:" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_new_token_is_printed_once_with_its_hash() -> None:
    out = run_gpuslo("tenants", "token", "acme-ci").stdout
    secret = out.split(": ", 1)[1].splitlines()[0].strip()
    assert f"sha256: {hash_token(secret)}" in out
    assert run_gpuslo("tenants", "token", "acme-ci").stdout != out  # a fresh one each time


def test_the_forecast_names_the_day_the_budget_runs_out() -> None:
    now = datetime(2026, 6, 10, tzinfo=UTC).timestamp()  # 9 days into June
    start, end = month_bounds(now)
    f = forecast(budget=300.0, spent=180.0, start=start, end=end, now=now)
    # $20/day: $180 after 9 days, $300 after 15 days, i.e. on 16 June at 00:00
    assert f["rate_per_hour"] == pytest.approx(20 / 24)
    assert f["projected_month_spend"] == pytest.approx(600.0)
    assert f["exhausted_on_day"] == 16 and f["exhausted_at"] == "2026-06-16T00:00:00Z"
    slow = forecast(budget=300.0, spent=90.0, start=start, end=end, now=now)
    assert slow["exhausted_on_day"] is None and not slow["over_budget"]


@pytest.mark.component
def test_budget_rules_are_valid_prometheus_rules(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys, tenant_budget=720.0)
    result = run_gpuslo("tenants", "rules", str(files.config), "-o", str(tmp_path / "rules"))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "rules" / "gpuslo-tenant-budgets.rules.yaml"
    check = subprocess.run([need("promtool"), "check", "rules", str(path)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
    groups = yaml.safe_load(path.read_text())["groups"]
    text = path.read_text()
    assert 'gpuslo:tenant_cost:dollars_per_second{tenant="alpha"}' in text
    assert "beta" not in text  # beta has no budget
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    forecast_alert = next(r for r in alerts if r["alert"] == "GpusloTenantBudgetForecast")
    assert forecast_alert["labels"]["tenant"] == "alpha"
    assert "> 720" in forecast_alert["expr"]
    # $720 a month spread over 30 days is $1/h: the cost SLO's slices are bad above it
    assert any("> bool 1" in r.get("expr", "") for g in groups for r in g["rules"])


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\xff\xfe\x80 binary", b"[" * 10_000, b"apiVersion: gpuslo/v1\nkind: TenantPlane\n"],
)
def test_bad_plane_files_are_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(content)
    out = run_gpuslo("tenants", "validate", str(path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert all(line.startswith(str(path)) for line in out.stderr.strip().splitlines())


def test_a_broken_jwks_is_one_line(tmp_path: Path, keys: Keys) -> None:
    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    (tmp_path / "jwks.json").write_text('{"keys": [{"kty": "RSA"}]}')
    out = run_gpuslo("tenants", "validate", str(files.config))
    assert out.returncode == 2 and "jwks.json: not a usable JWKS" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_remediation_policy_can_act_on_the_budget_forecast(tmp_path: Path, keys: Keys) -> None:
    from gpuslo.remediation.policy import load_policy
    from gpuslo.tenants.budget import forecast_rules

    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    (rule,) = forecast_rules(load_plane(files.config))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: gpuslo/v1\nkind: RemediationPolicy\npolicies:\n"
        "  - name: alpha-overspend\n"
        "    match: {alertname: GpusloTenantBudgetForecast, tenant: alpha}\n"
        "    action: {notify_only: {}}\n    cooldown: 6h\n"
    )
    (p,) = load_policy(policy).policies
    assert p.matches({"alertname": rule["alert"], **rule["labels"]})
    assert not p.matches({"alertname": rule["alert"], **rule["labels"], "tenant": "beta"})


def test_serve_answers_and_stops_cleanly_on_sigterm(tmp_path: Path, keys: Keys) -> None:
    import json
    import signal
    import sys
    import urllib.request

    from gpuslo.foundation.promlab import free_port
    from tests.conftest import wait_http

    files = write_plane(tmp_path, "http://127.0.0.1:9", keys)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpuslo",
            "tenants",
            "serve",
            str(files.config),
            f"--listen=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/whoami",
            headers={"Authorization": f"Bearer {files.tokens['beta-ci']}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.load(resp) == {"identity": "beta-ci", "tenants": ["beta"], "via": "token"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert b"serving on 127.0.0.1:" in out
