"""OTLP/gRPC beside OTLP/HTTP: one receiver, one mapping, the statuses the OTLP spec's
"OTLP/gRPC" section asks for, the bounded ingest queue, and the receiver in its own process."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as service
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from gpuslo.collectors.agent import Agent
from gpuslo.collectors.errors import CollectorUnavailable
from gpuslo.collectors.otlp import OtlpReceiver, OtlpServer
from gpuslo.collectors.otlp_grpc import STATUS_DETAILS, OtlpGrpcServer
from gpuslo.collectors.otlp_process import IngestConfig, IngestFailed, OtlpIngest
from gpuslo.collectors.tenants import TenantCap
from gpuslo.foundation.promlab import free_port
from tests.collectors.test_otlp import (
    canonical,
    export,
    hist_metric,
    one,
    pick,
    post,
    samples_of,
    scrape,
)
from tests.conftest import otlp_agent

NAME = "gen_ai.server.request.duration"
EXPORT_PATH = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
PB = "application/x-protobuf"


def duration_export(counts: list[int], model: str = "m", start: int = 1) -> bytes:
    metric = hist_metric(
        NAME, [(start, counts, [0.5], 0.25 * sum(counts))], 1, {"gen_ai.request.model": model}
    )
    return export(metric).SerializeToString()


@pytest.fixture
def grpc_endpoint():
    receiver = OtlpReceiver(max_body=64 * 1024)
    server = OtlpGrpcServer(receiver, "127.0.0.1", 0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.address[1]}")
    yield receiver, channel, server.address[1]
    channel.close()
    server.stop()


def raw(channel: grpc.Channel):
    return channel.unary_unary(EXPORT_PATH, request_serializer=None, response_deserializer=None)


# --------------------------------------------------------------------------- the real agent
def test_grpc_and_http_exports_land_in_the_same_canonical_series():
    """Through a real agent (the receiver in its own process): a delta export over gRPC
    (gzip), one over HTTP, and the scrape holds their sum in one series."""
    grpc_port = free_port()
    with otlp_agent(f"--otlp-grpc-listen=127.0.0.1:{grpc_port}") as (metrics_url, otlp_url):
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = service.MetricsServiceStub(channel)
            request = ExportMetricsServiceRequest.FromString(duration_export([3, 1]))
            reply = stub.Export(request, compression=grpc.Compression.Gzip, timeout=10)
            assert not reply.HasField("partial_success")
        status, _, _ = post(otlp_url, duration_export([1, 2]), PB)
        assert status == 200
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(metrics_url)
            counts = pick(samples, "gen_ai_server_request_duration_seconds_count", model="m")
            if sum(counts.values()) == 7 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert list(counts.values()) == [7]  # one series, both transports
    le = one(samples, "gen_ai_server_request_duration_seconds_bucket", model="m", le="0.5")
    assert le == 4
    assert one(samples, "gen_ai_server_requests_total", model="m", outcome="success") == 7
    assert one(samples, "gpuslo_otlp_requests_total", code="OK") == 1
    assert one(samples, "gpuslo_otlp_requests_total", code="200") == 1
    assert one(samples, "gpuslo_collector_success", collector="otlp") == 1


def test_the_agent_refuses_a_taken_grpc_port_with_one_line():
    from tests.conftest import run_gpuslo

    with socket_bound() as port:
        proc = run_gpuslo(
            "agent",
            "--no-collector.gpu",
            "--no-collector.infiniband",
            f"--listen=127.0.0.1:{free_port()}",
            f"--otlp-grpc-listen=127.0.0.1:{port}",
        )
    assert proc.returncode == 2, proc.stderr
    assert f"--otlp-grpc-listen: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_gpuslo("agent", "--no-collector.gpu", "--otlp-grpc-listen", "x", "--once")
    assert proc.returncode == 2 and "--otlp-grpc-listen" in proc.stderr


class socket_bound:
    """A listening TCP socket on a free loopback port (a port someone else holds)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- statuses
