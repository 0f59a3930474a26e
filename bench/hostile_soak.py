"""Hostile clients against one agent and one hook, bounded in time: does either fall over?

One ``gpuslo agent`` (sim GPUs, OTLP on, four inference-server targets of which three are
hostile: one trickles a byte every half second, one cuts its body short, one answers garbage)
and one ``gpuslo remediate serve`` run as their own processes on loopback. For ``--seconds``,
rounds of hostile requests go to both:

- OTLP: a negative and a missing Content-Length with a streamed body, an endless chunked
  body, a gzip bomb, drift gauges whose name and attribute keys hold a dot, space and newline,
  NaN/+Inf/negative token sums, exponential histograms with extreme offset and scale, an
  export of many delta streams, and one valid export;
- webhook: JSON nested 1,000 deep, a 5,000-digit number, an oversized declared length, and
  valid deliveries (with and without a fingerprint, with and without a per-alert status), each
  delivered twice.

After every round the agent's ``/metrics`` must pass ``promtool check metrics`` (exit 0, or 3
for its naming lints only) and the agent's and hook's RSS are read. At the end the hook's
journal must hold exactly one action per distinct valid alert: none lost, none doubled.

    .venv/bin/python bench/hostile_soak.py [--seconds 60] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results import write_block
from gpuslo.foundation.promlab import free_port
from gpuslo.remediation.journal import Journal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_load import POLICY

ROOT = Path(__file__).resolve().parents[1]
VLLM = ROOT / "tests" / "collectors" / "fixtures" / "servers" / "vllm_v1_metrics.prom"
RSS_LIMIT_MIB = 200


# ------------------------------------------------------------------ hostile targets
class Targets(ThreadingHTTPServer):
    daemon_threads = True


class TargetHandler(BaseHTTPRequestHandler):
    good = VLLM.read_bytes()

    def do_GET(self) -> None:
        try:
            if self.path == "/good":
                self._send(self.good)
            elif self.path == "/garbage":
                self._send(b"<html>\x00\xff not metrics {{{\n")
            elif self.path == "/truncated":  # declares more than it sends, then hangs up
                self.send_response(200)
                self.send_header("Content-Length", str(len(self.good) * 2))
                self.end_headers()
                self.wfile.write(self.good[: len(self.good) // 2])
            elif self.path == "/trickle":  # one byte every half second, for at most 30 s
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for byte in (self.good[:60] * 2)[:60]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
        except OSError:
            pass  # the agent gave up on us: that is the point

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


# ------------------------------------------------------------------ OTLP requests
def kv(key: str, value: str) -> KeyValue:
    out = KeyValue(key=key)
    out.value.string_value = value
    return out


def export(build: object) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "hostile"), kv("k8s.pod.name", "x-0")])
    build(rm.scope_metrics.add())  # type: ignore[operator]
    return req.SerializeToString()


def _bad_drift(sm: object) -> None:
    m = sm.metrics.add()  # type: ignore[attr-defined]
    m.name = "gpuslo.drift.score\nevil_series 1"
    p = m.gauge.data_points.add()
    p.attributes.extend([kv("bad key.with dot", "x"), kv("model", 'quote"and\nnewline')])
    p.as_double, p.time_unix_nano = 0.5, time.time_ns()


def _bad_sums(sm: object) -> None:
    m = sm.metrics.add()  # type: ignore[attr-defined]
    m.name = "gen_ai.client.token.usage"
    m.sum.aggregation_temporality, m.sum.is_monotonic = 1, True
    for i, value in enumerate((float("nan"), float("inf"), -5.0, 3.0)):
        p = m.sum.data_points.add()
        p.attributes.extend([kv("gen_ai.request.model", "m"), kv("gen_ai.token.type", "input")])
        p.as_double, p.time_unix_nano = value, time.time_ns() + i


def _extreme_exponential(sm: object) -> None:
    m = sm.metrics.add()  # type: ignore[attr-defined]
    m.name, m.unit = "gen_ai.server.request.duration", "s"
    m.exponential_histogram.aggregation_temporality = 1
    for scale, offset in ((20, 2**31 - 10), (-10, -(2**31) + 1), (8, 10**6)):
        p = m.exponential_histogram.data_points.add()
        p.attributes.extend([kv("gen_ai.request.model", "m")])
        p.scale, p.count, p.sum = scale, 3, 1.0
        p.positive.offset = offset
        p.positive.bucket_counts.extend([1, 1, 1])
        p.time_unix_nano = time.time_ns()


def _many_deltas(sm: object) -> None:
    m = sm.metrics.add()  # type: ignore[attr-defined]
    m.name, m.unit = "gen_ai.server.time_to_first_token", "s"
    m.histogram.aggregation_temporality = 1
    for i in range(20_000):
        p = m.histogram.data_points.add()
        p.attributes.extend([kv("gen_ai.request.model", f"model-{i}")])
        p.count, p.sum = 1, 0.1
        p.bucket_counts.extend([1, 0])
        p.explicit_bounds.extend([0.5])
        p.time_unix_nano = time.time_ns()


def _valid(sm: object) -> None:
    m = sm.metrics.add()  # type: ignore[attr-defined]
    m.name, m.unit = "gen_ai.server.request.duration", "s"
    m.histogram.aggregation_temporality = 1
    p = m.histogram.data_points.add()
    p.attributes.extend([kv("gen_ai.request.model", "llama"), kv("gpuslo.tenant", "acme")])
    p.count, p.sum = 2, 0.4
    p.bucket_counts.extend([1, 1, 0])
    p.explicit_bounds.extend([0.1, 1.0])
    p.time_unix_nano = time.time_ns()


def raw(port: int, head: bytes, body_chunks: int, chunk: bytes, timeout: float = 10) -> int:
    """Send a hand-made request (lying headers, a streamed body); the status, or 0 when the
    server hung up without one (acceptable only for a body it refused to read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head)
            for _ in range(body_chunks):
                s.sendall(chunk)
        except OSError:
            pass  # the server stopped reading: it should have answered first
        try:
            line = s.makefile("rb").readline()
        except OSError:
            return 0
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def otlp_round(port: int, bomb: bytes, statuses: Counter[str]) -> None:
    pb = {"Content-Type": "application/x-protobuf"}
    mib = b"\0" * 2**20
    statuses[
        "otlp negative length "
        + str(
            raw(
                port,
                b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: -1\r\n\r\n",
                64,
                mib,
            )
        )
    ] += 1
    statuses[
        "otlp chunked endless "
        + str(
            raw(
                port,
                b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
                64,
                b"100000\r\n" + mib + b"\r\n",
            )
        )
    ] += 1
    gz = {**pb, "Content-Encoding": "gzip"}
    statuses[f"otlp gzip bomb {post(port, '/v1/metrics', bomb, gz)}"] += 1
    for name, build in (
        ("bad drift names", _bad_drift),
        ("NaN/Inf/negative sums", _bad_sums),
        ("extreme exponential", _extreme_exponential),
        ("many delta streams", _many_deltas),
        ("valid export", _valid),
    ):
        statuses[f"otlp {name} {post(port, '/v1/metrics', export(build), pb)}"] += 1


