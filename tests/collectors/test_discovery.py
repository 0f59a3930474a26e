"""Pod discovery by annotation against a recorded API contract (named as such: the official
client talks to a loopback server answering from fixtures/contracts/kubernetes_pod_discovery.json),
and the server collector's handling of targets that come and go."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpuslo.collectors.discovery import PodDiscovery
from gpuslo.collectors.servers import VLLM, ServerCollector, Target, canonicalize, parse_exposition
from gpuslo.collectors.tenants import TenantCap
from tests.conftest import FIXTURES, run_gpuslo
from tests.contracts import contract_fixture

CONTRACT = json.loads((FIXTURES / "contracts" / "kubernetes_pod_discovery.json").read_text())
VLLM_TEXT = (Path(__file__).parent / "fixtures" / "servers" / "vllm_v1_metrics.prom").read_bytes()


contract = contract_fixture(CONTRACT)


@pytest.mark.contract
def test_annotated_running_pods_on_the_node_become_targets_and_the_rest_are_counted(contract):
    server = contract("list_node_pods")
    discovery = PodDiscovery(server.api_client(), "gpu-node-1")
    targets = {t.url: t for t in discovery.targets()}
    assert set(targets) == {
        "http://10.0.1.5:8000/metrics",  # gpuslo.io/port: "8000"
        "http://10.0.1.6:9000/metrics",  # no port annotation: the port named "metrics"
        "https://[fd00::7]:8002/metrics",  # a named port, https, path without its slash
    }
    assert targets["http://10.0.1.5:8000/metrics"].server == "vllm"
    assert dict(targets["http://10.0.1.6:9000/metrics"].labels) == {
        "namespace": "llm",
        "pod": "tgi-0",
        "model": "mistral-7b",
        "tenant": "acme",
    }
    families = {m.name: m for m in discovery.metrics()}
    skipped = {
        s.labels["reason"]: s.value for s in families["gpuslo_discovery_skipped_pods"].samples
    }
    # sglang-0 is Pending; dynamo-0 names a port it does not have; unannotated pods and
    # scrape: "false" are not counted at all
    assert skipped == {"not_running": 1, "bad_port": 1}
    assert families["gpuslo_discovery_targets"].samples[0].value == 3
    assert families["gpuslo_discovery_success"].samples[0].value == 1


@pytest.mark.contract
def test_a_failed_listing_keeps_the_last_targets_and_reports_itself(contract):
    server = contract("list_then_forbidden")
    now = [0.0]
    discovery = PodDiscovery(server.api_client(), "gpu-node-1", refresh=30, clock=lambda: now[0])
    first = discovery.targets()
    now[0] = 10.0
    assert discovery.targets() == first  # cached: no second request within the refresh
    now[0] = 31.0
    assert discovery.targets() == first  # 403: the last good list stays
    assert discovery.error is not None and "HTTP 403" in discovery.error
    families = {m.name: m for m in discovery.metrics()}
    assert families["gpuslo_discovery_success"].samples[0].value == 0


class _Server:
    """One fake inference server that can be stopped (a pod going away)."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/metrics"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class _Listing:
    def __init__(self, targets: list[Target]) -> None:
        self.current = targets

    def targets(self) -> list[Target]:
        return list(self.current)

    def metrics(self) -> list:
        return []


def test_a_server_that_disappears_goes_down_and_a_deleted_pod_drops_out():
    a, b = _Server(VLLM_TEXT), _Server(VLLM_TEXT)
    listing = _Listing([Target(a.url, (("pod", "a"),)), Target(b.url, (("pod", "b"),))])
    collector = ServerCollector([], timeout=1.0, discovery=listing)
    try:
        up = lambda: {  # noqa: E731
            s.labels["target"]: s.value
            for m in collector.collect()
            if m.name == "gpuslo_target_up"
            for s in m.samples
        }
        assert up() == {a.url: 1, b.url: 1}
        b.stop()  # the server dies; its pod is still listed
        assert up() == {a.url: 1, b.url: 0}
        assert b.url in collector.errors
        listing.current = listing.current[:1]  # the pod is deleted
        assert up() == {a.url: 1}
        assert b.url not in collector.errors
    finally:
        a.stop()
        collector.close()


def test_a_tenant_label_from_the_server_or_the_pod_goes_through_the_cap():
    text = "\n".join(
        f'vllm:request_success_total{{model_name="m",finished_reason="stop",tenant="{t}"}} 1'
        for t in ("t1", "t2", "t3", "t4")
    )
    cap = TenantCap(2)
    series = canonicalize(parse_exposition(text), VLLM, {}, cap)
    by_tenant = {dict(lbl)["tenant"]: v for _, lbl, v in series}
    assert by_tenant == {"t1": 1, "t2": 1, "__other__": 2}
    assert {m.name: m for m in cap.metrics()}["gpuslo_tenant_overflow_total"].samples[0].value == 2


def test_agent_cli_needs_a_node_name_for_discovery(monkeypatch):
    monkeypatch.delenv("NODE_NAME", raising=False)
    proc = run_gpuslo(
        "agent", "--no-collector.gpu", "--no-collector.infiniband", "--discover-pods", "--once"
    )
    assert proc.returncode == 2
    assert "--discover-pods needs --node-name" in proc.stderr
    assert "Traceback" not in proc.stderr
