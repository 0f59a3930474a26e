"""The tenant API against a real Prometheus holding two tenants' series: every endpoint with
the other tenant's credentials, none, and forged or expired JWTs; a fuzz of PromQL; alpha
never sees anything of beta's, and refusals are 4xx with a reason, never 5xx."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuslo.foundation.promql import quote
from tests.tenants.conftest import (
    ALPHA_ONLY_METRIC,
    BETA_MARKERS,
    Live,
    call,
    claims,
)

pytestmark = pytest.mark.component

VIEWS = ["/v1/tenants/alpha/slos", "/v1/tenants/alpha/costs?days=1", "/v1/tenants/alpha/budget"]
API = [
    "/api/v1/query?query=up",
    "/api/v1/query_range?query=up&start=0&end=60&step=15",
    "/api/v1/series?match[]=up",
    "/api/v1/labels",
    "/api/v1/label/tenant/values",
    "/api/v1/label/__name__/values",
]
ENDPOINTS = VIEWS + ["/tenants/alpha" + p for p in API]


def assert_no_beta(text: str) -> None:
    for marker in BETA_MARKERS:
        assert marker not in text, f"beta's {marker!r} in an answer to alpha: {text[:500]}"


def assert_refusal(status: int, body: str, *codes: int) -> None:
    assert status in codes, (status, body)
    doc = json.loads(body)
    assert doc["status"] == "error" and doc["error"], doc


def series_of(body: str) -> list[dict[str, str]]:
    data = json.loads(body)["data"]
    if isinstance(data, dict):
        return [r.get("metric", {}) for r in data.get("result", []) if isinstance(r, dict)]
    return [d for d in data if isinstance(d, dict)]


def token(live: Live, who: str) -> str:
    return live.files.tokens[who]


def jwt_for(live: Live, sub: str, key: Any = None, alg: str = "RS256", **extra: Any) -> str:
    keys = live.files.keys
    signing = key if key is not None else (keys.ec if alg == "ES256" else keys.rsa)
    kid = "ec-1" if alg == "ES256" else "rsa-1"
    return jwt.encode(claims(sub, **extra), signing, algorithm=alg, headers={"kid": kid})


# ------------------------------------------------------------------------ credentials
@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_credentials_get_401_on_every_endpoint(live: Live, path: str) -> None:
    status, body = call(live.api + path)
    assert_refusal(status, body, 401)
    assert_no_beta(body)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_other_tenants_token_gets_403_on_every_endpoint(live: Live, path: str) -> None:
    status, body = call(live.api + path, token(live, "beta-ci"))
    assert_refusal(status, body, 403)
    status, body = call(live.api + path, jwt_for(live, "bob@beta.example"))
    assert_refusal(status, body, 403)


@pytest.mark.parametrize("path", API)
def test_the_tenant_header_cannot_name_someone_elses_tenant(live: Live, path: str) -> None:
    status, body = call(
        live.api + path, token(live, "alpha-ci"), headers={"X-Gpuslo-Tenant": "beta"}
    )
    assert_refusal(status, body, 403)
    assert_no_beta(body)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_alpha_reads_every_endpoint_and_nothing_of_betas(live: Live, path: str) -> None:
    for credential in (token(live, "alpha-ci"), jwt_for(live, "alice@alpha.example", alg="ES256")):
        status, body = call(live.api + path, credential)
        assert status == 200, body
        assert_no_beta(body)
        assert '"beta"' not in body


def test_a_wrong_token_and_a_wrong_scheme_get_401(live: Live) -> None:
    for header in ("Bearer nope", "Basic YWxwaGE6eA==", "Bearer ", "alpha-token-0123456789"):
        status, body = call(live.api + VIEWS[0], headers={"Authorization": header})
        assert_refusal(status, body, 401)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "forge",
    [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "no_exp",
        "stranger_key",
        "alg_none",
        "hs256_with_public_key",
        "unknown_kid",
        "es_key_claims_rs",
        "tampered_payload",
    ],
)
def test_forged_and_expired_jwts_get_401(live: Live, forge: str) -> None:
    from cryptography.hazmat.primitives import serialization

    keys = live.files.keys
    sub = "alice@alpha.example"
    now = int(time.time())
    if forge == "expired":
        credential = jwt_for(live, sub, exp=now - 3600)
    elif forge == "not_yet_valid":
        credential = jwt_for(live, sub, nbf=now + 3600)
    elif forge == "wrong_issuer":
        credential = jwt_for(live, sub, iss="https://evil.example/")
    elif forge == "wrong_audience":
        credential = jwt_for(live, sub, aud="someone-else")
    elif forge == "no_exp":
        body = {k: v for k, v in claims(sub).items() if k != "exp"}
        credential = jwt.encode(body, keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    elif forge == "stranger_key":
        credential = jwt_for(live, sub, key=keys.stranger)
    elif forge == "alg_none":
        credential = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{_b64(claims(sub))}."
    elif forge == "hs256_with_public_key":
        import hashlib
        import hmac

        pem = keys.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        head = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
        signing_input = f"{head}.{_b64(claims(sub))}".encode()
        sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest())
        credential = signing_input.decode() + "." + sig.rstrip(b"=").decode()
    elif forge == "unknown_kid":
        credential = jwt.encode(claims(sub), keys.rsa, algorithm="RS256", headers={"kid": "x"})
    elif forge == "es_key_claims_rs":  # the EC key's kid on an RS256 token
        credential = jwt.encode(claims(sub), keys.rsa, algorithm="RS256", headers={"kid": "ec-1"})
    else:  # a valid alpha token whose payload is swapped for bob's
        head, _, sig = jwt_for(live, sub).split(".")
        credential = f"{head}.{_b64(claims('bob@beta.example'))}.{sig}"
    for path in (VIEWS[0], "/tenants/alpha/api/v1/query?query=up"):
        status, body = call(live.api + path, credential)
        assert_refusal(status, body, 401)


# ------------------------------------------------------------------------ what alpha sees
def test_alpha_counts_only_its_own_series(live: Live) -> None:
    status, body = call(
        live.api + "/api/v1/query", token(live, "alpha-ci"), {"query": 'count({__name__=~".+"})'}
    )
    assert status == 200, body
    (result,) = json.loads(body)["data"]["result"]
    # alpha's series: one request counter, two token counters, its own metric (scrape series
    # such as `up` carry no tenant label, so they are not alpha's either)
    assert float(result["value"][1]) == 4


def test_label_values_and_series_are_the_tenants_own(live: Live) -> None:
    a = token(live, "alpha-ci")
    status, body = call(live.api + "/api/v1/label/tenant/values", a)
    assert json.loads(body)["data"] == ["alpha"]
    status, body = call(live.api + "/api/v1/label/__name__/values", a)
    names = json.loads(body)["data"]
    assert ALPHA_ONLY_METRIC in names and "beta_only_metric_total" not in names
    status, body = call(live.api + '/api/v1/series?match[]={__name__=~".%2B"}', a)
    assert status == 200 and {s["tenant"] for s in series_of(body)} == {"alpha"}


def test_the_tenants_slo_is_computed_over_its_own_traffic(live: Live) -> None:
    (slo,) = json.loads(call(live.api + VIEWS[0], token(live, "alpha-ci"))[1])["slos"]
    assert slo["name"] == "chat-availability" and slo["error_ratio"] == 0.0
    (beta,) = json.loads(call(live.api + "/v1/tenants/beta/slos", token(live, "beta-ci"))[1])[
        "slos"
    ]
    assert beta["error_ratio"] == pytest.approx(0.5)
    assert beta["burn_rates"]["5m"] == pytest.approx(50.0)  # 0.5 / (1 - 0.99)


def test_the_tenants_costs_are_its_share_of_the_model(live: Live) -> None:
    a = json.loads(call(live.api + VIEWS[1], token(live, "alpha-ci"))[1])
    b = json.loads(call(live.api + "/v1/tenants/beta/costs?days=1", token(live, "beta-ci"))[1])
    assert a["dollars"] > 0 and b["dollars"] > 0
    assert b["dollars"] / a["dollars"] == pytest.approx(2.0, rel=0.2)  # beta sends twice as much
    (model,) = a["models"]
    assert model["model"] == "llama" and model["dollars_per_1m_tokens"] > 0


def test_the_budget_names_the_month_and_a_forecast(live: Live) -> None:
    doc = json.loads(call(live.api + VIEWS[2], token(live, "alpha-ci"))[1])
    assert doc["budget"] == 100.0 and doc["spent"] >= 0
    assert doc["remaining"] == pytest.approx(100.0 - doc["spent"])
    # its cost SLO, evaluated as its rules would be: no cost rules run here, so no values
    assert doc["slo"]["name"] == "alpha-budget" and doc["slo"]["period"] == "month"
    assert doc["slo"]["sli"] is None
    beta = json.loads(call(live.api + "/v1/tenants/beta/budget", token(live, "beta-ci"))[1])
    assert beta["budget"] is None  # beta has none configured


def test_a_query_naming_beta_is_refused_without_repeating_it(live: Live) -> None:
    status, body = call(
        live.api + "/api/v1/query", token(live, "alpha-ci"), {"query": 'up{tenant="beta"}'}
    )
    assert_refusal(status, body, 403)
    assert "beta" not in body


def test_bad_requests_are_4xx(live: Live) -> None:
    a = token(live, "alpha-ci")
    assert call(live.api + "/api/v1/query", a)[0] == 400  # no query
    assert call(live.api + "/api/v1/query?query=sum(", a)[0] == 400
    assert call(live.api + "/api/v1/nope", a)[0] == 404
    assert call(live.api + "/v1/tenants/alpha/costs?days=x", a)[0] == 400
    status, body = call(live.api + "/api/v1/query", a, {"query": "x" * 70_000})
    assert status == 413, body


# ------------------------------------------------------------------------ fuzzing PromQL
_tenant_matchers = st.sampled_from(
    [
        "",
        'tenant="alpha"',
        'tenant="beta"',
        'tenant!="alpha"',
        'tenant!="beta"',
        'tenant=~".+"',
        'tenant=~"beta|alpha"',
        'tenant=~"(?i)BETA"',
        'tenant!~"alpha"',
        'tenant=~""',
        'tenant=""',
    ]
)
_other_matchers = st.sampled_from(
    ["", 'secret=~".+"', 'pod=~"beta.*"', 'outcome="error"', 'model=~"ll.*"', 'secret=""']
)
_names = st.sampled_from(
    ["", "gen_ai_server_requests_total", "beta_only_metric_total", ALPHA_ONLY_METRIC, "up"]
)


@st.composite
def _selector(draw: st.DrawFn) -> str:
    name = draw(_names)
    parts = [p for p in (draw(_tenant_matchers), draw(_other_matchers)) if p]
    if not name:
        parts.append(
            draw(st.sampled_from(['__name__=~".+"', '__name__=~"beta.*"', '__name__!=""']))
        )
    return name + "{" + ",".join(parts) + "}"


@st.composite
def _query(draw: st.DrawFn, depth: int = 0) -> str:
    sel = draw(_selector())
    if depth >= 2:
        return sel
    inner = draw(_query(depth=depth + 1))
    other = draw(_query(depth=depth + 1))
    label = draw(st.sampled_from(["tenant", "x", "secret"]))
    return draw(
        st.sampled_from(
            [
                sel,
                f"rate({sel}[1m])",
                f"sum by (tenant, secret) ({inner})",
                f"{inner} or {other}",
                f"{inner} or on() vector(1)",
                f"{inner} and on() {other}",
                f"{inner} unless ignoring(tenant) {other}",
                f"max_over_time(({inner})[2m:15s])",
                f'label_replace({inner}, {quote(label)}, "$1", "secret", "(.*)")',
                f'label_join({inner}, {quote(label)}, ",", "tenant", "secret")',
                f"count_values({quote(label)}, {inner})",
                f"absent({sel})",
                f"topk(5, {inner})",
                f"{inner} offset 10s",
                f"{sel} * on(model) group_left(secret) {other}",
            ]
        )
    )


# Why alpha's query may be refused although Prometheus runs it: the rewriter's own rules.
KNOWN_REFUSALS = ("other than yours", "may not write", "target_info", "plain")


def _check_fidelity(live: Live, query: str, status: int, body: str) -> None:
    """A query Prometheus runs is refused only for a known reason: the rewriter never breaks
    a valid query (its text always reads back)."""
    if status < 400:
        return
    direct, _ = call(live.prometheus + "/api/v1/query", None, {"query": query})
    if direct == 200:
        reason = json.loads(body)["error"]
        assert any(k in reason for k in KNOWN_REFUSALS), (query, status, reason)


def _check_answer(status: int, body: str) -> None:
    assert status < 500, (status, body)
    assert_no_beta(body)
    if status >= 400:
        assert json.loads(body)["error"]
        return
    for labels in series_of(body):
        assert labels.get("tenant", "alpha") == "alpha", labels
        assert labels.get("__name__") != "beta_only_metric_total", labels


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=_query(), ranged=st.booleans())
def test_fuzzed_promql_never_shows_alpha_anything_of_betas(
    live: Live, query: str, ranged: bool
) -> None:
    now = time.time()
    if ranged:
        data = {"query": query, "start": now - 60, "end": now, "step": 15}
        status, body = call(live.api + "/api/v1/query_range", token(live, "alpha-ci"), data)
    else:
        status, body = call(live.api + "/api/v1/query", token(live, "alpha-ci"), {"query": query})
    _check_answer(status, body)
    _check_fidelity(live, query, status, body)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    matches=st.lists(_selector(), min_size=0, max_size=3),
    endpoint=st.sampled_from(
        ["series", "labels", "label/tenant/values", "label/secret/values", "label/pod/values"]
    ),
)
def test_fuzzed_match_selectors_never_show_alpha_anything_of_betas(
    live: Live, matches: list[str], endpoint: str
) -> None:
    data = [("match[]", m) for m in matches]
    status, body = call(live.api + f"/api/v1/{endpoint}", token(live, "alpha-ci"), data or None)
    _check_answer(status, body)