# ------------------------------------------------------------------ webhook requests
def delivery(n: int, fingerprint: bool, alert_status: bool) -> bytes:
    alert: dict[str, object] = {
        "labels": {"alertname": "GpusloBudgetBurn", "slo": f"slo-{n}", "severity": "page"},
        "annotations": {},
        "startsAt": "2026-12-01T10:00:00Z",
    }
    if fingerprint:
        alert["fingerprint"] = f"{n:016x}"
    if alert_status:
        alert["status"] = "firing"
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{slo="slo-{n}"}}',
            "status": "firing",
            "receiver": "gpuslo",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [alert],
        }
    ).encode()


def hook_round(port: int, first: int, statuses: Counter[str]) -> int:
    """Hostile and valid deliveries; returns how many distinct valid alerts were sent."""
    auth = {"Content-Type": "application/json", "Authorization": "Bearer soak"}
    deep = b"[" * 1000 + b"]" * 1000
    statuses[f"hook deep JSON {post(port, '/v1/alerts', deep, auth)}"] += 1
    huge = b'{"version": "4", "n": ' + b"9" * 5000 + b"}"
    statuses[f"hook 5000-digit number {post(port, '/v1/alerts', huge, auth)}"] += 1
    statuses[
        "hook oversized length "
        + str(
            raw(
                port,
                b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer soak\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
                8,
                b" " * 2**20,
            )
        )
    ] += 1
    shapes = ((True, True), (False, True), (True, False), (False, False))
    for i, (fp, st) in enumerate(shapes):
        body = delivery(first + i, fp, st)
        for _ in range(2):  # Alertmanager retries and HA peers deliver twice
            statuses[f"hook valid delivery {post(port, '/v1/alerts', body, auth)}"] += 1
    return len(shapes)


# ------------------------------------------------------------------ the run
def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"process {proc.args} did not start") from None
            time.sleep(0.1)


