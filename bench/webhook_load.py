"""Benchmark the remediation hook: decision latency and throughput under Alertmanager load.

The hook runs as its own process (``gpuslo remediate serve``, log actuator, journal on disk
with synchronous writes). Client threads on loopback send webhook deliveries at a fixed total
rate (open loop: each request has a send time on a schedule, and latency counts from that
time, so a slow server cannot hide its queue). One delivery in ten repeats an earlier one, as
Alertmanager retries and HA peers do. Afterwards the journal must hold exactly one decision per
distinct alert: none lost, none doubled. Bounded in count and time.

    .venv/bin/python bench/webhook_load.py [--rate 200] [--seconds 60] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from results import write_block

from gpuslo.foundation.promlab import free_port
from gpuslo.remediation.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
POLICY = """\
apiVersion: gpuslo/v1
kind: RemediationPolicy
settings: {rate_limit: {max: 1000000, per: 1h}}
policies:
  - name: record-every-page
    match: {severity: page}
    action: {notify_only: {}}
    cooldown: 0s
    rate_limit: {max: 1000000, per: 1h}
"""


def payload(n: int) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="GpusloBudgetBurn", slo="slo-{n % 50}"}}',
            "status": "firing",
            "receiver": "gpuslo",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "GpusloBudgetBurn",
                        "slo": f"slo-{n % 50}",
                        "severity": "page",
                        "episode": str(n),
                    },
                    "startsAt": "2026-11-22T10:00:00Z",
                    "fingerprint": f"{n:016x}",
                }
            ],
        }
    ).encode()


def client(port: int, schedule: list[tuple[float, int]], out: list[tuple[float, int, str]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for due, n in schedule:
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body = payload(n)
        conn.request(
            "POST",
            "/v1/alerts",
            body=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
        )
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        decision = answer["outcomes"][0]["decision"] if resp.status == 200 else str(resp.status)
        out.append((time.perf_counter() - due, n, decision))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=int, default=200, help="deliveries per second")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections")
    ap.add_argument("--write", type=Path, help="rewrite the results block in this markdown file")
    args = ap.parse_args(argv)

    total = args.rate * args.seconds
    # Every tenth delivery repeats the delivery five before it.
    numbers = [n - 5 if n % 10 == 9 else n for n in range(total)]
    distinct = len(set(numbers))
    with tempfile.TemporaryDirectory(prefix="gpuslo-webhook-") as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        journal_path = Path(tmp) / "journal.db"
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuslo",
                "remediate",
                "serve",
                "--policy",
                str(policy),
                "--listen",
                f"127.0.0.1:{port}",
                "--journal",
                str(journal_path),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "GPUSLO_REMEDIATE_TOKEN": "bench"},
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the hook did not start") from None
                    time.sleep(0.1)
            hook = psutil.Process(proc.pid)
            start = time.perf_counter() + 0.5
            schedules: list[list[tuple[float, int]]] = [[] for _ in range(args.clients)]
            for i, n in enumerate(numbers):
                schedules[i % args.clients].append((start + i / args.rate, n))
            results: list[tuple[float, int, str]] = []
            cpu0 = hook.cpu_times()
            threads = [threading.Thread(target=client, args=(port, s, results)) for s in schedules]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 120)
            elapsed = time.perf_counter() - start
            cpu1 = hook.cpu_times()
            rss = hook.memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        journal = Journal(journal_path)
        entries = journal.query(limit=total + 10)
        journal.close()

    latencies = sorted(r[0] for r in results)
    decisions: dict[str, int] = {}
    for _, _, d in results:
        decisions[d] = decisions.get(d, 0) + 1
    acted = [e for e in entries if e.status == "acted"]
    lost = distinct - len({e.fingerprint for e in acted})
    doubled = len(acted) - len({e.fingerprint for e in acted})
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed * 100
    text = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
            f"{psutil.cpu_count()} cores, Python {platform.python_version()}. The hook as its "
            f"own process (log actuator, SQLite journal in WAL mode with synchronous writes); "
            f"{args.clients} keep-alive clients on loopback at a fixed total rate, latency counted "
            "from each request's scheduled send time.",
            "",
            f"Command: `.venv/bin/python bench/webhook_load.py --rate {args.rate} --seconds "
            f"{args.seconds} --write docs/benchmarks.md`",
            "",
            "| deliveries | distinct alerts | throughput (/s) | decision p50 (ms) | p99 (ms) "
            "| max (ms) | lost | doubled | hook CPU (% of one core) | hook RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {len(results)} | {distinct} | {len(results) / elapsed:.0f} | {p50:.1f} | {p99:.1f} "
            f"| {latencies[-1] * 1000:.0f} | {lost} | {doubled} | {cpu:.0f} | {rss / 2**20:.0f} |",
            "",
            "Answers: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())) + ".",
        ]
    )
    print(text)
    if args.write:
        write_block(args.write, "webhook_load", text)
    return 0 if lost == 0 and doubled == 0 and len(results) == total else 1


if __name__ == "__main__":
    sys.exit(main())
