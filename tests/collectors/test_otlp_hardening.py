"""Hardening of the OTLP/HTTP receiver: bounded bodies, whole-or-nothing exports, names that
cannot break the exposition, counters that never go NaN or down, and caps that hold.

Every test talks HTTP to a real ``OtlpServer`` on 127.0.0.1, with the caps lowered so no
test sends more than a few MiB."""

from __future__ import annotations

import gzip
import json
import math
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gpuslo.collectors import otlp
from gpuslo.collectors.agent import Agent
from gpuslo.collectors.otlp import OtlpReceiver, OtlpServer
from gpuslo.foundation.exposition import render

DURATION = "gen_ai.server.request.duration"
CAP = 64 * 1024  # the body cap the tests lower the server to
JSON_FLOAT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# --------------------------------------------------------------------------- helpers
def attrs(d: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]


def export(*metrics: dict[str, Any], resource: dict[str, str] | None = None) -> bytes:
    body = {
        "resourceMetrics": [
            {
                "resource": {"attributes": attrs(resource or {"k8s.pod.name": "p0"})},
                "scopeMetrics": [{"metrics": list(metrics)}],
            }
        ]
    }
    return json_format.ParseDict(body, ExportMetricsServiceRequest()).SerializeToString()


def hist(
    model: str = "m", counts: list[int] | None = None, bounds: list[float] | None = None
) -> dict[str, Any]:
    """One delta explicit-histogram point of the request duration."""
    counts = counts or [1, 0]
    bounds = [0.5] if bounds is None else bounds
    return {
        "name": DURATION,
        "unit": "s",
        "histogram": {
            "aggregationTemporality": 1,
            "dataPoints": [
                {
                    "attributes": attrs({"gen_ai.request.model": model}),
                    "count": str(sum(counts)),
                    "sum": 0.1 * sum(counts),
                    "bucketCounts": [str(n) for n in counts],
                    "explicitBounds": bounds,
                }
            ],
        },
    }


def tokens(values: list[float], temporality: int = 1) -> dict[str, Any]:
    return {
        "name": "gen_ai.client.token.usage",
        "sum": {
            "aggregationTemporality": temporality,
            "isMonotonic": True,
            "dataPoints": [
                {
                    "attributes": attrs(
                        {"gen_ai.request.model": "m", "gen_ai.token.type": f"t{i}"}
                    ),
                    "startTimeUnixNano": "5",
                    "asDouble": v if math.isfinite(v) else JSON_FLOAT[str(v)],
                }
                for i, v in enumerate(values)
            ],
        },
    }


