"""Benchmark the agent's OTLP receiver (OTLP/HTTP and OTLP/gRPC): ingest throughput (data
points per CPU-second) and what it adds to the latency of a scrape of an agent with 20 server
targets.

A real ``gpuslo agent`` runs as a subprocess on 127.0.0.1 (it serves ``/metrics`` from a scrape
process of its own); a process of the bench's own serves 20 fake vLLM targets (the published
vLLM example output), and this one sends pre-built OTLP exports (protobuf over HTTP and over
gRPC, and JSON separately): histogram points of
``gen_ai.server.request.duration`` and ``gen_ai.server.time_to_first_token`` over ``--models``
x ``--tenants`` streams, cumulative, each round carrying higher counts. CPU comes from psutil
(user + system) of the agent and its OTLP ingest process together, so "per core" means per
CPU-second both used (the agent's scrape process, which serves ``/metrics``, is left out of
the ingest figures and shown apart under load). Every loop is bounded in count.

Scrape latency is measured with ``--scrapes`` sequential gzip scrapes of ``/metrics``: (A) 20
targets, no receiver; (B) 20 targets plus the receiver holding every stream's series; (C1) as
B while one sender exports at ``--paced-rate`` points/s; (C2, C3) as B while one sender exports
as fast as it can, over HTTP (C2) or gRPC (C3). The sender is a process of its own, so the
scrapes this process times never wait for the sender's GIL.

    .venv/bin/python bench/otlp_ingest.py [--rounds 40] [--scrapes 300] \
        [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint

from gpuslo.foundation.promlab import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.agent_scrape import started  # noqa: E402
from bench.results import write_block  # noqa: E402

VLLM = (
    ROOT / "tests" / "collectors" / "fixtures" / "servers" / "vllm_v1_metrics.prom"
).read_bytes()
BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


def kv(key: str, value: str) -> KeyValue:
    out = KeyValue(key=key)
    out.value.string_value = value
    return out


def build_exports(models: int, tenants: int, rounds: int, per_request: int) -> list[bytes]:
    """Serialized exports: every round covers every stream once, split into requests."""
    streams = [
        (metric, m, t)
        for metric in ("gen_ai.server.request.duration", "gen_ai.server.time_to_first_token")
        for m in range(models)
        for t in range(tenants)
    ]
    bodies = []
    for r in range(1, rounds + 1):
        for lo in range(0, len(streams), per_request):
            req = ExportMetricsServiceRequest()
            rm = req.resource_metrics.add()
            rm.resource.attributes.extend(
                [kv("k8s.namespace.name", "llm"), kv("k8s.pod.name", "chat-0")]
            )
            sm = rm.scope_metrics.add()
            by_metric: dict[str, object] = {}
            for metric, m, t in streams[lo : lo + per_request]:
                if metric not in by_metric:
                    pb = sm.metrics.add()
                    pb.name, pb.unit = metric, "s"
                    pb.histogram.aggregation_temporality = 2
                    by_metric[metric] = pb
                point: HistogramDataPoint = by_metric[metric].histogram.data_points.add()  # type: ignore[attr-defined]
                point.attributes.extend(
                    [kv("gen_ai.request.model", f"model-{m}"), kv("gpuslo.tenant", f"tenant-{t}")]
                )
                point.start_time_unix_nano = 1_700_000_000_000_000_000
                point.time_unix_nano = point.start_time_unix_nano + r * 10**9
                counts = [r * (i % 5 + 1) for i in range(len(BOUNDS) + 1)]
                point.bucket_counts.extend(counts)
                point.explicit_bounds.extend(BOUNDS)
                point.count = sum(counts)
                point.sum = 0.3 * point.count
            bodies.append(req.SerializeToString())
    return bodies


def points_in(body: bytes) -> int:
    req = ExportMetricsServiceRequest.FromString(body)
    return sum(
        len(m.histogram.data_points)
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )


class Targets:
    """20 fake vLLM servers on one loopback port (paths /0 … /19)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(VLLM)))
                self.end_headers()
                self.wfile.write(VLLM)

        class Server(ThreadingHTTPServer):
            # The agent connects to all 20 at once: with socketserver's backlog of 5 the
            # rest wait for a SYN retransmit (1 s), which no real server makes them do.
            request_queue_size = 128

        self.http = Server(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        port = self.http.server_address[1]
        self.urls = [f"http://127.0.0.1:{port}/{i}" for i in range(20)]

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _serve_targets(urls: Any, stop: Any) -> None:
    targets = Targets()
    urls.put(targets.urls)
    stop.wait()
    targets.stop()


@contextlib.contextmanager
def targets_process() -> Iterator[list[str]]:
    """The 20 targets in a process of their own: their handler threads never compete for
    this process's GIL with the scrapes it times. Yields their URLs."""
    ctx = multiprocessing.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve_targets, args=(urls, stop), daemon=True)
    proc.start()
    try:
        yield urls.get(timeout=60)
    finally:
        stop.set()
        proc.join(timeout=10)


EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@contextlib.contextmanager
def agent(
    targets: list[str], otlp_port: int | None, grpc_port: int | None = None
) -> Iterator[tuple[psutil.Process, int]]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "gpuslo",
        "agent",
        "--no-collector.gpu",
        "--no-collector.infiniband",
        f"--listen=127.0.0.1:{port}",
        "--interval=1",
        "--log-level=warning",
        "--max-series=1000000",
    ]
    cmd += [f"--server-target={u};namespace=llm;pod=vllm-{i}" for i, u in enumerate(targets)]
    if otlp_port is not None:
        cmd.append(f"--otlp-listen=127.0.0.1:{otlp_port}")
    if grpc_port is not None:
        cmd.append(f"--otlp-grpc-listen=127.0.0.1:{grpc_port}")
    # ``started`` waits for the scrape port and lets the first samples of every target land;
    # the OTLP listeners (bound by the ingest process) are waited for here.
    with started(cmd, port) as proc:
        for p in (otlp_port, grpc_port):
            if p is not None:
                wait_port(p)
        yield proc, port


def wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


def listening(proc: psutil.Process, port: int) -> psutil.Process:
    """The agent's process, or the child of it, that listens on ``port``: the OTLP ingest
    process holds the OTLP ports, the scrape process the scrape port."""
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            for conn in p.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return p
    raise RuntimeError(f"no process of the agent listens on {port}")


def cpu(*procs: psutil.Process) -> float:
    """CPU seconds (user + system) of these processes together."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def send_grpc(
    port: int,
    bodies: list[bytes],
    stop: Any = None,
    max_requests: int | None = None,
) -> int:
    """Export the bodies in order over one gRPC channel (sequential unary calls); with
    ``stop``, cycle until it is set or ``max_requests`` went out. Returns the number sent."""
    sent = 0
    limit = max_requests if max_requests is not None else len(bodies)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        while sent < limit and not (stop is not None and stop.is_set()):
            call(bodies[sent % len(bodies)], timeout=30)
            sent += 1
    return sent


def send_all(
    port: int,
    bodies: list[bytes],
    ctype: str,
    stop: Any = None,
    max_requests: int | None = None,
    per_second: float | None = None,
) -> int:
    """POST the bodies in order over one keep-alive connection; with ``stop``, cycle through
    them until it is set or ``max_requests`` went out, ``per_second`` requests a second at
    most. Returns the number sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = 0
    limit = max_requests if max_requests is not None else len(bodies)
    started = time.perf_counter()
    try:
        while sent < limit and not (stop is not None and stop.is_set()):
            if per_second:
                ahead = started + sent / per_second - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            conn.request("POST", "/v1/metrics", bodies[sent % len(bodies)], {"Content-Type": ctype})
            resp = conn.getresponse()
            reply = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {reply[:200]!r}")
            sent += 1
    finally:
        conn.close()
    return sent


def scrape_latencies(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - started)
            time.sleep(0.01)
    finally:
        conn.close()
    return out


