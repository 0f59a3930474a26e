"""Inference-server adapters against the servers' own published /metrics output (fixtures
copied from ../shared/data/servers, quirks included; see fixtures/servers/SOURCES.md), compared
with golden canonical output."""

from __future__ import annotations

import pytest

from gpuslo.collectors.servers import (
    DYNAMO,
    SGLANG,
    TGI,
    TRITON,
    VLLM,
    ParseError,
    canonicalize,
    parse_exposition,
    recognise,
    render,
)
from tests.conftest import FIXTURES, run_gpuslo

SERVERS = FIXTURES / "servers"
CASES = [
    ("vllm_docs_design_metrics_example.prom", VLLM),
    ("vllm_docs_usage_metrics_example.prom", VLLM),
    ("sglang_docs_production_metrics_example.prom", SGLANG),
    ("dynamo-frontend_metrics_examples_fe.log.prom", DYNAMO),
    ("triton-vllm_backend_readme_example.prom", VLLM),
    ("triton_docs_histogram_example.prom", TRITON),
    ("triton_docs_counters_example.prom", TRITON),
    ("triton_core_metrics_handwritten.prom", TRITON),
    ("tgi_metrics_handwritten.prom", TGI),
]


@pytest.mark.parametrize(
    ("fixture", "adapter"), CASES, ids=[c[0].removesuffix(".prom") for c in CASES]
)
def test_each_server_is_recognised_and_matches_its_golden(golden, fixture, adapter):
    samples = parse_exposition((SERVERS / fixture).read_text())
    assert recognise(samples) is adapter
    series = canonicalize(samples, adapter, {"namespace": "llm", "pod": "server-0"})
    golden(f"servers_{fixture.removesuffix('.prom')}.prom", render(series))


def test_vllm_outcomes_and_the_missing_inf_bucket_restored_from_count():
    samples = parse_exposition((SERVERS / "vllm_docs_design_metrics_example.prom").read_text())
    series = {
        (n, dict(lbl).get("outcome") or dict(lbl).get("le")): v
        for n, lbl, v in canonicalize(samples, VLLM)
    }
    assert series[("gen_ai_server_requests_total", "success")] == 132  # stop 1 + length 131
    assert series[("gen_ai_server_requests_total", "cancelled")] == 0  # abort
    assert series[("gen_ai_server_time_to_first_token_seconds_bucket", "+Inf")] == 140  # = _count
    assert ("gen_ai_server_time_to_first_token_seconds_sum", None) not in series  # none printed


def test_bucket_bounds_keep_their_values_in_one_spelling():
    samples = parse_exposition(
        (SERVERS / "sglang_docs_production_metrics_example.prom").read_text()
    )
    les = {
        dict(lbl)["le"]
        for n, lbl, _ in canonicalize(samples, SGLANG)
        if n == "gen_ai_server_time_to_first_token_seconds_bucket"
    }
    assert {"0.001", "1.0", "2.5", "+Inf"} <= les and "1" not in les


def test_dynamo_input_tokens_come_from_the_sequence_histograms_sum():
    samples = parse_exposition(
        (SERVERS / "dynamo-frontend_metrics_examples_fe.log.prom").read_text()
    )
    source = next(s for s in samples if s.name == "dynamo_frontend_input_sequence_tokens_sum")
    tokens = {
        dict(lbl)["token_type"]: v
        for n, lbl, v in canonicalize(samples, DYNAMO)
        if n == "gen_ai_server_token_usage_total"
    }
    assert tokens["input"] == source.value and "output" in tokens


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
            "/vllm": (200, (SERVERS / "vllm_docs_design_metrics_example.prom").read_bytes()),
            "/sglang": (
                200,
                (SERVERS / "sglang_docs_production_metrics_example.prom").read_bytes(),
            ),
            "/garbage": (200, b"<html>this is not metrics {</html>"),
            "/error": (500, b"internal error"),
        }
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/hang":
                    release.wait(30)
                    return
                code, body = bodies[self.path]
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


def test_the_agent_serves_canonical_series_that_promtool_accepts(tmp_path):
    import subprocess

    from gpuslo.collectors import Agent
    from gpuslo.collectors.servers import ServerCollector, Target
    from tests.conftest import need

    t = Targets()
    try:
        agent = Agent([ServerCollector([Target(f"{t.base}/vllm"), Target(f"{t.base}/sglang")])])
        agent.sample_all()
        text = agent.render()
        agent.stop()
    finally:
        t.stop()
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in text
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
    assert 'gen_ai_server_requests_total{model="meta-llama/Llama-3.1-8B-Instruct"' in out.stdout
    assert 'pod="vllm-0"' in out.stdout and 'gpuslo_target_up{target="' in out.stdout
    bad = agent("--server-target", "http://127.0.0.1:1/metrics;server=ollama")
    assert bad.returncode == 2 and "unknown server 'ollama'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_triton_ms_buckets_become_seconds_and_durations_only_give_a_mean():
    text = (SERVERS / "triton_core_metrics_handwritten.prom").read_text()
    series = {}
    for n, lbl, v in canonicalize(parse_exposition(text), TRITON):
        labels = dict(lbl)
        series[(n, labels.get("le") or labels.get("outcome"))] = v
    # The same buckets, bounds in seconds: 100 ms -> 0.1 s.
    assert series[("gen_ai_server_time_to_first_token_seconds_bucket", "0.1")] == 900
    assert series[("gen_ai_server_time_to_first_token_seconds_sum", None)] == 60.0
    # Failures by reason: queue-full rejections are load shedding, not errors.
    assert series[("gen_ai_server_requests_total", "rejected")] == 30
    assert series[("gen_ai_server_requests_total", "cancelled")] == 5
    assert series[("gen_ai_server_requests_total", "error")] == 2
    # 96 s of request time over 1,200 successes and 37 failures: a mean, no histogram.
    assert series[("gpuslo_server_request_duration_seconds_total", None)] == 96.0
    assert not any(n == "gen_ai_server_request_duration_seconds_bucket" for n, _ in series)


def test_tgi_takes_its_model_from_the_target_and_counts_overload_as_rejected():
    samples = parse_exposition((SERVERS / "tgi_metrics_handwritten.prom").read_text())
    series = {}
    for n, lbl, v in canonicalize(samples, TGI, {"model": "mistral-7b"}):
        labels = dict(lbl)
        assert labels["model"] == "mistral-7b"
        series[(n, labels.get("outcome") or labels.get("token_type") or labels.get("le"))] = v
    assert series[("gen_ai_server_requests_total", "rejected")] == 25
    assert series[("gen_ai_server_requests_total", "error")] == 15
    assert series[("gen_ai_server_token_usage_total", "output")] == 290000
    assert series[("gen_ai_server_request_duration_seconds_bucket", "2.0")] == 1100
