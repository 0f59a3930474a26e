"""Live mode: the fleet model advanced in real time (optionally faster), with

- one real agent per simulated node (the ``sim`` GPU backend, driven by the model), each on
  its own loopback port, for Prometheus to scrape;
- the twin's own endpoint: request telemetry of every pool (``/metrics``), and the pool API
  the remediation hook's ``twin`` actuator drives: ``GET``/``PUT /v1/pools/{ns}/{name}``
  (``{"replicas": n}``) and ``/v1/routes/{ns}/{pool}`` (``{"weights": {pool: w, fallback: w}}``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gpuslo.collectors import Agent, AgentServer, GpuCollector
from gpuslo.collectors.backends import SimBackend

from .fleet import Fleet
from .offline import (
    TWIN_READY,
    TWIN_REPLICAS,
    Recorder,
    attribution_series,
    gpu_series,
    request_series,
)
from .scenario import Scenario


class LiveTwin:
    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        tick: float = 1.0,
        agents: bool = True,
    ) -> None:
        self.fleet = Fleet(scenario)
        self.speed = speed
        self.tick = tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.agents: list[tuple[str, SimBackend, Agent, AgentServer]] = []
        self._xids_seen: dict[tuple[str, int], dict[int, int]] = {}
        if agents:
            nodes: dict[str, list[Any]] = {}
            for gpu in self.fleet.gpus:
                nodes.setdefault(gpu.node, []).append(gpu)
            for node, gpus in nodes.items():
                mig = [[s.profile for s in g.slices] for g in gpus] if gpus[0].slices else None
                backend = SimBackend(count=len(gpus), profile=gpus[0].profile, node=node, mig=mig)
                agent = Agent([GpuCollector(backend, hostname=node)], interval=1.0)
                self.agents.append((node, backend, agent, AgentServer(agent, host, 0)))
        self._threads: list[threading.Thread] = []

    @property
    def agent_targets(self) -> list[str]:
        return ["{}:{}".format(*srv.address) for _, _, _, srv in self.agents]

    def start(self) -> LiveTwin:
        self._drive_agents()
        for _, _, agent, srv in self.agents:
            agent.start()
            srv.start()
        for target in (self.server.serve_forever, self._run):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for _, _, agent, srv in self.agents:
            srv.stop()
            agent.stop()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                self.fleet.step((now - last) * self.speed)
                self._drive_agents()
            last = now

    def _drive_agents(self) -> None:
        """Push the model's GPU state into each node's sim backend."""
        by_node: dict[str, SimBackend] = {node: backend for node, backend, _, _ in self.agents}
        for gpu in self.fleet.gpus:
            backend = by_node.get(gpu.node)
            if backend is None:
                continue
            backend.set_load(gpu.index, gpu.util)
            backend.set_lost(gpu.index, gpu.lost)
            backend.set_thermal_throttle(gpu.index, "thermal_throttle" in gpu.faults)
            seen = self._xids_seen.setdefault((gpu.node, gpu.index), {})
            for xid, count in gpu.xids.items():
                for _ in range(count - seen.get(xid, 0)):
                    backend.inject_xid(gpu.index, xid)
                seen[xid] = count

    # ------------------------------------------------------------------ endpoints
    def metrics(self) -> str:
        rec = Recorder()
        with self._lock:
            for (pool, tenant), tot in self.fleet.totals.items():
                request_series(rec, pool, tenant, tot)
            for name, state in self.fleet.pools.items():
                labels = {"pool": name, "namespace": state.spec.namespace}
                rec.add(TWIN_REPLICAS, TWIN_REPLICAS, labels, len(state.replicas))
                ready = sum(1 for r in state.replicas if r.ready_at <= self.fleet.t)
                rec.add(TWIN_READY, TWIN_READY, labels, ready)
            # Placement, as the agents' kubelet attribution and kube-state-metrics would give
            # it (the simulated agents have no kubelet to ask).
            attribution_series(rec, self.fleet)
            if not self.agents:
                gpu_series(rec, self.fleet)
        lines = []
        for family, series in rec.families.items():
            kind = {"gen_ai_server_requests": "counter", "gen_ai_server_token_usage": "counter"}
            if family in kind:
                lines.append(f"# TYPE {family}_total {kind[family]}")
            for key, values in series.items():
                lines.append(f"{key} {values[-1]:.6g}")
        return "\n".join(lines) + "\n"

    def pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            state = self.fleet.pools.get(name)
            if state is None or state.spec.namespace != namespace:
                return None
            ready = sum(1 for r in state.replicas if r.ready_at <= self.fleet.t)
            return {"replicas": state.desired, "ready": ready, "running": len(state.replicas)}

    def set_pool(self, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        with self._lock:
            state = self.fleet.pools.get(name)
            if state is None or state.spec.namespace != namespace:
                return None
            self.fleet.set_replicas(name, replicas)
        return self.pool(namespace, name)

    def route(self, name: str) -> dict[str, Any] | None:
        fb = self.fleet.scenario.fallback
        if fb is None or fb.serves != name:
            return None
        with self._lock:
            share = self.fleet.fallback_share.get(name, 0.0)
        return {"weights": {name: round(100 - share), fb.name: round(share)}}

    def set_route(self, name: str, weights: dict[str, int]) -> dict[str, Any] | None:
        fb = self.fleet.scenario.fallback
        if fb is None or fb.serves != name:
            return None
        total = sum(weights.values())
        if total <= 0 or set(weights) - {name, fb.name}:
            raise ValueError(f"weights must be for {name} and {fb.name} and sum above 0")
        with self._lock:
            self.fleet.set_fallback_share(name, 100 * weights.get(fb.name, 0) / total)
        return self.route(name)


def _handler(twin: LiveTwin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _target(self) -> tuple[str, str, str] | None:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 4 and parts[0] == "v1" and parts[1] in ("pools", "routes"):
                return parts[1], parts[2], parts[3]
            return None

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/metrics":
                return self._send(200, twin.metrics(), "text/plain; version=0.0.4")
            target = self._target()
            if target is None:
                return self._send(404, {"error": "no such path"})
            kind, ns, name = target
            body = twin.pool(ns, name) if kind == "pools" else twin.route(name)
            self._send(200, body) if body is not None else self._send(404, {"error": "unknown"})

        def do_PUT(self) -> None:
            target = self._target()
            if target is None:
                return self._send(404, {"error": "no such path"})
            kind, ns, name = target
            try:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if kind == "pools":
                    body = twin.set_pool(ns, name, int(data["replicas"]))
                else:
                    body = twin.set_route(
                        name, {str(k): int(v) for k, v in data["weights"].items()}
                    )
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                return self._send(400, {"error": f"bad request: {err}"})
            self._send(200, body) if body is not None else self._send(404, {"error": "unknown"})

    return Handler
