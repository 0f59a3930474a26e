"""Tenant API load: N queries/s (open loop) through ``gpuslo tenants serve`` to a real
Prometheus, and the same rewritten queries sent to Prometheus directly; p50/p99 of both and
the proxy's added latency.

    .venv/bin/python bench/tenant_load.py --rate 200 --seconds 60 --write docs/benchmarks.md

Prometheus scrapes 20 tenants' request and token series (4 models each) every second; each
query is one of four Grafana-style panels for a random tenant, with that tenant's token.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_block
from gpuslo.foundation.promlab import Prometheus, free_port
from gpuslo.tenants.config import hash_token
from gpuslo.tenants.promql import Scope, enforce

TENANTS = [f"t{i:02d}" for i in range(20)]
MODELS = ["llama", "mistral", "qwen", "phi"]
QUERIES = [
    "sum by (model) (rate(gen_ai_server_requests_total[1m]))",
    'sum(rate(gen_ai_server_requests_total{outcome="error"}[1m])) '
    "/ sum(rate(gen_ai_server_requests_total[1m]))",
    "sum by (token_type) (increase(gen_ai_server_token_usage_total[5m]))",
    'topk(3, sum by (model) (rate(gen_ai_server_token_usage_total{token_type="output"}[1m])))',
]
START = time.time()


class _Target(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        t = time.time() - START
        lines = []
        for i, tenant in enumerate(TENANTS):
            for j, model in enumerate(MODELS):
                base = (i + 1) * (j + 1) * t
                for outcome, share in (("success", 0.99), ("error", 0.01)):
                    lines.append(
                        f'gen_ai_server_requests_total{{tenant="{tenant}",model="{model}",'
                        f'outcome="{outcome}"}} {base * share}'
                    )
                for kind, k in (("input", 300), ("output", 150)):
                    lines.append(
                        f'gen_ai_server_token_usage_total{{tenant="{tenant}",model="{model}",'
                        f'token_type="{kind}"}} {base * k}'
                    )
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _plane(dir: Path, prom: str) -> tuple[Path, dict[str, str]]:
    tokens = {t: f"bench-token-{t}-{os.urandom(8).hex()}" for t in TENANTS}
    (dir / "tokens.yaml").write_text(
        "apiVersion: gpuslo/v1\nkind: TenantTokens\ntokens:\n"
        + "".join(f"  - {{identity: {t}-ci, sha256: {hash_token(v)}}}\n" for t, v in tokens.items())
    )
    config = dir / "tenants.yaml"
    config.write_text(
        f"apiVersion: gpuslo/v1\nkind: TenantPlane\nprometheus: {prom}\n"
        "auth: {tokens: tokens.yaml}\nidentities:\n"
        + "".join(f"  - {{name: {t}-ci, tenants: [{t}]}}\n" for t in TENANTS)
        + "tenants:\n"
        + "".join(f"  - {{name: {t}}}\n" for t in TENANTS)
    )
    return config, tokens


def _get(url: str, token: str | None = None) -> tuple[float, int]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError:
        status = 0
    return time.perf_counter() - t0, status


def _run(rate: float, seconds: float, make: Any) -> tuple[np.ndarray[Any, Any], int, float]:
    """Open-loop load: one request every 1/rate s; latencies, failures, achieved rate."""
    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    failures = 0
    lock = threading.Lock()

    def one(k: int) -> None:
        nonlocal failures
        url, token = make(k)
        dt, status = _get(url, token)
        lat[k] = dt
        if status != 200:
            with lock:
                failures += 1

    begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for k in range(n):
            wait = begin + k / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pool.submit(one, k)
    took = time.perf_counter() - begin
    return lat, failures, n / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="queries per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="at most 600")
    ap.add_argument("--write", type=Path, help="write the results block into this Markdown file")
    args = ap.parse_args()
    seconds = min(args.seconds, 600.0)
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    scrape = (
        "scrape_configs:\n- job_name: fleet\n  scrape_interval: 1s\n"
        f"  static_configs: [{{targets: ['127.0.0.1:{target.server_address[1]}']}}]\n"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        Prometheus(Path(tmp) / "p", config_extra=scrape) as prom,
    ):
        time.sleep(5)  # a few scrapes, so rates have two samples
        config, tokens = _plane(Path(tmp), prom.url)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpuslo",
                "tenants",
                "serve",
                str(config),
                f"--listen=127.0.0.1:{port}",
                "--log-level=warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while _get(api + "/healthz")[1] != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("gpuslo tenants serve did not start")
                time.sleep(0.2)
            rng = random.Random(1)
            plan = [
                (rng.choice(TENANTS), rng.choice(QUERIES)) for _ in range(int(args.rate * seconds))
            ]

            def via_proxy(k: int) -> tuple[str, str]:
                tenant, q = plan[k]
                return f"{api}/api/v1/query?{urllib.parse.urlencode({'query': q})}", tokens[tenant]

            def direct(k: int) -> tuple[str, None]:
                tenant, q = plan[k]
                query = enforce(q, Scope(tenant))
                return f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", None

            lat_p, fail_p, rate_p = _run(args.rate, seconds, via_proxy)
            lat_d, fail_d, rate_d = _run(args.rate, seconds, direct)
        finally:
            server.terminate()
            server.wait(timeout=10)
    target.shutdown()

    def ms(a: np.ndarray[Any, Any], q: float) -> float:
        return float(np.nanpercentile(a, q) * 1000)

    result = {
        "rate": args.rate,
        "seconds": seconds,
        "proxy": {
            "p50_ms": ms(lat_p, 50),
            "p99_ms": ms(lat_p, 99),
            "failures": fail_p,
            "achieved_rate": rate_p,
        },
        "direct": {
            "p50_ms": ms(lat_d, 50),
            "p99_ms": ms(lat_d, 99),
            "failures": fail_d,
            "achieved_rate": rate_d,
        },
        "load": os.getloadavg(),
    }
    result["added_p50_ms"] = result["proxy"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["proxy"]["p99_ms"] - result["direct"]["p99_ms"]
    print(json.dumps(result, indent=1))
    if args.write:
        p, d = result["proxy"], result["direct"]
        text = (
            f"`bench/tenant_load.py --rate {args.rate:g} --seconds {seconds:g}` "
            f"(load average {result['load'][0]:.1f} at the end)\n\n"
            "| path | achieved q/s | p50 ms | p99 ms | failed |\n|---|---|---|---|---|\n"
            f"| through `gpuslo tenants serve` | {p['achieved_rate']:.0f} | {p['p50_ms']:.1f} | "
            f"{p['p99_ms']:.1f} | {p['failures']} |\n"
            f"| Prometheus directly (same rewritten queries) | {d['achieved_rate']:.0f} | "
            f"{d['p50_ms']:.1f} | {d['p99_ms']:.1f} | {d['failures']} |\n"
            f"| **added by the proxy** | | {result['added_p50_ms']:.1f} | "
            f"{result['added_p99_ms']:.1f} | |"
        )
        write_block(args.write, "tenant_load", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
