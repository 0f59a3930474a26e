"""Benchmark the node agent: scrape latency, CPU and RSS; fabric collector vs node_exporter.

The node: 8 simulated H100s (every field, 18 NVLinks each) and 8 InfiniBand ports in a sysfs
tree written to a temp dir. Each process runs on 127.0.0.1 and is stopped at the end; every loop
is bounded in count and time.

    .venv/bin/python bench/agent_scrape.py [--scrapes 500] [--window 30] \
        [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from gpuslo.foundation.promlab import free_port
from gpuslo.simulator import IbPort, write_infiniband_tree

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- agent_scrape:begin -->", "<!-- agent_scrape:end -->"
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@contextlib.contextmanager
def started(cmd: list[str], port: int) -> Iterator[psutil.Process]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} did not start") from None
                time.sleep(0.05)
        time.sleep(2.5)  # let the first samples land and the interpreter warm up
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    body_kb: float
    series: int
    cpu_pct: float
    rss_mb: float


def scrape_latencies(
    port: int, n: int, accept: str | None, gzip: bool, pace: float = 0.0
) -> tuple[list[float], bytes]:
    """n scrapes over one keep-alive connection, as Prometheus does, ``pace`` s apart."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if accept:
        headers["Accept"] = accept
    if gzip:
        headers["Accept-Encoding"] = "gzip"
    times, body = [], b""
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - start) * 1000)
        if pace:
            time.sleep(pace)
    conn.close()
    return times, body


def cpu_over(proc: psutil.Process, port: int, window: float, scrape_every: float) -> float:
    """Percent of one core the process used over the window, scraped every scrape_every s."""
    before = proc.cpu_times()
    start = time.monotonic()
    next_scrape = start
    while (now := time.monotonic()) < start + window:
        if now >= next_scrape:
            scrape_latencies(port, 1, None, gzip=True)
            next_scrape += scrape_every
        time.sleep(0.05)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.monotonic() - start)


def with_port(cmd: list[str], port: int, agent: bool) -> list[str]:
    flag = "--listen" if agent else "--web.listen-address"
    return [*cmd, f"{flag}=127.0.0.1:{port}"]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(
    name: str,
    cmd: list[str],
    args: argparse.Namespace,
    accept: str | None = None,
    gzip: bool = False,
    scrape_every: float = 15.0,
    agent: bool = True,
) -> Result:
    """Latency with every scrape landing on a fresh, not yet rendered snapshot (the agent
    samples at 4 Hz, scrapes are 0.3 s apart); CPU and RSS at the production 1 s interval."""
    t0 = time.monotonic()
    fast = [*cmd, "--interval", "0.25"] if agent else cmd
    port = free_port()
    with started(with_port(fast, port, agent), port):
        times, body = scrape_latencies(port, args.scrapes, accept, gzip, pace=0.3)
    port = free_port()
    slow = [*cmd, "--interval", "1"] if agent else cmd
    with started(with_port(slow, port, agent), port) as proc:
        cpu = cpu_over(proc, port, args.window, scrape_every)
        rss = proc.memory_info().rss / 2**20
    print(f"  {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    if gzip:
        import gzip as gz

        body = gz.decompress(body)
    text = body.decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return Result(
        name, statistics.median(times), percentile(times, 99), len(body) / 1024, series, cpu, rss
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=500, help="scrapes per latency run")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per CPU window")
    parser.add_argument("--write", type=Path, help="update this Markdown file's results block")
    args = parser.parse_args()
    if not 1 <= args.scrapes <= 10_000 or not 1 <= args.window <= 600:
        parser.error("--scrapes must be 1..10000 and --window 1..600")
    node_exporter = shutil.which("prometheus-node-exporter")
    if node_exporter is None:
        parser.error("prometheus-node-exporter not found: run `make setup`")
    gpuslo = [sys.executable, "-m", "gpuslo", "agent", "--log-level", "error"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ports = []
        for i in range(8):
            p = IbPort(f"mlx5_{i}", link_layer="Ethernet" if i >= 6 else "InfiniBand")
            p.counters.update(port_rcv_data=10**12 + i, port_xmit_data=2 * 10**12 + i)
            ports.append(p)
        write_infiniband_tree(tmp, ports)
        full = [*gpuslo, "--gpu-backend", "sim", "--sim-gpus", "8", "--path.sysfs", tmp]
        for label, accept, gzip in (
            ("text", None, False),
            ("OpenMetrics", OPENMETRICS, False),
            ("text + gzip", None, True),
        ):
            results.append(
                measure(f"gpuslo agent, 8 GPUs + 8 IB ports ({label})", full, args, accept, gzip)
            )
        # Fabric only, side by side with node_exporter at one scrape per second: node_exporter
        # reads sysfs on each scrape, the agent samples once a second and serves the snapshot.
        results.append(
            measure(
                "gpuslo agent, fabric only (1 s sampling, 1 scrape/s)",
                [*gpuslo, "--no-collector.gpu", "--path.sysfs", tmp],
                args,
                scrape_every=1.0,
            )
        )
        results.append(
            measure(
                "node_exporter 1.5, infiniband only (1 scrape/s)",
                [
                    node_exporter,
                    "--collector.disable-defaults",
                    "--collector.infiniband",
                    f"--path.sysfs={tmp}",
                ],
                args,
                scrape_every=1.0,
                agent=False,
            )
        )
    rows = [
        "| setup | scrape p50 (ms) | scrape p99 (ms) | body (KiB) | series "
        "| CPU (% of one core) | RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.body_kb:.0f} | "
            f"{r.series} | {r.cpu_pct:.2f} | {r.rss_mb:.0f} |"
        )
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    block = "\n".join(
        [
            BEGIN,
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu_model}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}. Latency: {args.scrapes} scrapes over one "
            "keep-alive connection, 0.3 s apart, with the agent sampling at 4 Hz so every scrape "
            "renders a fresh snapshot (as in production: 1 s sampling, 15 s scrapes). CPU and "
            f"RSS: the agent at 1 s sampling over a {args.window:.0f} s window, scraped every 15 s "
            "(full agent) or every 1 s (fabric comparison). The sim backend's model stands in for "
            "NVML calls in the CPU figure.",
            "",
            "Command: `.venv/bin/python bench/agent_scrape.py "
            f"--scrapes {args.scrapes} --window {args.window:.0f} --write docs/benchmarks.md`",
            "",
            *rows,
            END,
        ]
    )
    print(block)
    if args.write:
        doc = args.write.read_text() if args.write.exists() else ""
        if BEGIN in doc and END in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip() + "\n\n" + block + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