def test_bad_bytes_are_invalid_argument_and_change_nothing(grpc_endpoint):
    receiver, channel, _ = grpc_endpoint
    with pytest.raises(grpc.RpcError) as err:
        raw(channel)(b"\xff\xff\xff garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("not an OTLP metrics export")
    assert receiver.points == {"accepted": 0, "ignored": 0, "rejected": 0}
    assert receiver.requests == {"INVALID_ARGUMENT": 1}


def test_a_message_over_the_limit_is_resource_exhausted_also_after_gzip(grpc_endpoint):
    receiver, channel, _ = grpc_endpoint
    big = ExportMetricsServiceRequest()
    rm = big.resource_metrics.add()
    rm.resource.attributes.add(key="pad").value.string_value = "x" * (100 * 1024)
    body = big.SerializeToString()
    for compression in (None, grpc.Compression.Gzip):  # 100 KiB of "x" gzips to ~100 bytes
        with pytest.raises(grpc.RpcError) as err:
            raw(channel)(body, timeout=10, compression=compression)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert receiver.points == {"accepted": 0, "ignored": 0, "rejected": 0}


def test_partial_success_over_grpc_names_the_rejected_points(grpc_endpoint):
    receiver, channel, _ = grpc_endpoint
    stub = service.MetricsServiceStub(channel)
    bad = hist_metric(NAME, [(1, [1, 0, 0], [0.1, 1.0], 0.1)])
    good = hist_metric(NAME, [(1, [1, 0], [0.5], 0.1)], 1)
    assert stub.Export(export(good), timeout=10) == ExportMetricsServiceResponse()
    reply = stub.Export(export(bad), timeout=10)
    assert reply.partial_success.rejected_data_points == 1
    assert "differ" in reply.partial_success.error_message
    assert receiver.points["accepted"] == 1
    assert receiver.requests == {"OK": 2}


# --------------------------------------------------------------------------- the ingest queue
def test_a_full_queue_refuses_with_a_retry_delay_and_loses_nothing_accepted():
    """With the fold held up, ``max_inflight`` exports wait in their slots; the next ones are
    refused (HTTP 429 with Retry-After, gRPC UNAVAILABLE with RetryInfo) before they are read.
    Once the fold runs again every waiting export is folded in and answered, and the canonical
    series hold exactly the accepted ones."""
    receiver = OtlpReceiver(max_inflight=3)
    http = OtlpServer(receiver, "127.0.0.1", 0)
    rpc = OtlpGrpcServer(receiver, "127.0.0.1", 0)
    http.start()
    rpc.start()
    url = "http://{}:{}/v1/metrics".format(*http.address)
    channel = grpc.insecure_channel(f"127.0.0.1:{rpc.address[1]}")
    results: list[object] = []
    try:
        with receiver._lock:  # the fold is busy: exports queue in their slots
            waiting = [
                threading.Thread(
                    target=lambda: results.append(post(url, duration_export([1, 0]), PB))
                ),
                threading.Thread(
                    target=lambda: results.append(post(url, duration_export([0, 1]), PB))
                ),
                threading.Thread(
                    target=lambda: results.append(raw(channel)(duration_export([2, 0]), timeout=30))
                ),
            ]
            for t in waiting:
                t.start()
            deadline = time.monotonic() + 10
            while receiver._inflight < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert receiver._inflight == 3
            status, _, reply = post_with_headers(url, duration_export([5, 5]))
            assert status[0] == 429 and status[1] == "1"
            assert "exports in hand" in Status.FromString(reply).message
            with pytest.raises(grpc.RpcError) as err:
                raw(channel)(duration_export([7, 7]), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(err.value.trailing_metadata())[STATUS_DETAILS]
            status_pb = Status.FromString(details)
            info = RetryInfo()
            assert status_pb.details[0].Unpack(info)
            assert info.retry_delay.seconds == 1
        for t in waiting:
            t.join(timeout=30)
    finally:
        channel.close()
        rpc.stop()
        http.stop()
    assert len(results) == 3
    assert all(
        r == ExportMetricsServiceResponse().SerializeToString() or r[0] == 200 for r in results
    )
    samples = canonical(receiver)
    assert one(samples, "gen_ai_server_request_duration_seconds_count") == 1 + 1 + 2
    assert receiver.points["accepted"] == 3
    assert receiver.requests == {"200": 2, "OK": 1, "429": 1, "UNAVAILABLE": 1}
    assert receiver._inflight == 0


def post_with_headers(url: str, body: bytes) -> tuple[tuple[int, str | None], str, bytes]:
    import urllib.error

    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", PB)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return (
                (resp.status, resp.headers["Retry-After"]),
                resp.headers["Content-Type"],
                resp.read(),
            )
    except urllib.error.HTTPError as err:
        return (err.code, err.headers["Retry-After"]), err.headers["Content-Type"], err.read()


# --------------------------------------------------------------------------- the ingest process
def test_the_ingest_process_hands_rendered_families_that_merge_with_other_collectors():
    """``OtlpIngest`` runs the receiver in a child; its families arrive as text and join a
    family another collector also serves into one valid block."""
    from prometheus_client.core import Metric

    tenants = TenantCap(1)
    ingest = OtlpIngest(
        IngestConfig(http=("127.0.0.1", 0), grpc=("127.0.0.1", 0), tenant_cap=1), tenants
    )
    http, rpc = ingest.start()
    try:
        url = "http://{}:{}/v1/metrics".format(*http)
        for tenant in ("a", "b"):
            metric = hist_metric(
                NAME,
                [(1, [1, 0], [0.5], 0.1)],
                1,
                {"gen_ai.request.model": "m", "gpuslo.tenant": tenant},
            )
            assert post(url, export(metric).SerializeToString(), PB)[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{rpc[1]}") as channel:
            raw(channel)(duration_export([0, 1]), timeout=10)

        class Server:
            name = "servers"

            def collect(self):
                fam = Metric("gen_ai_server_requests_total", "Requests.", "counter")
                fam.add_sample("gen_ai_server_requests_total", {"server": "vllm"}, 5.0)
                return [fam]

        agent = Agent([Server(), ingest, tenants])
        agent.sample_all()
        first = agent.snapshot("otlp")
        agent.sample_all()
        assert agent.snapshot("otlp").families == first.families  # unchanged: same text
        for openmetrics in (False, True):
            text = agent.render(openmetrics)
            assert text.count("# TYPE gen_ai_server_requests") == 1
            if not openmetrics:
                samples = samples_of(text)
                assert one(samples, "gen_ai_server_requests_total", server="vllm") == 5
                assert one(samples, "gen_ai_server_requests_total", server="otlp", tenant="a") == 1
                assert one(samples, "gen_ai_server_requests_total", tenant="__other__") == 1
                assert one(samples, "gpuslo_tenants_tracked") == 1
                assert one(samples, "gpuslo_tenant_overflow_total", source="otlp") == 1
                assert one(samples, "gpuslo_collector_success", collector="otlp") == 1
        proc = ingest._proc
        proc.kill()
        proc.join(10)
        with pytest.raises(CollectorUnavailable, match="not running"):
            ingest.collect()
    finally:
        ingest.close()


def test_the_ingest_process_reports_a_port_it_cannot_bind():
    with socket_bound() as port:
        ingest = OtlpIngest(IngestConfig(http=("127.0.0.1", port)), TenantCap())
        with pytest.raises(IngestFailed) as err:
            ingest.start()
    assert err.value.flag == "--otlp-listen"
    ingest.close()


# --------------------------------------------------------------------------- the real SDK exporter
def test_the_opentelemetry_grpc_exporter_lands_in_the_canonical_series(grpc_endpoint):
    grpc_exporter = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        reason="opentelemetry-exporter-otlp-proto-grpc is not installed",
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    receiver, _, port = grpc_endpoint
    target = f"127.0.0.1:{port}"
    exporter = grpc_exporter.OTLPMetricExporter(
        endpoint=target, insecure=True, compression=grpc.Compression.Gzip
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"k8s.pod.name": "p"})
    )
    hist = provider.get_meter("t").create_histogram(NAME, unit="s")
    for v in (0.1, 0.2, 3.0):
        hist.record(v, {"gen_ai.request.model": "m", "gen_ai.provider.name": "vllm"})
    assert provider.force_flush()
    provider.shutdown()
    samples = canonical(receiver)
    assert one(samples, "gen_ai_server_request_duration_seconds_count", server="vllm") == 3
    assert receiver.requests.get("OK", 0) >= 1