def under_load(
    proc: psutil.Process,
    port: int,
    otlp_port: int,
    bodies: list[bytes],
    scrapes: int,
    per_second: float | None,
    grpc_port: int | None = None,
) -> tuple[list[float], float, float, float, float]:
    """Scrape latencies while a sender exports (paced or non-stop, over HTTP or with
    ``grpc_port`` over gRPC); returns them with the points per second that went in and the
    CPU shares of the agent's process, of its ingest process and of its scrape process
    meanwhile. The sender is a
    process of its own, so the scrapes measured here never wait for the sender's GIL."""
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    sender = ctx.Process(
        target=_sender, args=(otlp_port, grpc_port, bodies, per_second, stop, out), daemon=True
    )
    sender.start()
    if out.get(timeout=60) != "ready":
        raise RuntimeError("the sender did not start")
    procs = (proc, listening(proc, otlp_port), listening(proc, port))
    before, started = [cpu(p) for p in procs], time.perf_counter()
    latencies = scrape_latencies(port, scrapes)
    took = time.perf_counter() - started
    shares = [(cpu(p) - b) / took for p, b in zip(procs, before, strict=True)]
    stop.set()
    sent = out.get(timeout=60)
    sender.join(timeout=60)
    return latencies, sent * points_in(bodies[0]) / took, *shares


