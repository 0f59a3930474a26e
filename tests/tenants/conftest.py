"""Two tenants on one fleet, for the tenant plane's tests: their exposition text, a plane config
with a token and JWT keys for each, and (component tests) a real Prometheus holding both."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import H100_CATALOG

ALPHA, BETA = "alpha", "beta"
# Strings only beta's series hold; no query a test sends ever contains them, so finding one
# in an answer to alpha means beta's data leaked.
BETA_MARKERS = ("beta-secret-7f3", "beta_only_metric_total", "beta-pod-9")
ALPHA_ONLY_METRIC = "alpha_only_metric_total"
SLO_SPEC = """\
apiVersion: gpuslo/v1
kind: SLOs
defaults:
  service: chat
  window: 1h
slos:
  - name: chat-availability
    objective: 99
    selector: {model: llama}
    availability: {}
"""


def exposition(elapsed: float) -> str:
    """Both tenants' series: alpha's requests all succeed, half of beta's fail; beta serves
    twice alpha's traffic. Counters grow with ``elapsed`` seconds."""
    a, b = 10 + 10 * elapsed, 20 + 20 * elapsed
    lines = [
        "# TYPE gen_ai_server_requests_total counter",
        f'gen_ai_server_requests_total{{model="llama",namespace="inf",pod="llama-0",'
        f'tenant="alpha",outcome="success",secret="alpha-secret-1"}} {a}',
        f'gen_ai_server_requests_total{{model="llama",namespace="inf",pod="llama-0",'
        f'tenant="beta",outcome="success",secret="beta-secret-7f3"}} {b / 2}',
        f'gen_ai_server_requests_total{{model="llama",namespace="inf",pod="llama-0",'
        f'tenant="beta",outcome="error",secret="beta-secret-7f3"}} {b / 2}',
        "# TYPE gen_ai_server_token_usage_total counter",
        *(
            f'gen_ai_server_token_usage_total{{model="llama",tenant="{t}",token_type="{kind}"}} '
            f"{n * per}"
            for t, n in (("alpha", a), ("beta", b))
            for kind, per in (("input", 100), ("output", 50))
        ),
        "# TYPE beta_only_metric_total counter",
        f'beta_only_metric_total{{tenant="beta",pod="beta-pod-9"}} {b}',
        "# TYPE alpha_only_metric_total counter",
        f'alpha_only_metric_total{{tenant="alpha"}} {a}',
        "# TYPE gpuslo_gpu_up gauge",
        'gpuslo_gpu_up{UUID="GPU-1",Hostname="node-1"} 1',
        "# TYPE gpuslo_gpu_pod_info gauge",
        'gpuslo_gpu_pod_info{UUID="GPU-1",Hostname="node-1",namespace="inf",pod="llama-0"} 1',
    ]
    return "\n".join(lines) + "\n"


class _Exposition(BaseHTTPRequestHandler):
    started = time.time()

    def do_GET(self) -> None:
        body = exposition(time.time() - self.started).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Keys:
    """RSA and EC signing keys, the JWKS of their public halves, and a stranger's key."""

    rsa: Any
    ec: Any
    stranger: Any
    jwks: dict[str, Any]


def make_keys() -> Keys:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk_rsa = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk_ec = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    jwk_rsa.update(kid="rsa-1", alg="RS256", use="sig")
    jwk_ec.update(kid="ec-1", alg="ES256", use="sig")
    return Keys(rsa_key, ec_key, stranger, {"keys": [jwk_rsa, jwk_ec]})


ISSUER, AUDIENCE = "https://idp.example.test/", "gpuslo-tenants"


def claims(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **extra}


@dataclass
class PlaneFiles:
    dir: Path
    config: Path
    tokens: dict[str, str]  # identity -> token
    keys: Keys
    extra: dict[str, Any] = field(default_factory=dict)


def write_plane(dir: Path, prometheus: str, keys: Keys, tenant_budget: float = 100.0) -> PlaneFiles:
    """A plane config, tokens file, JWKS, SLO spec and catalog for alpha and beta."""
    from gpuslo.tenants.config import hash_token

    tokens = {"alpha-ci": "alpha-token-0123456789", "beta-ci": "beta-token-9876543210"}
    (dir / "tokens.yaml").write_text(
        "apiVersion: gpuslo/v1\nkind: TenantTokens\ntokens:\n"
        + "".join(f"  - {{identity: {i}, sha256: {hash_token(t)}}}\n" for i, t in tokens.items())
    )
    (dir / "jwks.json").write_text(json.dumps(keys.jwks))
    (dir / "slos.yaml").write_text(SLO_SPEC)
    (dir / "catalog.yaml").write_text(H100_CATALOG)
    config = dir / "tenants.yaml"
    config.write_text(
        f"""\
apiVersion: gpuslo/v1
kind: TenantPlane
prometheus: {prometheus}
slo_specs: [slos.yaml]
catalog: catalog.yaml
slo_step: 1m
cost_step: 1m
cache: 1s
auth:
  tokens: tokens.yaml
  jwt: {{jwks: jwks.json, issuer: "{ISSUER}", audience: {AUDIENCE}, algorithms: [RS256, ES256]}}
identities:
  - {{name: alpha-ci, tenants: [alpha]}}
  - {{name: beta-ci, tenants: [beta]}}
  - {{name: alice@alpha.example, tenants: [alpha]}}
  - {{name: bob@beta.example, tenants: [beta]}}
tenants:
  - {{name: alpha, budget: {{monthly: {tenant_budget}}}}}
  - {{name: beta}}
"""
    )
    return PlaneFiles(dir, config, tokens, keys)


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


@dataclass
class Live:
    prometheus: str
    api: str
    files: PlaneFiles


def call(
    url: str,
    token: str | None = None,
    data: dict[str, Any] | list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One HTTP call; (status, body text), whatever the status."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.data = urllib.parse.urlencode(data, doseq=True).encode()
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> Iterator[Live]:
    """A real Prometheus scraping both tenants' series and the tenant API in front of it."""
    from gpuslo.tenants.config import load_plane
    from gpuslo.tenants.server import TenantApi
    from tests.conftest import start_prometheus

    tmp = tmp_path_factory.mktemp("tenants")
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    procs: list[Any] = []
    try:
        prom = start_prometheus(tmp, procs, "fleet", f"127.0.0.1:{target.server_address[1]}")
        _wait_for_rates(prom)
        files = write_plane(tmp, prom, keys)
        api = TenantApi(load_plane(files.config), "127.0.0.1", 0).start()
        try:
            yield Live(prom, api.url, files)
        finally:
            api.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        target.shutdown()


def _wait_for_rates(prom: str, timeout: float = 30.0) -> None:
    """Until both tenants have a rate (two scrapes each)."""
    q = urllib.parse.urlencode(
        {"query": "count(sum by (tenant) (rate(gen_ai_server_requests_total[1m])) > 0)"}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prom}/api/v1/query?{q}", timeout=5) as resp:
            result = json.load(resp)["data"]["result"]
        if result and float(result[0]["value"][1]) == 2:
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus never held both tenants' rates")
