"""The OTLP/HTTP receiver: real opentelemetry-sdk exporters sending to a running agent, and
hand-built exports for the cases an SDK does not produce on demand (restarts, bad bounds)."""

from __future__ import annotations

import gzip
import json
import random
import urllib.error
import urllib.request

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from gpuslo.collectors.otlp import (
    ADVISED_BOUNDS,
    OtlpReceiver,
    OtlpServer,
    exponential_to_explicit,
    outcome_of,
)
from gpuslo.collectors.tenants import TenantCap
from gpuslo.foundation.exposition import render
from tests.conftest import otlp_agent

DURATION = "gen_ai_server_request_duration_seconds"
BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


# --------------------------------------------------------------------------- helpers
def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return samples_of(text)


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def pick(samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of ``name`` whose labels include ``labels``, keyed by their labels."""
    return {
        lbl: v
        for (n, lbl), v in samples.items()
        if n == name and all(dict(lbl).get(k) == want for k, want in labels.items())
    }


def one(samples, name: str, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {found}"
    return next(iter(found.values()))


def true_cumulative(values: list[float], bounds: list[float]) -> list[int]:
    return [sum(1 for v in values if v <= b) for b in bounds] + [len(values)]


@pytest.fixture
def agent():
    """A real ``gpuslo agent`` serving /metrics and OTLP/HTTP on loopback."""
    with otlp_agent("--tenant-cap=2") as urls:
        yield urls


def settle(metrics_url: str, name: str, want_count: float, **labels: str):
    """Scrape until the agent's snapshot (sampled every 0.1 s) shows the export."""
    import time

    deadline = time.monotonic() + 5
    while True:
        samples = scrape(metrics_url)
        counts = pick(samples, name + "_count", **labels)
        if sum(counts.values()) == want_count or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def settle_on(metrics_url: str, name: str, want: float, **labels: str):
    """Scrape until ``name`` (one series) has the value ``want``, or 5 s went by."""
    import time

    deadline = time.monotonic() + 5
    while True:
        samples = scrape(metrics_url)
        if sum(pick(samples, name, **labels).values()) == want or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def sdk_provider(endpoint: str, resource: dict[str, str], **exporter_args):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, **exporter_args), export_interval_millis=3_600_000
    )
    return MeterProvider(metric_readers=[reader], resource=Resource.create(resource))