def promtool_problem(text: str) -> str:
    """promtool's parse error for the exposition, or "" when it parses (exit 0, or 3 for its
    naming lints only)."""
    out = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode in (0, 3) and "error while linting" not in out.stderr:
        return ""
    return next((ln for ln in out.stderr.splitlines() if "error" in ln), out.stderr[:200])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--write", type=Path, help="rewrite the results block in this markdown file")
    args = ap.parse_args(argv)
    if shutil.which("promtool") is None:
        raise SystemExit("promtool not found: `make setup` installs it")

    bomb = gzip.compress(b"\0" * (256 * 2**20), compresslevel=9)  # 256 MiB of zeros, ~250 KiB
    targets = Targets(("127.0.0.1", 0), TargetHandler)
    threading.Thread(target=targets.serve_forever, daemon=True).start()
    tport = targets.server_address[1]
    statuses: Counter[str] = Counter()
    rounds, failures, max_agent, max_hook, sent, unparsed = 0, [], 0.0, 0.0, 0, 0
    with tempfile.TemporaryDirectory(prefix="gpuslo-soak-") as tmp:
        policy, journal_path = Path(tmp) / "policy.yaml", Path(tmp) / "journal.db"
        policy.write_text(POLICY)
        aport, oport, hport = free_port(), free_port(), free_port()
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "gpuslo", "agent", "--gpu-backend", "sim",
                "--sim-gpus", "2", "--no-collector.infiniband", "--interval", "1",
                "--listen", f"127.0.0.1:{aport}", "--otlp-listen", f"127.0.0.1:{oport}",
                "--server-timeout", "2", "--log-level", "error",
                *[f"--server-target=http://127.0.0.1:{tport}/{p};namespace=llm;pod={p}-0"
                  for p in ("good", "trickle", "truncated", "garbage")],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        hook = subprocess.Popen(
            [
                sys.executable, "-m", "gpuslo", "remediate", "serve", "--policy", str(policy),
                "--listen", f"127.0.0.1:{hport}", "--journal", str(journal_path),
                "--log-level", "warning",
            ],
            env={**os.environ, "GPUSLO_REMEDIATE_TOKEN": "soak"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(aport, agent)
            wait_port(hport, hook)
            time.sleep(2)
            pa, ph = psutil.Process(agent.pid), psutil.Process(hook.pid)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end and rounds < 10_000:
                otlp_round(oport, bomb, statuses)
                sent += hook_round(hport, sent, statuses)
                with urllib.request.urlopen(f"http://127.0.0.1:{aport}/metrics", timeout=15) as r:
                    scrape = r.read().decode()
                rounds += 1
                if problem := promtool_problem(scrape):
                    unparsed += 1
                    if unparsed == 1:
                        failures.append(f"/metrics does not parse from round {rounds}: {problem}")
                if 'gpuslo_target_up{target="http://127.0.0.1:' not in scrape:
                    failures.append(f"round {rounds}: no target series")
                max_agent = max(max_agent, pa.memory_info().rss / 2**20)
                max_hook = max(max_hook, ph.memory_info().rss / 2**20)
                if agent.poll() is not None or hook.poll() is not None:
                    failures.append(f"round {rounds}: a process died")
                    break
        finally:
            for proc in (agent, hook):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            targets.shutdown()
        journal = Journal(journal_path)
        entries = journal.query(limit=sent * 4 + 10)
        journal.close()

    acted = [e for e in entries if e.status in ("acted", "advised")]
    keys = [e.fingerprint for e in acted]
    lost, doubled = sent - len(set(keys)), len(keys) - len(set(keys))
    server_errors = sum(n for k, n in statuses.items() if k.rsplit(" ", 1)[1].startswith("5"))
    unanswered = sum(
        n
        for k, n in statuses.items()
        if k.endswith(" 0") and "length" not in k and "chunked" not in k
    )
    if max_agent > RSS_LIMIT_MIB:
        failures.append(f"agent RSS {max_agent:.0f} MiB over {RSS_LIMIT_MIB} MiB")
    if server_errors or unanswered or lost or doubled:
        failures.append(
            f"{server_errors} 5xx, {unanswered} unanswered, {lost} lost, {doubled} doubled"
        )
    table = ["| request | answers |", "|---|---|"]
    by_kind: dict[str, list[str]] = {}
    for key, n in sorted(statuses.items()):
        kind, status = key.rsplit(" ", 1)
        by_kind.setdefault(kind, []).append(f"{status or 'none'} x{n}")
    table += [f"| {k} | {', '.join(v)} |" for k, v in by_kind.items()]
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
            f"{psutil.cpu_count()} cores, Python {platform.python_version()}: one agent (2 sim "
            "GPUs, OTLP, four targets of which three hostile) and one hook, each its own "
            f"process on loopback, {rounds} rounds in {args.seconds} s.",
            "",
            f"Command: `.venv/bin/python bench/hostile_soak.py --seconds {args.seconds} "
            "--write docs/benchmarks.md`",
            "",
            "| rounds | /metrics parsed by promtool | agent RSS max (MiB) | hook RSS max (MiB) "
            "| 5xx | unanswered | valid alerts | lost | doubled |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {rounds} | {rounds - unparsed}/{rounds} "
            f"| {max_agent:.0f} | {max_hook:.0f} | {server_errors} | {unanswered} | {sent} "
            f"| {lost} | {doubled} |",
            "",
            *table,
            "",
            "Verdict: " + ("ok" if not failures else "; ".join(dict.fromkeys(failures))) + ".",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, "hostile_soak", text)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