def post(
    url: str, body: bytes, encoding: str | None = None, ctype: str = "application/x-protobuf"
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if encoding:
        req.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def raw(address: tuple[str, int], head: bytes, body: bytes = b"") -> bytes:
    """Send raw request bytes and read the response head (bounded by a 5 s socket timeout):
    a server that waits for the rest of an unbounded body never answers."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(head)
        if body:
            sock.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def samples(receiver: OtlpReceiver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render(receiver.collect(), False)
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def count_of(receiver: OtlpReceiver, model: str = "m") -> float:
    return sum(
        v
        for (n, lbl), v in samples(receiver).items()
        if n == "gen_ai_server_request_duration_seconds_count" and dict(lbl).get("model") == model
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OtlpReceiver, OtlpServer, str]]:
    monkeypatch.setattr(otlp, "MAX_BODY", CAP)
    monkeypatch.setattr(otlp, "MAX_DECOMPRESSED", 4 * CAP, raising=False)
    receiver = OtlpReceiver()
    srv = OtlpServer(receiver, "127.0.0.1", 0)
    srv.start()
    yield receiver, srv, "http://{}:{}/v1/metrics".format(*srv.address)
    srv.stop()


def head(length: str | None = None, chunked: bool = False) -> bytes:
    lines = ["POST /v1/metrics HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/x-protobuf"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- bodies
def test_a_negative_or_oversized_content_length_is_refused_before_the_body_is_read(server):
    receiver, srv, _ = server
    # -1 made the old receiver read until the client closed: it never answered.
    reply = raw(srv.address, head("-1"))
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    # over the cap: 413 from the headers alone, no body sent
    reply = raw(srv.address, head(str(CAP + 1)))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert receiver.points == {"accepted": 0, "ignored": 0, "rejected": 0}


def test_chunked_bodies_are_read_up_to_the_cap_and_refused_beyond_it(server):
    receiver, srv, _ = server
    body = export(hist())
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reply = raw(srv.address, head(chunked=True), chunked)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert count_of(receiver) == 1
    # a chunked stream past the cap: 413 once the cap is crossed, not after the whole body
    # Exactly the cap in 8 KiB chunks, then the size line of one more: the server must stop
    # there (the old one answered 411 to any chunked body; unbounded, it would read on).
    full = b"".join(b"2000\r\n" + b"\0" * 8192 + b"\r\n" for _ in range(CAP // 8192))
    reply = raw(srv.address, head(chunked=True), full + b"2000\r\n")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert count_of(receiver) == 1


def test_a_gzip_body_is_capped_after_decompression_and_changes_nothing(server):
    receiver, _, url = server
    one = export(hist())
    # concatenated exports are one valid export (repeated fields append): 4x the cap inflated
    bomb = gzip.compress(one * (4 * CAP // len(one) + 1))
    assert len(bomb) < CAP
    status, reply = post(url, bomb, "gzip")
    assert status == 413
    assert "decompress" in Status.FromString(reply).message
    assert count_of(receiver) == 0
    status, _ = post(url, gzip.compress(one * 3), "gzip")  # under the cap: fine
    assert status == 200
    assert count_of(receiver) == 3


# --------------------------------------------------------------------------- names
def test_passthrough_gauge_names_and_keys_follow_the_exposition_rules(server):
    receiver, _, url = server

    def gauge(name: str, labels: dict[str, str]) -> dict[str, Any]:
        point = {"asDouble": 0.5, "attributes": attrs(labels)}
        return {"name": name, "gauge": {"dataPoints": [point]}}

    status, reply = post(
        url,
        export(
            gauge("gpuslo.drift.psi", {"feature.name": "len", "x": 'a"\nb'}),  # dots: mapped
            gauge("gpuslo.drift.bad name", {"f": "1"}),
            gauge('gpuslo.drift.x\ngpuslo_pwned{a="1"} 1\n#', {"f": "1"}),
            gauge("gpuslo.drift.ok", {"bad key": "1"}),
            gauge("gpuslo.drift.ok", {"evil\nkey": "1"}),
        ),
    )
    assert status == 200
    response = ExportMetricsServiceResponse.FromString(reply)
    assert response.partial_success.rejected_data_points == 4
    text = render(receiver.collect(), False)
    fams = list(text_string_to_metric_families(text))  # the exposition still parses
    names = {s.name for f in fams for s in f.samples}
    assert "gpuslo_pwned" not in names
    assert all(NAME_RE.match(n) for n in names)
    assert all(LABEL_RE.match(k) for f in fams for s in f.samples for k in s.labels)
    psi = [s for f in fams for s in f.samples if s.name == "gpuslo_drift_psi"]
    assert [dict(s.labels) for s in psi] == [{"feature_name": "len", "x": 'a"\nb'}]


# --------------------------------------------------------------------------- counters
def test_token_usage_never_goes_nan_or_down(server):
    receiver, _, url = server
    status, reply = post(url, export(tokens([10.0, math.nan, math.inf, -5.0])))
    assert status == 200
    assert ExportMetricsServiceResponse.FromString(reply).partial_success.rejected_data_points == 3
    status, reply = post(url, export(tokens([-1.0], temporality=2)))  # cumulative below zero
    assert ExportMetricsServiceResponse.FromString(reply).partial_success.rejected_data_points == 1
    got = {
        dict(lbl)["token_type"]: v
        for (n, lbl), v in samples(receiver).items()
        if n == "gen_ai_server_token_usage_total"
    }
    assert got == {"t0": 10.0}
    reasons = {
        dict(lbl)["reason"]: v
        for (n, lbl), v in samples(receiver).items()
        if n == "gpuslo_otlp_rejected_data_points_total"
    }
    assert sum(reasons.values()) == 4
    assert {"not_finite", "negative"} <= set(reasons)


# --------------------------------------------------------------------------- whole or nothing
def test_an_extreme_exponential_histogram_gets_an_answer_and_no_double_count(server):
    receiver, _, url = server
    extreme = {
        "name": "gen_ai.server.time_to_first_token",
        "unit": "s",
        "exponentialHistogram": {
            "aggregationTemporality": 1,
            "dataPoints": [
                {
                    "count": "1",
                    "sum": 1.0,
                    "scale": -10,
                    "positive": {"offset": 2**31 - 2, "bucketCounts": ["1"]},
                }
            ],
        },
    }
    body = export(hist(), extreme)
    for attempt in (1, 2):  # the client retries only when it got no usable answer
        status, reply = post(url, body)
        assert status == 200
        response = ExportMetricsServiceResponse.FromString(reply)
        assert response.partial_success.rejected_data_points in (0, 1)
        assert count_of(receiver) == attempt  # the valid point: once per answered export


def test_an_export_that_fails_half_way_changes_nothing(server, monkeypatch):
    receiver, _, url = server
    real = OtlpReceiver._point
    calls = 0

    def flaky(self: OtlpReceiver, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        real(self, *args, **kwargs)

    monkeypatch.setattr(OtlpReceiver, "_point", flaky)
    status, reply = post(url, export(hist("a"), hist("b")))
    assert 400 <= status < 500
    assert Status.FromString(reply).message
    assert count_of(receiver, "a") == 0 and count_of(receiver, "b") == 0
    status, _ = post(url, export(hist("a"), hist("b")))  # the retry counts once
    assert status == 200
    assert count_of(receiver, "a") == 1 and count_of(receiver, "b") == 1


# --------------------------------------------------------------------------- caps
def test_delta_streams_are_capped_too_and_per_sender():
    receiver = OtlpReceiver(max_streams=3, max_streams_per_sender=2)
    srv = OtlpServer(receiver, "127.0.0.1", 0)
    srv.start()
    url = "http://{}:{}/v1/metrics".format(*srv.address)
    try:
        results = []
        for sender, model in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4"), ("c", "5")]:
            status, reply = post(url, export(hist(model), resource={"k8s.pod.name": sender}))
            assert status == 200
            results.append(
                ExportMetricsServiceResponse.FromString(reply).partial_success.rejected_data_points
            )
        # a's third stream is over its sender cap; c's is over the total cap
        assert results == [0, 0, 1, 0, 1]
        s = samples(receiver)
        assert s[("gpuslo_otlp_streams", ())] == 3
        dropped = {
            dict(lbl)["reason"]: v
            for (n, lbl), v in s.items()
            if n == "gpuslo_otlp_rejected_data_points_total"
        }
        assert dropped == {"sender_streams": 1, "streams": 1}
    finally:
        srv.stop()


class _Gpu:
    """Stands for the agent's own GPU collector."""

    name = "gpu"

    def collect(self) -> list[Metric]:
        fam = Metric("DCGM_FI_DEV_GPU_UTIL", "util", "gauge")
        fam.add_sample("DCGM_FI_DEV_GPU_UTIL", {"gpu": "0"}, 50.0)
        return [fam]


def test_a_huge_export_cannot_evict_other_series_or_cut_a_histogram():
    receiver = OtlpReceiver(max_series=200)
    agent = Agent([_Gpu(), receiver], max_series=100)
    srv = OtlpServer(receiver, "127.0.0.1", 0)
    srv.start()
    url = "http://{}:{}/v1/metrics".format(*srv.address)
    try:
        assert post(url, export(hist("small"), resource={"k8s.pod.name": "a"}))[0] == 200
        # a sender with a histogram of many buckets (the real attack: 10^6 of them in 16 MB)
        n = 5000
        status, reply = post(
            url,
            export(
                hist("huge", [1] * (n + 1), [float(i + 1) for i in range(n)]),
                resource={"k8s.pod.name": "b"},
            ),
        )
        assert status == 200
        partial = ExportMetricsServiceResponse.FromString(reply).partial_success
        assert partial.rejected_data_points == 1
        # many small series: the receiver's budget (200 samples) stops them whole
        for i in range(40):
            post(url, export(hist(f"m{i}"), resource={"k8s.pod.name": "c"}))
        # c took its share (a quarter of the budget): another sender still gets room
        assert post(url, export(hist("d0"), resource={"k8s.pod.name": "d"}))[0] == 200
        assert count_of(receiver, "d0") == 1
        assert 0 < sum(count_of(receiver, f"m{i}") for i in range(40)) < 40
        agent.sample_all()
        text = agent.render()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert "DCGM_FI_DEV_GPU_UTIL" in fams  # the agent's own families
        for name in ("gpuslo_otlp_data_points", "gpuslo_otlp_requests", "gpuslo_otlp_streams"):
            assert name in fams, name  # the receiver's self-metrics
        h = fams["gen_ai_server_request_duration_seconds"]
        by_series: dict[tuple[tuple[str, str], ...], set[str]] = {}
        for s in h.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            by_series.setdefault(key, set()).add(s.name.rsplit("_", 1)[-1])
        assert all(parts == {"bucket", "count", "sum"} for parts in by_series.values())
        models = {dict(k)["model"] for k in by_series}
        assert "small" in models and "huge" not in models
        assert sum(len(f.samples) for n_, f in fams.items() if n_.startswith("gen_ai")) <= 200
        dropped = sum(
            s.value
            for f in fams.values()
            for s in f.samples
            if s.name == "gpuslo_otlp_rejected_data_points_total"
        )
        assert dropped >= 1 + 1  # the huge point and at least one series over the budget
    finally:
        srv.stop()


def test_the_agent_never_cuts_a_histogram_series_in_half():
    class Many:
        name = "many"

        def collect(self) -> list[Metric]:
            fam = Metric("h_seconds", "h", "histogram")
            for i in range(10):
                for le in ("1", "+Inf"):
                    fam.add_sample("h_seconds_bucket", {"i": str(i), "le": le}, 1.0)
                fam.add_sample("h_seconds_count", {"i": str(i)}, 1.0)
                fam.add_sample("h_seconds_sum", {"i": str(i)}, 1.0)
            return [fam]

    agent = Agent([Many()], max_series=10)  # 2.5 series' worth
    agent.sample_all()
    text = agent.render()
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "h_seconds")
    assert len(fam.samples) == 8  # two whole series
    assert json.dumps(sorted({s.labels["i"] for s in fam.samples})) == '["0", "1"]'


@pytest.mark.component
def test_the_agent_flags_set_the_limits():
    """The real agent, started with lowered limits: they reach the receiver's endpoint."""
    from tests.conftest import otlp_agent

    with otlp_agent("--otlp-max-body=4096", "--otlp-max-decompressed=8192") as (_, url):
        one = export(hist())
        assert post(url, one)[0] == 200
        assert post(url, b"\0" * 5000)[0] == 413
        status, reply = post(url, gzip.compress(one * (8192 // len(one) + 1)), "gzip")
        assert status == 413
        assert "decompress" in Status.FromString(reply).message