def _sender(
    otlp_port: int,
    grpc_port: int | None,
    bodies: list[bytes],
    per_second: float | None,
    stop: Any,
    out: Any,
) -> None:
    out.put("ready")
    if grpc_port is not None:
        out.put(send_grpc(grpc_port, bodies, stop, 1_000_000))
    else:
        out.put(send_all(otlp_port, bodies, "application/x-protobuf", stop, 1_000_000, per_second))


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=int, default=20, help="ingest: models (default: 20)")
    ap.add_argument("--tenants", type=int, default=50, help="ingest: tenants, <= the cap of 100")
    ap.add_argument("--rounds", type=int, default=40, help="ingest: exports of every stream")
    ap.add_argument("--per-request", type=int, default=1000, help="data points per export")
    ap.add_argument("--scrape-models", type=int, default=4, help="scrape phase: models")
    ap.add_argument("--scrape-tenants", type=int, default=25, help="scrape phase: tenants")
    ap.add_argument(
        "--paced-rate",
        type=float,
        default=10_000,
        help="scrape phase C1: data points per second sent (default: %(default)s)",
    )
    ap.add_argument("--scrapes", type=int, default=300, help="scrapes per condition")
    ap.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = ap.parse_args()

    print("building exports …", file=sys.stderr)
    bodies = build_exports(args.models, args.tenants, args.rounds, args.per_request)
    points = sum(points_in(b) for b in bodies)
    json_bodies = [
        json.dumps(json_format.MessageToDict(ExportMetricsServiceRequest.FromString(b))).encode()
        for b in bodies[: max(1, len(bodies) // 4)]
    ]
    json_points = sum(points_in(b) for b in bodies[: len(json_bodies)])
    small = build_exports(args.scrape_models, args.scrape_tenants, 200, args.per_request)
    rounds_per_body = len(small) // 200 or 1
    with targets_process() as target_urls:
        otlp_port, grpc_port = free_port(), free_port()
        with agent([], otlp_port) as (proc, _):
            ingest = (proc, listening(proc, otlp_port))
            before, started = cpu(*ingest), time.perf_counter()
            send_all(otlp_port, bodies, "application/x-protobuf")
            pb_wall, pb_cpu = time.perf_counter() - started, cpu(*ingest) - before
        with agent([], None, grpc_port) as (proc, _):  # a fresh receiver: the same new streams
            ingest = (proc, listening(proc, grpc_port))
            before, started = cpu(*ingest), time.perf_counter()
            send_grpc(grpc_port, bodies)
            gr_wall, gr_cpu = time.perf_counter() - started, cpu(*ingest) - before
        otlp_port = free_port()
        with agent([], otlp_port) as (proc, _):
            ingest = (proc, listening(proc, otlp_port))
            before, started = cpu(*ingest), time.perf_counter()
            send_all(otlp_port, json_bodies, "application/json")
            js_wall, js_cpu = time.perf_counter() - started, cpu(*ingest) - before
        with agent(target_urls, None) as (_, port):
            scrape_a = scrape_latencies(port, args.scrapes)
        otlp_port, grpc_port = free_port(), free_port()
        with agent(target_urls, otlp_port, grpc_port) as (proc, port):
            send_all(otlp_port, small[:rounds_per_body], "application/x-protobuf")
            time.sleep(2.5)  # the receiver's series are in the next snapshot
            scrape_b = scrape_latencies(port, args.scrapes)
            per_body = points_in(small[0])
            loaded = [
                under_load(proc, port, otlp_port, small, args.scrapes, rate and rate / per_body)
                for rate in (args.paced_rate, None)
            ]
            loaded.append(under_load(proc, port, otlp_port, small, args.scrapes, None, grpc_port))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                size = len(resp.read())

    streams = 2 * args.models * args.tenants
    small_streams = 2 * args.scrape_models * args.scrape_tenants
    ms = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}. Command: "
        f"`.venv/bin/python bench/otlp_ingest.py --rounds {args.rounds} "
        f"--scrapes {args.scrapes} --write docs/benchmarks.md`.",
        "",
        f"Ingest: {streams} streams (2 metrics x {args.models} models x {args.tenants} tenants), "
        f"cumulative explicit histograms with {len(BOUNDS)} bounds, {args.per_request} points "
        "per export, one sender (a keep-alive HTTP connection, or one gRPC channel making "
        "sequential calls); CPU is the agent's and its OTLP ingest process's together, "
        "including the ingest process rendering the series every second.",
        "",
        "| transport, encoding | data points | wall | CPU | points/s (wall) | "
        "points per CPU-second |",
        "|---|---|---|---|---|---|",
        f"| HTTP, protobuf | {points:,} | {pb_wall:.2f} s | {pb_cpu:.2f} s | "
        f"{points / pb_wall:,.0f} | **{points / pb_cpu:,.0f}** |",
        f"| gRPC, protobuf | {points:,} | {gr_wall:.2f} s | {gr_cpu:.2f} s | "
        f"{points / gr_wall:,.0f} | **{points / gr_cpu:,.0f}** |",
        f"| HTTP, JSON | {json_points:,} | {js_wall:.2f} s | {js_cpu:.2f} s | "
        f"{json_points / js_wall:,.0f} | {json_points / js_cpu:,.0f} |",
        "",
        f"Scrape of `/metrics` (gzip, {args.scrapes} sequential scrapes 10 ms apart, 20 vLLM "
        f"targets; B and C add {small_streams} OTLP streams: {args.scrape_models} models x "
        f"{args.scrape_tenants} tenants; the scrape in C is {size:,} bytes uncompressed):",
        "",
        "| condition | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    how = {1: "paced, HTTP", 2: "non-stop, HTTP", 3: "non-stop, gRPC"}
    for label, values in (
        ("A: 20 targets, no OTLP receiver", scrape_a),
        ("B: + the receiver's series, no exports arriving", scrape_b),
        *(
            (
                f"C{i}: B while one sender exports {how[i]} ({rate:,.0f} points/s; ingest "
                f"process at {ingest:.0%} of a core, agent process at {own:.0%}, scrape "
                f"process at {scraper:.0%})",
                values,
            )
            for i, (values, rate, own, ingest, scraper) in enumerate(loaded, 1)
        ),
    ):
        lines.append(
            f"| {label} | {ms(pct(values, 50))} | {ms(pct(values, 99))} | {ms(max(values))} |"
        )
    base50, base99 = pct(scrape_a, 50), pct(scrape_a, 99)
    added = [("B", scrape_b)] + [(f"C{i}", v) for i, (v, *_) in enumerate(loaded, 1)]
    lines += [
        "",
        "Added to the scrape by the receiver (each condition minus A): "
        + "; ".join(
            f"{name}: p50 {ms(pct(v, 50) - base50)}, p99 {ms(pct(v, 99) - base99)}"
            for name, v in added
        )
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_block(args.write, "otlp_ingest", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
