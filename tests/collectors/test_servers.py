"""Inference-server adapters against gpuslo's own /metrics fixtures (fixtures/servers/ beside this
file: written from each server's documented metric names, types, labels and bucket layouts, with
invented values; see the README there), compared with golden canonical output. A separate replay
runs the adapters over the servers' own published scrapes in ../shared/data/servers when that
folder is there (a developer checkout, not a user's clone) and checks behaviour, not goldens."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest

from gpuslo.collectors.servers import (
    DYNAMO,
    DYNAMO_COMPONENT,
    EPP,
    SGLANG,
    TGI,
    TRITON,
    TRTLLM,
    VLLM,
    ParseError,
    Series,
    canonicalize,
    parse_exposition,
    read_page,
    recognise,
    recognise_all,
    render,
)
from tests.conftest import run_gpuslo

SERVERS = Path(__file__).parent / "fixtures" / "servers"
# Upstream scrapes kept outside the repository: the shared folder beside the checkout's root.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "servers"

# fixture -> the adapters that read it, in order (the first gives the server label).
CASES = [
    ("vllm_v1_metrics.prom", [VLLM]),
    ("vllm_v1_current_metrics.prom", [VLLM]),
    ("sglang_metrics.prom", [SGLANG]),
    ("trtllm_serve_metrics.prom", [TRTLLM]),
    ("dynamo_frontend_metrics.prom", [DYNAMO]),
    ("dynamo_component_metrics.prom", [DYNAMO_COMPONENT]),
    ("dynamo_trtllm_worker_metrics.prom", [TRTLLM, DYNAMO_COMPONENT]),  # engine's, passed through
    ("triton_server_metrics.prom", [TRITON]),
    ("triton_core_metrics_handwritten.prom", [TRITON]),
    ("triton_vllm_backend_metrics.prom", [VLLM, TRITON]),  # vllm:* re-exported by Triton
    ("tgi_router_metrics.prom", [TGI]),
    ("tgi_metrics_handwritten.prom", [TGI]),
    ("epp_metrics.prom", [EPP]),
    ("epp_inference_model_metrics.prom", [EPP]),
]


def text(fixture: str) -> str:
    return (SERVERS / fixture).read_text()


def series_of(fixture: str, adapter, extra: dict[str, str] | None = None) -> list[Series]:
    return canonicalize(parse_exposition(text(fixture)), adapter, extra)


def page_of(fixture: str) -> list[Series]:
    """The fixture read as the collector reads a page: by every adapter it carries."""
    samples = parse_exposition(text(fixture))
    return read_page(samples, recognise_all(samples))


def total(series: list[Series], name: str, **labels: str) -> float:
    """The sum of ``name`` over series carrying ``labels``."""
    return sum(
        v
        for n, lbl, v in series
        if n == name and all(dict(lbl).get(k) == x for k, x in labels.items())
    )


def source(fixture: str, name: str, **labels: str) -> float:
    """The sum of a source sample over the fixture (the upstream side of an assertion)."""
    return sum(
        s.value
        for s in parse_exposition(text(fixture))
        if s.name == name and all(s.label(k) == v for k, v in labels.items())
    )


def by(series: list[Series], *keys: str) -> dict[tuple, float]:
    """{(name, label values of ``keys``...): value}, None for a missing label."""
    return {(n, *(dict(lbl).get(k) for k in keys)): v for n, lbl, v in series}


def assert_sane(series: list[Series]) -> int:
    """Every value finite and non-negative; every histogram's buckets cumulative (non-decreasing
    with the bound), ending in +Inf, and +Inf equal to _count. Returns how many histograms."""
    buckets: dict[tuple, dict[float, float]] = defaultdict(dict)
    counts: dict[tuple, float] = {}
    for name, labels, value in series:
        assert math.isfinite(value) and value >= 0, (name, labels, value)
        rest = tuple(kv for kv in labels if kv[0] != "le")
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            buckets[(name.removesuffix("_bucket"), rest)][float(le)] = value
        elif name.endswith("_count"):
            counts[(name.removesuffix("_count"), rest)] = value
    for key, hist in buckets.items():
        bounds = sorted(hist)
        values = [hist[b] for b in bounds]
        assert values == sorted(values), f"{key}: buckets not cumulative: {values}"
        assert bounds[-1] == math.inf, f"{key}: no +Inf bucket"
        if key in counts:
            assert hist[math.inf] == counts[key], f"{key}: +Inf {hist[math.inf]} != _count"
    return len(buckets)


def test_every_fixture_has_a_case():
    assert {p.name for p in SERVERS.glob("*.prom")} == {fixture for fixture, _ in CASES}


@pytest.mark.parametrize(
    ("fixture", "adapters"), CASES, ids=[c[0].removesuffix(".prom") for c in CASES]
)
def test_each_server_is_recognised_and_matches_its_golden(golden, fixture, adapters):
    samples = parse_exposition(text(fixture))
    assert recognise_all(samples) == adapters
    assert recognise(samples) is adapters[0]
    series = read_page(samples, adapters, {"namespace": "llm", "pod": "server-0"})
    assert assert_sane(series) >= 1
    assert {dict(lbl)["server"] for _, lbl, _ in series} == {adapters[0].server}
    for name, _, value in series:
        if name.endswith("_ratio"):
            assert 0 <= value <= 1, (name, value)
    golden(f"servers_{fixture.removesuffix('.prom')}.prom", render(series))


def test_vllm_finished_reasons_become_outcomes_summed_over_engines():
    samples = parse_exposition(text("vllm_v1_metrics.prom"))
    finished = defaultdict(float)
    for s in samples:
        if s.name == "vllm:request_success_total":
            finished[s.label("finished_reason")] += s.value
    series = by(canonicalize(samples, VLLM), "outcome")
    assert series[("gen_ai_server_requests_total", "cancelled")] == finished["abort"]
    assert (
        series[("gen_ai_server_requests_total", "success")] >= finished["stop"] + finished["length"]
    )
    assert sum(v for (n, _), v in series.items() if n == "gen_ai_server_requests_total") == sum(
        finished.values()
    )


def test_vllm_deprecated_and_new_tpot_names_are_not_counted_twice():
    samples = parse_exposition(text("vllm_v1_metrics.prom"))
    printed = sum(s.value for s in samples if s.name == "vllm:inter_token_latency_seconds_count")
    series = by(canonicalize(samples, VLLM))
    assert series[("gen_ai_server_time_per_output_token_seconds_count",)] == printed


def test_vllm_created_samples_and_the_iteration_tokens_histogram_are_not_tokens():
    samples = parse_exposition(text("vllm_v1_metrics.prom"))
    prompt = sum(s.value for s in samples if s.name == "vllm:prompt_tokens_total")
    series = canonicalize(samples, VLLM)
    assert not any("created" in n or "iteration" in n for n, _, _ in series)
    assert by(series, "token_type")[("gen_ai_server_token_usage_total", "input")] == prompt


def test_vllm_finished_reason_error_is_an_error_outcome():
    series = by(series_of("vllm_v1_metrics.prom", VLLM), "outcome")
    assert series[("gen_ai_server_requests_total", "error")] == source(
        "vllm_v1_metrics.prom", "vllm:request_success_total", finished_reason="error"
    )
    current = by(series_of("vllm_v1_current_metrics.prom", VLLM), "outcome")
    assert current[("gen_ai_server_requests_total", "error")] == 3
    assert current[("gen_ai_server_requests_total", "success")] == 3702 + 402 + 1  # + repetition


@pytest.mark.parametrize(
    ("fixture", "adapter", "gauge", "expected"),
    [
        # two engines: the mean of 0.4125 and 0.3875, the deprecated alias not added on top
        ("vllm_v1_metrics.prom", VLLM, "vllm:kv_cache_usage_perc", 0.4),
        ("vllm_v1_current_metrics.prom", VLLM, "vllm:kv_cache_usage_perc", 0.5125),
        # two data-parallel ranks: the mean of 0.63 and 0.57
        ("sglang_metrics.prom", SGLANG, "sglang:token_usage", 0.6),
        ("trtllm_serve_metrics.prom", TRTLLM, "trtllm_kv_cache_utilization", 0.6183),
    ],
    ids=["vllm-two-engines", "vllm-current", "sglang-dp-ranks", "trtllm"],
)
def test_kv_cache_usage_stays_a_ratio_the_mean_over_engines(fixture, adapter, gauge, expected):
    kv = [v for n, _, v in series_of(fixture, adapter) if n == "gpuslo_server_kv_cache_usage_ratio"]
    printed = [s.value for s in parse_exposition(text(fixture)) if s.name == gauge]
    assert kv == [pytest.approx(sum(printed) / len(printed))]
    assert kv == [pytest.approx(expected)]


def test_vllm_removed_kv_cache_name_is_read_only_where_the_new_one_is_absent():
    def kv(lines: list[str]) -> list[float]:
        series = canonicalize(parse_exposition("\n".join(lines)), VLLM)
        return [v for n, _, v in series if n == "gpuslo_server_kv_cache_usage_ratio"]

    old = 'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25'
    new = 'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.75'
    assert kv([old]) == [0.25]  # before 0.11: the only name there is
    assert kv([old, new]) == [0.75]  # both printed (--show-hidden-metrics): the new one


def test_vllm_tpot_is_per_request_where_printed_else_the_inter_token_latency():
    fixture = "vllm_v1_current_metrics.prom"
    tpot = by(series_of(fixture, VLLM))[("gen_ai_server_time_per_output_token_seconds_count",)]
    assert tpot == source(fixture, "vllm:request_time_per_output_token_seconds_count")
    assert tpot != source(fixture, "vllm:inter_token_latency_seconds_count")


def test_vllm_http_requests_total_is_not_an_outcome_count():
    # The API server's instrumentator counts every handler (/health, /metrics) by status class,
    # and a request the engine finished is in both counters: adding it would count it twice.
    fixture = "vllm_v1_current_metrics.prom"
    assert source(fixture, "http_requests_total") > 0
    series = series_of(fixture, VLLM)
    assert total(series, "gen_ai_server_requests_total") == source(
        fixture, "vllm:request_success_total"
    )


def test_sglang_inter_token_latency_is_the_time_per_output_token():
    series = by(series_of("sglang_metrics.prom", SGLANG))
    assert series[("gen_ai_server_time_per_output_token_seconds_count",)] == source(
        "sglang_metrics.prom", "sglang:inter_token_latency_seconds_count"
    )


def test_sglang_request_count_gives_successes_and_aborts_are_cancelled():
    fixture = "sglang_metrics.prom"
    series = series_of(fixture, SGLANG)
    finished = source(fixture, "sglang:num_requests_total")
    aborted = source(fixture, "sglang:num_aborted_requests_total")
    assert total(series, "gen_ai_server_requests_total", outcome="cancelled") == aborted
    assert total(series, "gen_ai_server_requests_total", outcome="success") == finished - aborted
    assert total(series, "gen_ai_server_requests_total") == finished


def test_a_remainder_outcome_never_goes_down_until_the_server_restarts():
    def scrape(state, requests: float, aborted: float) -> float:
        page = (
            f'sglang:num_requests_total{{model_name="m"}} {requests}\n'
            f'sglang:num_aborted_requests_total{{model_name="m"}} {aborted}\n'
        )
        series = canonicalize(parse_exposition(page), SGLANG, state=state)
        return total(series, "gen_ai_server_requests_total", outcome="success")

    state: dict = {}
    assert scrape(state, 100, 0) == 100
    # an abort counted before its request (the scrape between the two increments): held
    assert scrape(state, 100, 5) == 100
    assert scrape(state, 110, 5) == 105  # caught up: exact again
    assert scrape(state, 3, 0) == 3  # the server restarted: its counters start again
    assert scrape({}, 100, 5) == 95  # no state: the plain difference


def test_a_missing_inf_bucket_is_restored_from_count_and_a_missing_sum_stays_missing():
    # A truncated vLLM histogram (a scrape cut short, or an example with its tail elided).
    truncated = "\n".join(
        [
            "# TYPE vllm:time_to_first_token_seconds histogram",
            'vllm:time_to_first_token_seconds_bucket{le="0.05",model_name="m"} 3.0',
            'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 40.0',
            'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 57.0',
            'vllm:time_to_first_token_seconds_count{model_name="m"} 61.0',
        ]
    )
    series = by(canonicalize(parse_exposition(truncated), VLLM), "le")
    assert series[("gen_ai_server_time_to_first_token_seconds_bucket", "+Inf")] == 61  # = _count
    assert ("gen_ai_server_time_to_first_token_seconds_sum", None) not in series  # none printed


@pytest.mark.parametrize(
    ("fixture", "adapter", "family", "printed", "canonical"),
    [
        # prometheus_client prints floats: le="1.0" stays as it is
        ("sglang_metrics.prom", SGLANG, "time_to_first_token", "1.0", "1.0"),
        # prometheus-cpp (Triton's vLLM backend) prints le="1"
        ("triton_vllm_backend_metrics.prom", VLLM, "time_to_first_token", "1", "1.0"),
        # Rust's prometheus crate (Dynamo) prints le="0" and le="12"
        ("dynamo_frontend_metrics.prom", DYNAMO, "request_duration", "0", "0.0"),
        ("dynamo_frontend_metrics.prom", DYNAMO, "request_duration", "12", "12.0"),
        # metrics-exporter-prometheus (TGI) prints the float's shortest round-trip digits
        ("tgi_router_metrics.prom", TGI, "request_duration", "0.00015000000000000001", "0.00015"),
    ],
)
def test_bucket_bounds_keep_their_values_in_one_spelling(
    fixture, adapter, family, printed, canonical
):
    assert f'le="{printed}"' in text(fixture)
    name = f"gen_ai_server_{family}_seconds_bucket"
    les = {dict(lbl)["le"] for n, lbl, _ in series_of(fixture, adapter) if n == name}
    assert canonical in les and "+Inf" in les
    assert printed == canonical or printed not in les


def test_dynamo_input_tokens_come_from_the_sequence_histograms_sum():
    samples = parse_exposition(text("dynamo_frontend_metrics.prom"))
    source = {
        s.label("model"): s.value
        for s in samples
        if s.name == "dynamo_frontend_input_sequence_tokens_sum"
    }
    tokens = by(canonicalize(samples, DYNAMO), "model", "token_type")
    for model, value in source.items():
        assert tokens[("gen_ai_server_token_usage_total", model, "input")] == value
        assert ("gen_ai_server_token_usage_total", model, "output") in tokens


def test_dynamo_status_and_error_type_become_the_outcome_and_model_gauges_are_left_out():
    series = series_of("dynamo_frontend_metrics.prom", DYNAMO)
    requests = by(series, "model", "outcome")
    model = "acme/reasoner-8b"
    assert requests[("gen_ai_server_requests_total", model, "success")] == 5713
    assert requests[("gen_ai_server_requests_total", model, "cancelled")] == 10  # client gone
    assert requests[("gen_ai_server_requests_total", model, "rejected")] == 4  # overload, 503
    assert (
        requests[("gen_ai_server_requests_total", model, "error")] == 9 + 4
    )  # internal, validation
    # the model_* gauges carry the display name; nothing canonical comes from them
    assert {dict(lbl)["model"] for _, lbl, _ in series} == {"acme/reasoner-8b", "acme/coder-32b"}


def test_dynamo_running_leaves_out_the_queued_requests():
    fixture = "dynamo_frontend_metrics.prom"
    gauges = by(series_of(fixture, DYNAMO), "model")
    for model in ("acme/reasoner-8b", "acme/coder-32b"):
        inflight = source(fixture, "dynamo_frontend_inflight_requests", model=model)
        queued = source(fixture, "dynamo_frontend_queued_requests", model=model)
        assert gauges[("gpuslo_server_requests_waiting", model)] == queued
        assert gauges[("gpuslo_server_requests_running", model)] == inflight - queued


def test_dynamo_components_give_latency_and_load_but_no_outcome_split():
    fixture = "dynamo_component_metrics.prom"
    series = series_of(fixture, DYNAMO_COMPONENT)
    generate = {"dynamo_endpoint": "generate"}
    # only the inference endpoint: clear_kv_blocks calls are no model requests
    assert total(series, "gen_ai_server_request_duration_seconds_count") == source(
        fixture, "dynamo_component_request_duration_seconds_count", **generate
    )
    assert total(series, "gpuslo_server_requests_running") == source(
        fixture, "dynamo_component_inflight_requests", **generate
    )
    assert total(series, "gpuslo_server_requests_received_total") == source(
        fixture, "dynamo_component_requests_total", **generate
    )
    errors = by(series, "error_type")
    assert errors[("gpuslo_server_errors_total", "publish_response")] == 19
    # errors are events (a cancel counts as publish_response): no outcome is derived from them
    assert not any(n == "gen_ai_server_requests_total" for n, _, _ in series)


def test_a_dynamo_worker_reads_its_engine_first_and_adds_only_what_the_engine_lacks():
    fixture = "dynamo_trtllm_worker_metrics.prom"
    series = page_of(fixture)
    assert {dict(lbl)["server"] for _, lbl, _ in series} == {"trtllm"}
    # the engine's end-to-end latency, not the work handler's as well
    assert total(series, "gen_ai_server_request_duration_seconds_count") == source(
        fixture, "trtllm_e2e_request_latency_seconds_count"
    )
    # TensorRT-LLM 1.1 prints no running gauge: the work handler's in-flight count stands in
    assert total(series, "gpuslo_server_requests_running") == source(
        fixture, "dynamo_component_inflight_requests"
    )
    assert total(series, "gen_ai_server_requests_total") == source(
        fixture, "trtllm_request_success_total"
    )


def test_trtllm_finish_reasons_and_http_errors_become_outcomes():
    series = by(series_of("trtllm_serve_metrics.prom", TRTLLM), "outcome")
    assert series[("gen_ai_server_requests_total", "success")] == 8211 + 930  # stop, length
    assert series[("gen_ai_server_requests_total", "cancelled")] == 41 + 3  # cancelled, HTTP 499
    assert series[("gen_ai_server_requests_total", "error")] == 6 + 12 + 2  # timeout, 400, 500
    assert series[("gen_ai_server_requests_total", "rejected")] == 57  # HTTP 429


def test_trtllm_early_dynamo_prefix_is_read_as_the_current_one():
    page = "\n".join(
        line.replace("trtllm_", "trtllm:", 1)
        for line in text("trtllm_serve_metrics.prom").splitlines()
        if not line.startswith("#")
    )
    samples = parse_exposition(page)
    assert recognise(samples) is TRTLLM
    assert canonicalize(samples, TRTLLM) == series_of("trtllm_serve_metrics.prom", TRTLLM)


def test_epp_requests_minus_errors_are_successes_and_shed_requests_are_rejected():
    fixture = "epp_metrics.prom"
    series = series_of(fixture, EPP)
    model = "food-review"
    arrived = source(fixture, "inference_objective_request_total", model_name=model)
    shed = source(
        fixture,
        "inference_objective_request_error_total",
        error_code="InferencePoolResourceExhausted",
    )
    failed = source(fixture, "inference_objective_request_error_total", model_name=model)
    got = by(series, "model", "outcome")
    assert got[("gen_ai_server_requests_total", model, "rejected")] == shed
    assert got[("gen_ai_server_requests_total", model, "error")] == failed - shed
    assert got[("gen_ai_server_requests_total", model, "success")] == arrived - failed
    assert total(series, "gen_ai_server_requests_total", model=model) == arrived
    # normalized TPOT includes the time to first token: it is not the canonical TPOT
    assert not any(n.startswith("gen_ai_server_time_per_output_token") for n, _, _ in series)


def test_epp_pool_gauges_are_labelled_by_pool_and_old_names_read_the_same():
    pools = by(series_of("epp_metrics.prom", EPP), "pool")
    assert pools[("gpuslo_pool_kv_cache_usage_ratio", "vllm-chat-pool")] == 0.47
    assert pools[("gpuslo_pool_queue_size_average", "vllm-chat-pool")] == 3.25
    assert pools[("gpuslo_pool_ready_pods", "vllm-chat-pool")] == 4
    old = by(series_of("epp_inference_model_metrics.prom", EPP), "model", "outcome")
    assert old[("gen_ai_server_requests_total", "tweet-summary", "error")] == 13  # no error_code
    assert old[("gen_ai_server_requests_total", "tweet-summary", "success")] == 812 - 13


def test_triton_versions_add_up_and_summaries_give_nothing():
    series = series_of("triton_server_metrics.prom", TRITON)
    requests = by(series, "model", "outcome")
    assert requests[("gen_ai_server_requests_total", "embedder", "success")] == 20412 + 35110
    assert requests[("gen_ai_server_requests_total", "chat_llm", "rejected")] == 41
    assert requests[("gen_ai_server_requests_total", "chat_llm", "cancelled")] == 12
    assert (
        requests[("gen_ai_server_requests_total", "embedder", "error")] == 3 + 1
    )  # BACKEND, OTHER
    assert not any("summary" in n or "quantile" in dict(lbl) for n, lbl, _ in series)
    # 1881 s of queueing in microseconds
    queue = by(series, "model")[("gpuslo_server_queue_duration_seconds_total", "chat_llm")]
    assert queue == pytest.approx(1881)


def test_triton_vllm_backend_is_read_as_vllm_and_triton_adds_its_request_outcomes():
    fixture = "triton_vllm_backend_metrics.prom"
    samples = parse_exposition(text(fixture))
    assert recognise_all(samples) == [VLLM, TRITON]
    series = page_of(fixture)
    tokens = by(series, "model", "token_type")
    assert tokens[("gen_ai_server_token_usage_total", "llama_chat", "output")] == 541632
    outcomes = by(series, "outcome")
    assert outcomes[("gen_ai_server_requests_total", "success")] == source(
        fixture, "nv_inference_request_success"
    )
    assert outcomes[("gen_ai_server_requests_total", "cancelled")] == 19
    assert total(series, "gpuslo_server_requests_waiting") == source(
        fixture, "nv_inference_pending_request_count"
    )
    # latency from vLLM's histograms only: Triton's mean-only counter would say it again
    assert total(series, "gen_ai_server_time_to_first_token_seconds_count") == source(
        fixture, "vllm:time_to_first_token_seconds_count"
    )
    assert not any(n == "gpuslo_server_request_duration_seconds_total" for n, _, _ in series)


@pytest.mark.parametrize(
    "text", ["not metrics at all {", 'foo{a="1" 2', "foo 12abc", "<html>500</html>"]
)
def test_garbage_is_a_parse_error_naming_the_line(text):
    with pytest.raises(ParseError, match="line 1"):
        parse_exposition(text)


def test_an_unknown_server_is_not_recognised():
    assert recognise(parse_exposition("node_load1 0.5\nup 1\n")) is None


class Targets:
    """Loopback HTTP servers: a vLLM, an SGLang, one that hangs, one that returns garbage, one
    that returns HTTP 500; plus a port nothing listens on (a server that disappeared)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release = threading.Event()
        bodies = {
            "/vllm": (200, (SERVERS / "vllm_v1_metrics.prom").read_bytes()),
            "/sglang": (200, (SERVERS / "sglang_metrics.prom").read_bytes()),
            "/garbage": (200, b"<html>this is not metrics {</html>"),
            "/error": (500, b"internal error"),
            "/epp": (200, (SERVERS / "epp_metrics.prom").read_bytes()),
            "/worker": (200, (SERVERS / "dynamo_trtllm_worker_metrics.prom").read_bytes()),
        }
        # /sglang-live serves these in turn: an abort counted before its request, then a restart
        self.live = [
            b'sglang:num_requests_total{model_name="m"} 100.0\n',
            b'sglang:num_requests_total{model_name="m"} 100.0\n'
            b'sglang:num_aborted_requests_total{model_name="m"} 5.0\n',
            b'sglang:num_requests_total{model_name="m"} 2.0\n',
        ]
        live = self.live
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/hang":
                    release.wait(30)
                    return
                code, body = (
                    (200, live.pop(0)) if self.path == "/sglang-live" else bodies[self.path]
                )
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