def test_the_grpc_exporter_retries_a_throttled_export_and_it_lands_once():
    """The receiver is busy (its one slot taken): the SDK exporter gets UNAVAILABLE with
    RetryInfo, waits the delay, retries, and the export is folded in exactly once."""
    grpc_exporter = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        reason="opentelemetry-exporter-otlp-proto-grpc is not installed",
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    receiver = OtlpReceiver(max_inflight=1)
    server = OtlpGrpcServer(receiver, "127.0.0.1", 0)
    server.start()
    try:
        exporter = grpc_exporter.OTLPMetricExporter(
            endpoint=f"127.0.0.1:{server.address[1]}", insecure=True, timeout=20
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        hist = provider.get_meter("t").create_histogram(NAME, unit="s")
        hist.record(0.3, {"gen_ai.request.model": "m"})
        flushed: list[bool] = []
        with receiver.slot():  # another export holds the only slot
            flusher = threading.Thread(target=lambda: flushed.append(provider.force_flush(20_000)))
            flusher.start()
            deadline = time.monotonic() + 10
            while not receiver.requests.get("UNAVAILABLE") and time.monotonic() < deadline:
                time.sleep(0.01)
        flusher.join(timeout=30)
        provider.shutdown()
    finally:
        server.stop()
    assert flushed == [True]
    # OK: the retried export, then shutdown's final (cumulative, so unchanged) one
    assert receiver.requests["UNAVAILABLE"] >= 1 and receiver.requests["OK"] >= 1
    assert one(canonical(receiver), "gen_ai_server_request_duration_seconds_count") == 1


def test_families_rendered_once_for_both_formats_match_the_exposition_writer():
    """The ingest process renders sample lines once and a header per format: the result is
    exactly what ``render`` writes in each format (counters' OpenMetrics names included)."""
    from gpuslo.collectors.otlp_process import _rendered
    from gpuslo.foundation.exposition import render

    r = OtlpReceiver()
    usage = {
        "name": "gen_ai.client.token.usage",
        "sum": {
            "aggregationTemporality": 1,
            "isMonotonic": True,
            "dataPoints": [{"asInt": "12", "attributes": [tok("input")]}],
        },
    }
    r.ingest(export(hist_metric(NAME, [(1, [1, 2], [0.5], 0.9)])))
    r.ingest(export(usage))
    families = r.collect()
    assert {f.type for f in families} >= {"counter", "gauge", "histogram"}
    for fam in families:
        name, _, typ, series, text = _rendered(fam)
        assert (name, typ, series) == (fam.name, fam.type, len(fam.samples))
        for openmetrics in (False, True):
            assert "".join(text[openmetrics]) == render([fam], openmetrics)


def tok(kind: str) -> dict:
    return {"key": "gen_ai.token.type", "value": {"stringValue": kind}}


def test_a_stalled_ingest_process_times_out_and_its_late_answer_is_skipped(monkeypatch):
    """A child that stops answering makes the sample fail (not hang the sampling thread);
    once it answers again, the late reply to the old ask is dropped, not taken for the new."""
    import os
    import signal

    from gpuslo.collectors import otlp_process

    monkeypatch.setattr(otlp_process, "ANSWER_TIMEOUT", 0.5)
    ingest = OtlpIngest(IngestConfig(http=("127.0.0.1", 0)), TenantCap())
    (http,) = ingest.start()
    try:
        before = ingest.collect()
        os.kill(ingest._proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(CollectorUnavailable, match="did not answer"):
                ingest.collect()
        finally:
            os.kill(ingest._proc.pid, signal.SIGCONT)
        url = "http://{}:{}/v1/metrics".format(*http)
        assert post(url, duration_export([1, 1]), PB)[0] == 200
        families = ingest.collect()  # the answer to this ask: it holds the export
        assert families is not before
        text = "".join("".join(f.text[False]) for f in families)
        assert one(samples_of(text), "gen_ai_server_request_duration_seconds_count") == 2
    finally:
        ingest.close()
