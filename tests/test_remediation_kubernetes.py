"""The Kubernetes actuator against recorded API contracts (named as such): the official client
talks to a loopback server that answers from ``fixtures/contracts/kubernetes_remediation.json``
and fails the test on any request the contract does not list, in order."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from remediation.actuators import ActuatorError
from remediation.kube import KubernetesActuator
from remediation.policy import Route, Workload
from tests.conftest import FIXTURES

pytestmark = pytest.mark.contract
CONTRACT = json.loads((FIXTURES / "contracts" / "kubernetes_remediation.json").read_text())
POOL = Workload(namespace="inference", name="llama")
ROUTE = Route(namespace="inference", name="chat")


class ContractServer:
    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.exchanges = list(exchanges)
        self.problems: list[str] = []
        self.seen: list[tuple[str, str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?", 1)[0]
                content_type = self.headers.get("Content-Type", "")
                server.seen.append((self.command, path, content_type))
                if not server.exchanges:
                    server.problems.append(f"unexpected {self.command} {path}")
                    return self._reply(500, {"message": "not in contract"})
                want = server.exchanges.pop(0)
                req = want["request"]
                if (self.command, path) != (req["method"], req["path"]):
                    server.problems.append(
                        f"{self.command} {path}, contract: {req['method']} {req['path']}"
                    )
                elif "body" in req and body != req["body"]:
                    server.problems.append(
                        f"{self.command} {path} body {body}, contract: {req['body']}"
                    )
                self._reply(want["response"]["status"], want["response"]["body"])

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _serve

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def actuator(self) -> KubernetesActuator:
        from kubernetes import client

        config = client.Configuration(host=f"http://127.0.0.1:{self.http.server_address[1]}")
        return KubernetesActuator(client.ApiClient(config))

    def done(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        assert self.problems == []
        assert self.exchanges == [], f"contract requests never made: {self.exchanges}"


@pytest.fixture
def contract(request):
    servers = []

    def start(name: str) -> ContractServer:
        servers.append(ContractServer(CONTRACT[name]))
        return servers[-1]

    yield start
    for s in servers:
        s.done()


def test_a_deployment_without_an_hpa_is_scaled_through_its_scale_subresource(contract):
    server = contract("scale_without_hpa")
    kube = server.actuator()
    assert kube.replicas(POOL) == 2
    assert kube.scale(POOL, 4) == "scale subresource"
    patch = [s for s in server.seen if s[0] == "PATCH"]
    assert patch and "merge-patch" in patch[0][2]  # a merge patch of spec.replicas only


def test_an_hpa_owned_deployment_gets_its_bounds_raised_not_its_scale(contract):
    server = contract("scale_owned_by_hpa")
    kube = server.actuator()
    assert kube.replicas(POOL) == 2  # the HPA's floor, not the current scale
    assert kube.scale(POOL, 4) == "HPA llama minReplicas"


def test_forbidden_is_an_error_with_the_api_servers_reason(contract):
    server = contract("scale_forbidden")
    with pytest.raises(ActuatorError, match=r"HTTP 403 .*cannot patch resource") as err:
        server.actuator().scale(POOL, 4)
    assert not err.value.retryable


def test_route_weights_retry_a_conflict_on_the_latest_version(contract):
    server = contract("route_weights_with_conflict")
    kube = server.actuator()
    assert kube.weights(ROUTE) == {"llama": 100, "llama-cpu": 0}
    kube.set_weights(ROUTE, {"llama": 75, "llama-cpu": 25})