def test_bad_targets_mark_themselves_down_within_the_timeout_and_good_ones_still_report():
    import time

    from gpuslo.collectors.servers import ServerCollector, Target
    from tests.conftest import free_port

    t = Targets()
    try:
        gone = f"http://127.0.0.1:{free_port()}/metrics"
        targets = [
            Target(f"{t.base}/vllm", (("namespace", "llm"), ("pod", "vllm-0"))),
            Target(f"{t.base}/sglang", (("namespace", "llm"), ("pod", "sglang-0"))),
            Target(f"{t.base}/hang"),
            Target(f"{t.base}/garbage"),
            Target(f"{t.base}/error"),
            Target(gone),
        ]
        collector = ServerCollector(targets, timeout=1.0)
        started = time.monotonic()
        families = {m.name: m for m in collector.collect()}
        took = time.monotonic() - started
    finally:
        t.stop()
    up = {
        s.labels["target"].rsplit("/", 1)[1]: s.value for s in families["gpuslo_target_up"].samples
    }
    assert up == {"vllm": 1, "sglang": 1, "hang": 0, "garbage": 0, "error": 0, "metrics": 0}
    assert took < 2.5  # bounded by the timeout, not by the hanging server
    assert "HTTP Error 500" in collector.errors[f"{t.base}/error"]
    assert "line 1" in collector.errors[f"{t.base}/garbage"]
    ttft = families["gen_ai_server_time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    pods = {s.labels["pod"] for s in ttft.samples}
    assert pods == {"vllm-0", "sglang-0"}


def test_the_collector_keeps_a_remainder_from_going_down_until_the_server_restarts():
    from gpuslo.collectors.servers import ServerCollector, Target

    t = Targets()
    try:
        collector = ServerCollector([Target(f"{t.base}/sglang-live")], timeout=2.0)
        seen = []
        for _ in range(3):
            families = {m.name: m for m in collector.collect()}
            samples = families["gen_ai_server_requests_total"].samples
            seen.append(sum(s.value for s in samples if s.labels["outcome"] == "success"))
        collector.close()
    finally:
        t.stop()
    assert seen == [100, 100, 2]  # held while 5 aborts ran ahead of their requests; then reset


@pytest.mark.component
def test_the_agent_serves_canonical_series_that_promtool_accepts(tmp_path):
    import subprocess

    from gpuslo.collectors import Agent
    from gpuslo.collectors.servers import ServerCollector, Target
    from tests.conftest import need

    t = Targets()
    try:
        paths = ("vllm", "sglang", "epp", "worker")
        agent = Agent([ServerCollector([Target(f"{t.base}/{path}") for path in paths])])
        agent.sample_all()
        text = agent.render()
        agent.stop()
    finally:
        t.stop()
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in text
    assert "# TYPE gpuslo_pool_ready_pods gauge" in text
    assert "# TYPE gpuslo_server_errors_total counter" in text
    out = subprocess.run(
        [need("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_agent_cli_re_exposes_a_server_target_and_refuses_bad_ones():
    def agent(*args: str):
        return run_gpuslo(
            "agent", "--once", "--no-collector.gpu", "--no-collector.infiniband", *args
        )

    t = Targets()
    try:
        out = agent("--server-target", f"{t.base}/vllm;namespace=llm;pod=vllm-0")
    finally:
        t.stop()
    assert out.returncode == 0, out.stderr
    assert 'gen_ai_server_requests_total{model="acme-labs/chat-13b-v2"' in out.stdout
    assert 'pod="vllm-0"' in out.stdout and 'gpuslo_target_up{target="' in out.stdout
    bad = agent("--server-target", "http://127.0.0.1:1/metrics;server=ollama")
    assert bad.returncode == 2 and "unknown server 'ollama'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_triton_ms_buckets_become_seconds_and_durations_only_give_a_mean():
    series = by(series_of("triton_core_metrics_handwritten.prom", TRITON), "le", "outcome")
    # The same buckets, bounds in seconds: 100 ms -> 0.1 s.
    assert series[("gen_ai_server_time_to_first_token_seconds_bucket", "0.1", None)] == 900
    assert series[("gen_ai_server_time_to_first_token_seconds_sum", None, None)] == 60.0
    # Failures by reason: queue-full rejections are load shedding, not errors.
    assert series[("gen_ai_server_requests_total", None, "rejected")] == 30
    assert series[("gen_ai_server_requests_total", None, "cancelled")] == 5
    assert series[("gen_ai_server_requests_total", None, "error")] == 2
    # 96 s of request time over 1,200 successes and 37 failures: a mean, no histogram.
    assert series[("gpuslo_server_request_duration_seconds_total", None, None)] == 96.0
    assert not any(n == "gen_ai_server_request_duration_seconds_bucket" for n, *_ in series)


def test_tgi_takes_its_model_from_the_target_and_counts_overload_as_rejected():
    series = {}
    for n, lbl, v in series_of("tgi_metrics_handwritten.prom", TGI, {"model": "mistral-7b"}):
        labels = dict(lbl)
        assert labels["model"] == "mistral-7b"
        series[(n, labels.get("outcome") or labels.get("token_type") or labels.get("le"))] = v
    assert series[("gen_ai_server_requests_total", "rejected")] == 25
    assert series[("gen_ai_server_requests_total", "error")] == 15
    assert series[("gen_ai_server_token_usage_total", "output")] == 290000
    assert series[("gen_ai_server_request_duration_seconds_bucket", "2.0")] == 1100


# --------------------------------------------------------------------------- upstream replay
# The servers' own published scrapes (docs examples, example logs), kept out of the repository in
# ../shared/data/servers (SOURCES.md there names each one's origin). What each must give:
# (adapter or None for "not an inference server", canonical families it must produce).
TTFT, TPOT = (
    "gen_ai_server_time_to_first_token_seconds",
    "gen_ai_server_time_per_output_token_seconds",
)
E2E, REQUESTS = "gen_ai_server_request_duration_seconds", "gen_ai_server_requests_total"
TOKENS, RUNNING = "gen_ai_server_token_usage_total", "gpuslo_server_requests_running"
KV = "gpuslo_server_kv_cache_usage_ratio"
REPLAY_EXPECT = {
    "vllm_docs_design_metrics_example.prom": (VLLM, {TTFT, REQUESTS, TOKENS, RUNNING}),
    "vllm_docs_usage_metrics_example.prom": (VLLM, set()),  # only iteration_tokens_total
    "sglang_docs_production_metrics_example.prom": (SGLANG, {TTFT, TPOT, E2E, TOKENS, RUNNING, KV}),
    "dynamo-frontend_metrics_examples_fe.log.prom": (
        DYNAMO,
        {TTFT, TPOT, E2E, REQUESTS, TOKENS, RUNNING},
    ),
    "triton-vllm_backend_readme_example.prom": (VLLM, {TTFT, TPOT, E2E, TOKENS}),
    "triton_docs_counters_example.prom": (TRITON, {REQUESTS}),
    "triton_docs_histogram_example.prom": (TRITON, {TTFT}),
    "triton_docs_summary_example.prom": (TRITON, set()),  # a summary gives no histogram
    "dcgm-exporter_readme_example.prom": (None, set()),
    "dcgm-exporter_readme_k8s_example.prom": (None, set()),
}
RECORDINGS = sorted(p.name for p in SHARED.glob("*.prom")) if SHARED.is_dir() else []


def family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in (TTFT, TPOT, E2E):
            return name.removesuffix(suffix)
    return name


@pytest.mark.parametrize(
    "recording", RECORDINGS or [None], ids=[r.removesuffix(".prom") for r in RECORDINGS] or ["-"]
)
def test_replay_of_upstream_scrapes(recording):
    if not SHARED.is_dir():
        pytest.skip(
            "../shared/data/servers is absent (a user's clone): replay of upstream scrapes skipped"
        )
    if recording is None:
        pytest.skip("../shared/data/servers holds no .prom recordings: nothing to replay")
    samples = parse_exposition((SHARED / recording).read_text())
    adapters = recognise_all(samples)
    adapter = adapters[0] if adapters else None
    expected, families = REPLAY_EXPECT.get(recording, (adapter, set()))
    assert adapter is expected
    if adapter is None:
        return
    series = read_page(samples, adapters, {"namespace": "llm", "pod": "replay-0"})
    assert families <= {family(n) for n, _, _ in series}
    assert_sane(series)
    for name, labels, value in series:
        assert dict(labels)["server"] == adapter.server and dict(labels)["pod"] == "replay-0"
        if name.endswith("_ratio"):
            assert 0 <= value <= 1, (name, value)
