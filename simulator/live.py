"""Live mode: the fleet model advanced in real time (optionally faster), with

- one real agent per simulated node (the ``sim`` GPU backend and a sysfs tree of the node's
  InfiniBand ports, driven by the model: ``FleetAgents``, as offline mode records them),
  each on its own loopback port, for Prometheus to scrape;
- the twin's own endpoint (``/metrics``): request telemetry of every pool, each serving pod's
  requests in flight, and what the cluster's kube-state-metrics would serve about the replica
  pods and their Deployments (readiness, owners, labels); and the pool API
  the remediation hook's ``twin`` actuator drives: ``GET``/``PUT /v1/pools/{ns}/{name}``
  (``{"replicas": n}``; ``"warm_first": true`` promotes warm replicas first, ``"warm": n``
  sizes the warm pool) and ``/v1/routes/{ns}/{pool}`` (``{"weights": {pool: w, fallback: w}}``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from gpuslo.collectors import AgentServer
from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import render

from .fleet import Fleet
from .offline import FleetAgents, request_families, twin_families, workdir_for_agents
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
        naming: c.GpuNaming | None = None,
    ) -> None:
        """``naming``: the dcgm-exporter generation the agents spell GPU series in."""
        self.fleet = Fleet(scenario)
        self.speed = speed
        self.tick = tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._workdir = workdir_for_agents()
        self.nodes = FleetAgents(self.fleet, Path(self._workdir.name), interval=1.0, naming=naming)
        # Without agents of their own, the nodes' series are served on the twin's endpoint.
        self.agents = (
            [(n.agent, AgentServer(n.agent, host, 0)) for n in self.nodes] if agents else []
        )
        self._threads: list[threading.Thread] = []

    @property
    def agent_targets(self) -> list[str]:
        return ["{}:{}".format(*srv.address) for _, srv in self.agents]

    def start(self) -> LiveTwin:
        for agent, srv in self.agents:
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
        for agent, srv in self.agents:
            srv.stop()
            agent.stop()
        self._workdir.cleanup()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                self.fleet.step((now - last) * self.speed)
                self.nodes.feed()
            last = now

    # ------------------------------------------------------------------ endpoints
    def metrics(self) -> str:
        """The twin's own endpoint: request telemetry, replica pods, kube-state-metrics and
        pools (and, without agents of their own, every node's series, sampled now)."""
        with self._lock:
            families = request_families(self.fleet) + twin_families(self.fleet)
            if not self.agents:
                self.nodes.sample()
                families += _merged([f for node in self.nodes for f in node.families()])
        return render(families, openmetrics=False)

    def pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            state = self.fleet.pools.get(name)
            if state is None or state.spec.namespace != namespace:
                return None
            t = self.fleet.t
            ready = sum(1 for r in state.replicas if r.ready_at <= t)
            return {
                "replicas": state.desired,
                "ready": ready,
                "running": len(state.replicas),
                "warm": state.warm_target,
                "warm_ready": sum(1 for r in state.warm if r.ready_at <= t),
            }

    def set_pool(
        self,
        namespace: str,
        name: str,
        replicas: int,
        warm_first: bool = False,
        warm: int | None = None,
    ) -> dict[str, Any] | None:
        """Scale a pool (cold, or ``warm_first``: warm replicas serve first); ``warm``: the
        warm pool's size."""
        promoted = 0
        with self._lock:
            state = self.fleet.pools.get(name)
            if state is None or state.spec.namespace != namespace:
                return None
            if warm is not None:
                self.fleet.set_warm(name, warm)
            if warm_first:
                promoted = self.fleet.promote_warm(name, replicas)
            else:
                self.fleet.set_replicas(name, replicas)
        body = self.pool(namespace, name)
        return None if body is None else {**body, "promoted": promoted}

    def route(self, name: str) -> dict[str, Any] | None:
        if name in self.fleet.versions.routes:  # a pool with a canary (versions.py)
            with self._lock:
                return self.fleet.versions.route(name)
        fb = self.fleet.scenario.fallback
        if fb is None or fb.serves != name:
            return None
        with self._lock:
            share = self.fleet.fallback_share.get(name, 0.0)
        return {"weights": {name: round(100 - share), fb.name: round(share)}}

    def set_route(self, name: str, weights: dict[str, int]) -> dict[str, Any] | None:
        if name in self.fleet.versions.routes:
            with self._lock:
                return self.fleet.versions.set_route(name, weights)
        fb = self.fleet.scenario.fallback
        if fb is None or fb.serves != name:
            return None
        total = sum(weights.values())
        if total <= 0 or set(weights) - {name, fb.name}:
            raise ValueError(f"weights must be for {name} and {fb.name} and sum above 0")
        with self._lock:
            self.fleet.set_fallback_share(name, 100 * weights.get(fb.name, 0) / total)
        return self.route(name)


def _merged(families: list[Metric]) -> list[Metric]:
    """Families of the same name (one per node) as one, in order of first appearance."""
    out: dict[str, Metric] = {}
    for fam in families:
        into = out.get(fam.name)
        if into is None:
            into = out[fam.name] = Metric(fam.name, fam.documentation, fam.type)
        into.samples += fam.samples
    return list(out.values())


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
                    warm = data.get("warm")
                    body = twin.set_pool(
                        ns,
                        name,
                        int(data["replicas"]),
                        warm_first=bool(data.get("warm_first", False)),
                        warm=None if warm is None else int(warm),
                    )
                else:
                    body = twin.set_route(
                        name, {str(k): int(v) for k, v in data["weights"].items()}
                    )
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                return self._send(400, {"error": f"bad request: {err}"})
            self._send(200, body) if body is not None else self._send(404, {"error": "unknown"})

    return Handler