# --------------------------------------------------------------------------- end to end
def test_sdk_exports_land_as_canonical_histograms_with_exact_counts_and_sums(agent):
    """Cumulative exports (twice), a sender restart and a delta-temporality sender, all into
    one canonical series: the scrape holds exactly what was recorded."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    metrics_url, otlp_url = agent
    rng = random.Random(7)
    resource = {"k8s.namespace.name": "llm", "k8s.pod.name": "chat-0", "gpuslo.server": "vllm"}
    attrs = {"gen_ai.request.model": "llama-3-8b", "gpuslo.tenant": "acme"}
    recorded: list[float] = []
    errors = 0

    def record(provider, n: int) -> None:
        nonlocal errors
        hist = provider.get_meter("test").create_histogram(
            "gen_ai.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDS
        )
        for i in range(n):
            value = round(rng.lognormvariate(-1.0, 1.0), 6)
            failed = i % 10 == 0
            hist.record(value, {**attrs, **({"error.type": "500"} if failed else {})})
            recorded.append(value)
            errors += failed

    first = sdk_provider(otlp_url, resource)
    record(first, 300)
    assert first.force_flush()
    record(first, 200)  # cumulative: the second export carries all 500
    assert first.force_flush()
    first.shutdown()
    restarted = sdk_provider(otlp_url, resource)  # same attributes, new start time
    record(restarted, 150)
    assert restarted.force_flush()
    restarted.shutdown()
    delta = sdk_provider(
        otlp_url, resource, preferred_temporality={Histogram: AggregationTemporality.DELTA}
    )
    record(delta, 120)
    assert delta.force_flush()
    record(delta, 30)
    assert delta.force_flush()
    delta.shutdown()

    samples = settle(metrics_url, DURATION, len(recorded), model="llama-3-8b")
    base = {"model": "llama-3-8b", "tenant": "acme", "namespace": "llm", "pod": "chat-0"}
    assert one(samples, DURATION + "_count", **base, server="vllm") == len(recorded) == 800
    assert one(samples, DURATION + "_sum", **base) == pytest.approx(sum(recorded), rel=1e-12)
    buckets = pick(samples, DURATION + "_bucket", **base)
    got = [v for _, v in sorted(buckets.items(), key=lambda kv: float(dict(kv[0])["le"]))]
    assert got == true_cumulative(recorded, BOUNDS)
    outcomes = pick(samples, "gen_ai_server_requests_total", **base)
    assert {dict(k)["outcome"]: v for k, v in outcomes.items()} == {
        "success": len(recorded) - errors,
        "error": errors,
    }
    assert one(samples, "gpuslo_otlp_data_points_total", result="rejected") == 0


def test_exponential_histograms_become_the_advised_buckets_conservatively(agent):
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    metrics_url, otlp_url = agent
    rng = random.Random(11)
    provider = sdk_provider(
        otlp_url,
        {"k8s.pod.name": "chat-1"},
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()},
    )
    ttft = provider.get_meter("test").create_histogram(
        "gen_ai.server.time_to_first_token", unit="ms"
    )
    values_ms = [rng.uniform(0.5, 8000.0) for _ in range(400)]
    for v in values_ms[:100]:
        ttft.record(v, {"gen_ai.request.model": "m"})
    assert provider.force_flush()
    for v in values_ms[100:]:  # a wider range: the SDK lowers the scale between exports
        ttft.record(v, {"gen_ai.request.model": "m"})
    assert provider.force_flush()
    provider.shutdown()

    name = "gen_ai_server_time_to_first_token_seconds"
    samples = settle(metrics_url, name, 400, model="m")
    values = [v / 1000 for v in values_ms]
    assert one(samples, name + "_count", model="m") == 400
    assert one(samples, name + "_sum", model="m") == pytest.approx(sum(values), rel=1e-9)
    buckets = pick(samples, name + "_bucket", model="m")
    les = sorted(buckets, key=lambda k: float(dict(k)["le"]))
    assert [float(dict(k)["le"]) for k in les[:-1]] == list(
        ADVISED_BOUNDS["gen_ai.server.time_to_first_token"]
    )
    got = [buckets[k] for k in les]
    truth = true_cumulative(values, list(ADVISED_BOUNDS["gen_ai.server.time_to_first_token"]))
    assert got[-1] == truth[-1] == 400
    for j in range(len(got) - 1):
        # never looks faster than the data; moves an observation at most one bucket up
        assert got[j] <= truth[j]
        assert got[j] >= (truth[j - 1] if j else 0)


def test_the_instrument_helper_records_outcomes_tokens_and_tenant_through_the_agent(agent):
    from gpuslo.instrument import GenAIMetrics, Rejected

    metrics_url, otlp_url = agent
    metrics = GenAIMetrics.to_agent(
        otlp_url.removesuffix("/v1/metrics"),
        service="chat-api",
        interval=3600,
        resource={"k8s.pod.name": "api-0"},
    )
    for tenant in ("acme", "globex", "initech", "umbrella"):  # the agent's cap is 2
        with metrics.request(model="llama", tenant=tenant) as req:
            req.input_tokens(100)
            for _ in range(5):
                req.token()
    with pytest.raises(Rejected), metrics.request(model="llama", tenant="acme"):
        raise Rejected
    with pytest.raises(ZeroDivisionError), metrics.request(model="llama", tenant="acme") as req:
        req.token()
        _ = 1 / 0
    assert metrics.force_flush()
    metrics.shutdown()

    samples = settle(metrics_url, DURATION, 6, model="llama")
    outcomes = {
        (dict(k)["tenant"], dict(k)["outcome"]): v
        for k, v in pick(samples, "gen_ai_server_requests_total", model="llama").items()
    }
    assert outcomes == {
        ("acme", "success"): 1,
        ("acme", "rejected"): 1,
        ("acme", "error"): 1,
        ("globex", "success"): 1,
        ("__other__", "success"): 2,
    }
    tokens = {
        (dict(k)["tenant"], dict(k)["token_type"]): v
        for k, v in pick(samples, "gen_ai_server_token_usage_total", model="llama").items()
    }
    assert tokens[("__other__", "input")] == 200
    assert tokens[("acme", "output")] == 5 + 1  # the failed request still produced a token
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    # time to first token only for successful requests that produced one
    assert one(samples, ttft, tenant="acme") == 1
    assert one(samples, ttft, tenant="__other__") == 2
    # The receiver's process reports its tenants to the agent's cap when the agent samples
    # it; the tenants collector shows them at its next sample (one interval later at most).
    samples = settle_on(metrics_url, "gpuslo_tenants_tracked", 2)
    assert one(samples, "gpuslo_tenants_tracked") == 2
    assert one(samples, "gpuslo_tenant_overflow_total", source="otlp") > 0


# --------------------------------------------------------------------------- hand-built exports
def export(metric: dict, resource: dict[str, str] | None = None) -> ExportMetricsServiceRequest:
    body = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        {"key": k, "value": {"stringValue": v}}
                        for k, v in (resource or {"k8s.pod.name": "p0"}).items()
                    ]
                },
                "scopeMetrics": [{"metrics": [metric]}],
            }
        ]
    }
    return json_format.ParseDict(body, ExportMetricsServiceRequest())


def hist_metric(
    name: str,
    points: list[tuple[int, list[int], list[float], float]],
    temporality: int = 2,
    attrs: dict[str, str] | None = None,
    unit: str = "s",
) -> dict:
    """``points``: (start time, bucket counts, bounds, sum)."""
    return {
        "name": name,
        "unit": unit,
        "histogram": {
            "aggregationTemporality": temporality,
            "dataPoints": [
                {
                    "attributes": [
                        {"key": k, "value": {"stringValue": v}}
                        for k, v in (attrs or {"gen_ai.request.model": "m"}).items()
                    ],
                    "startTimeUnixNano": str(start),
                    "timeUnixNano": str(start + 10**9),
                    "count": str(sum(counts)),
                    "sum": total,
                    "bucketCounts": [str(n) for n in counts],
                    "explicitBounds": bounds,
                }
                for start, counts, bounds, total in points
            ],
        },
    }


def canonical(receiver: OtlpReceiver):
    return samples_of(render(receiver.collect(), False))


def test_a_restarted_or_reset_stream_adds_its_whole_value_and_counters_never_go_down():
    r = OtlpReceiver()
    name = "gen_ai.server.request.duration"
    for point in [
        (1, [1, 1, 0], [0.1, 1.0], 0.6),
        (1, [2, 3, 1], [0.1, 1.0], 4.0),  # +1, +2, +1
        (2, [1, 0, 0], [0.1, 1.0], 0.05),  # new start time: a restart, all of it is new
        (2, [0, 0, 0], [0.1, 1.0], 0.0),  # fewer than before, same start: a reset
        (2, [0, 1, 0], [0.1, 1.0], 0.3),
    ]:
        assert r.ingest(export(hist_metric(name, [point]))) == (0, "")
    s = canonical(r)
    buckets = pick(s, DURATION + "_bucket", model="m")
    assert sorted(buckets.values()) == [3, 7, 8]  # le=0.1: 2+1, le=1: 5+1+1, +Inf: 6+1+1
    assert one(s, DURATION + "_count", model="m") == 8
    assert one(s, DURATION + "_sum", model="m") == pytest.approx(4.0 + 0.05 + 0.3)


def test_delta_points_add_and_milliseconds_become_seconds():
    r = OtlpReceiver()
    name = "gen_ai.server.time_per_output_token"
    for _ in range(3):
        r.ingest(export(hist_metric(name, [(0, [2, 1], [50.0], 70.0)], temporality=1, unit="ms")))
    s = canonical(r)
    tpot = "gen_ai_server_time_per_output_token_seconds"
    assert one(s, tpot + "_bucket", le="0.05") == 6
    assert one(s, tpot + "_count") == 9
    assert one(s, tpot + "_sum") == pytest.approx(0.21)


def test_different_bounds_are_rejected_not_rebucketed_and_nothing_else_is_lost():
    r = OtlpReceiver()
    name = "gen_ai.server.request.duration"
    r.ingest(
        export(
            hist_metric(
                name, [(1, [1, 0], [0.5], 0.1)], attrs={"gen_ai.request.model": "m", "a": "1"}
            )
        )
    )
    rejected, message = r.ingest(
        export(
            hist_metric(
                name,
                [(1, [0, 0, 1], [0.1, 1.0], 2.0)],
                attrs={"gen_ai.request.model": "m", "a": "2"},
            )
        )
    )
    assert rejected == 1
    assert "bucket bounds [0.1, 1.0] differ" in message
    s = canonical(r)
    assert one(s, DURATION + "_count", model="m") == 1
    assert one(s, "gpuslo_otlp_data_points_total", result="rejected") == 1


def test_unknown_metrics_are_ignored_and_a_wrong_type_is_rejected_with_a_reason():
    r = OtlpReceiver()
    gauge = {
        "name": "gen_ai.server.request.duration",
        "gauge": {"dataPoints": [{"asDouble": 1.0}]},
    }
    other = {"name": "http.server.duration", "gauge": {"dataPoints": [{"asDouble": 1.0}]}}
    assert r.ingest(export(other)) == (0, "")
    rejected, message = r.ingest(export(gauge))
    assert (rejected, message) == (
        1,
        "gen_ai.server.request.duration: gauge is not supported for this metric",
    )
    s = canonical(r)
    assert one(s, "gpuslo_otlp_data_points_total", result="ignored") == 1


def test_token_usage_from_a_monotonic_sum_and_from_a_histogram_sum():
    r = OtlpReceiver()
    counter = {
        "name": "gen_ai.client.token.usage",
        "sum": {
            "aggregationTemporality": 2,
            "isMonotonic": True,
            "dataPoints": [
                {
                    "attributes": [
                        {"key": "gen_ai.token.type", "value": {"stringValue": "output"}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                    ],
                    "startTimeUnixNano": "5",
                    "asInt": "0",
                }
            ],
        },
    }
    for n in (10, 25):
        counter["sum"]["dataPoints"][0]["asInt"] = str(n)
        r.ingest(export(counter))
    usage = hist_metric(
        "gen_ai.client.token.usage",
        [(1, [0, 3], [4.0], 120.0)],
        attrs={"gen_ai.request.model": "m", "gen_ai.token.type": "input"},
        unit="{token}",
    )
    r.ingest(export(usage))
    s = canonical(r)
    tokens = "gen_ai_server_token_usage_total"
    assert one(s, tokens, token_type="output") == 25
    assert one(s, tokens, token_type="input") == 120


def test_new_streams_beyond_the_cap_are_rejected_and_counted():
    r = OtlpReceiver(max_streams=2)
    name = "gen_ai.server.request.duration"
    results = [
        r.ingest(
            export(hist_metric(name, [(1, [1, 0], [0.5], 0.1)], attrs={"gen_ai.request.model": m}))
        )
        for m in ("a", "b", "c")
    ]
    assert [n for n, _ in results] == [0, 0, 1]
    assert "tracks 2 streams" in results[2][1]
    s = canonical(r)
    assert set(dict(k)["model"] for k in pick(s, DURATION + "_count")) == {"a", "b"}


@pytest.mark.parametrize(
    ("error_type", "outcome"),
    [
        ("", "success"),
        ("503", "rejected"),
        ("429", "rejected"),
        ("rejected", "rejected"),
        ("asyncio.CancelledError", "cancelled"),
        ("500", "error"),
        ("_OTHER", "error"),
        ("TimeoutError", "error"),
    ],
)
def test_error_type_maps_to_an_outcome(error_type, outcome):
    assert outcome_of(error_type) == outcome


def test_exponential_buckets_go_to_the_first_bound_at_or_above_their_upper_edge():
    # scale 0: buckets (1,2], (2,4], (4,8] holding 1, 2, 3; zero bucket 4; one negative value
    cum = exponential_to_explicit(0, 4, 0, [1, 2, 3], 1, [2.5, 5.0, 10.0])
    assert cum == [5 + 1, 5 + 1 + 2, 5 + 1 + 2 + 3, 11]
    # (2,4] straddles 3.0: counted above it, never below
    assert exponential_to_explicit(0, 0, 1, [1], 0, [3.0, 4.0]) == [0, 1, 1]
    # an edge that equals a bound (4 = 2**2) stays in that bound's bucket
    assert exponential_to_explicit(0, 0, 1, [1], 0, [4.0]) == [1, 1]


def test_tenant_cap_admits_first_come_and_folds_the_rest():
    cap = TenantCap(2)
    assert [cap.admit(t, "x") for t in ("a", "b", "c", "a", "d")] == [
        "a",
        "b",
        "__other__",
        "a",
        "__other__",
    ]
    fams = {m.name: m for m in cap.metrics()}
    assert fams["gpuslo_tenant_overflow_total"].samples[0].value == 2


# --------------------------------------------------------------------------- the HTTP endpoint
@pytest.fixture
def endpoint():
    receiver = OtlpReceiver()
    server = OtlpServer(receiver, "127.0.0.1", 0)
    server.start()
    yield receiver, "http://{}:{}/v1/metrics".format(*server.address)
    server.stop()


def post(url: str, body: bytes, ctype: str, encoding: str | None = None):
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if encoding:
        req.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_json_and_gzipped_protobuf_are_accepted_and_partial_success_is_reported(endpoint):
    receiver, url = endpoint
    good = hist_metric("gen_ai.server.request.duration", [(1, [1, 0], [0.5], 0.1)])
    body = json.dumps(json_format.MessageToDict(export(good))).encode()
    status, ctype, reply = post(url, body, "application/json")
    assert (status, ctype, json.loads(reply)) == (200, "application/json", {})
    bad = hist_metric(
        "gen_ai.server.request.duration",
        [(1, [1, 0, 0], [0.1, 1.0], 0.1)],
        attrs={"gen_ai.request.model": "m", "x": "y"},
    )
    status, ctype, reply = post(
        url, gzip.compress(export(bad).SerializeToString()), "application/x-protobuf", "gzip"
    )
    response = ExportMetricsServiceResponse.FromString(reply)
    assert status == 200
    assert response.partial_success.rejected_data_points == 1
    assert "differ" in response.partial_success.error_message
    assert receiver.points["accepted"] == 1


@pytest.mark.parametrize(
    ("body", "ctype", "code"),
    [
        (b"\xff\xff\xff garbage", "application/x-protobuf", 400),
        (b"{not json", "application/json", 400),
        (b"name=1", "application/x-www-form-urlencoded", 415),
    ],
)
def test_bad_requests_get_a_status_and_change_nothing(endpoint, body, ctype, code):
    from google.rpc.status_pb2 import Status

    receiver, url = endpoint
    status, _, reply = post(url, body, ctype)
    assert status == code
    if ctype == "application/x-protobuf":
        assert Status.FromString(reply).message.startswith("not an OTLP metrics export")
    assert receiver.points == {"accepted": 0, "ignored": 0, "rejected": 0}
    assert receiver.requests == {str(code): 1}


def test_agent_cli_refuses_bad_otlp_flags():
    from tests.conftest import run_gpuslo

    for args, message in [
        (["--otlp-listen", "nowhere"], "--otlp-listen: expected HOST:PORT"),
        (["--otlp-listen", "127.0.0.1:0", "--once"], "needs a serving agent"),
        (["--tenant-cap", "-1"], "--tenant-cap: must be >= 0"),
        (["--otlp-grpc-listen", "127.0.0.1:0", "--once"], "needs a serving agent"),
        (["--otlp-grpc-listen", "nowhere"], "--otlp-grpc-listen: expected HOST:PORT"),
        (
            ["--otlp-grpc-listen", "127.0.0.1:0", "--otlp-max-inflight", "0"],
            "--otlp-max-inflight: must be >= 1",
        ),
    ]:
        proc = run_gpuslo("agent", "--no-collector.gpu", "--no-collector.infiniband", *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
