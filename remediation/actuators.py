"""Actuators: what the hook acts on, behind one protocol.

- ``log``: keeps the state in memory and records every call (for dry runs and tests).
- ``twin``: the digital twin's pool API over HTTP (for the demo).
- ``kubernetes``: the official client (``remediation.kube``).

An actuator with a warm pool (``log``, ``twin``) also has ``promote_warm``: serve ``replicas``,
warm replicas first, cold ones behind them; the ``promote_warm`` action uses it, and a plain
``scale`` on actuators without one.

Every call sets an absolute state (replicas, weights), never a relative one, so repeating a
call after a crash has the same effect as making it once.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol

from .policy import Route, Workload


class ActuatorError(RuntimeError):
    """The target refused or failed the change; ``retryable`` for conflicts and outages."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Actuator(Protocol):
    name: str

    def replicas(self, workload: Workload) -> int: ...

    def scale(self, workload: Workload, replicas: int) -> str:
        """Make the workload run ``replicas``; returns how (e.g. which object was changed)."""
        ...

    def weights(self, route: Route) -> dict[str, int]: ...

    def set_weights(self, route: Route, weights: dict[str, int]) -> None: ...


@dataclass
class LogActuator:
    """In-memory pools and routes; ``calls`` records every change in order."""

    name: str = "log"
    pools: dict[str, int] = field(default_factory=dict)
    routes: dict[str, dict[str, int]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    default_replicas: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def replicas(self, workload: Workload) -> int:
        with self._lock:
            return self.pools.get(workload.ref, self.default_replicas)

    def scale(self, workload: Workload, replicas: int) -> str:
        with self._lock:
            self.pools[workload.ref] = replicas
            self.calls.append(("scale", workload.ref, replicas))
        return "recorded"

    def promote_warm(self, workload: Workload, replicas: int) -> str:
        with self._lock:
            self.pools[workload.ref] = replicas
            self.calls.append(("promote_warm", workload.ref, replicas))
        return "recorded, warm first"

    def weights(self, route: Route) -> dict[str, int]:
        with self._lock:
            return dict(self.routes.get(route.ref, {}))

    def set_weights(self, route: Route, weights: dict[str, int]) -> None:
        with self._lock:
            self.routes[route.ref] = dict(weights)
            self.calls.append(("weights", route.ref, dict(weights)))


class TwinActuator:
    """The digital twin's pool API: ``GET``/``PUT /v1/pools/{namespace}/{name}`` with
    ``{"replicas": n}`` and ``/v1/routes/{namespace}/{name}`` with ``{"weights": {...}}``."""

    name = "twin"

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            raise ActuatorError(f"twin {method} {path}: HTTP {err.code}", err.code >= 500) from err
        except OSError as err:
            raise ActuatorError(f"twin {method} {path}: {err}", retryable=True) from err

    def replicas(self, workload: Workload) -> int:
        return int(self._call("GET", f"/v1/pools/{workload.namespace}/{workload.name}")["replicas"])

    def scale(self, workload: Workload, replicas: int) -> str:
        self._call("PUT", f"/v1/pools/{workload.namespace}/{workload.name}", {"replicas": replicas})
        return "twin pool"

    def promote_warm(self, workload: Workload, replicas: int) -> str:
        body = self._call(
            "PUT",
            f"/v1/pools/{workload.namespace}/{workload.name}",
            {"replicas": replicas, "warm_first": True},
        )
        return f"twin pool, {int(body.get('promoted', 0))} warm promoted"

    def weights(self, route: Route) -> dict[str, int]:
        body = self._call("GET", f"/v1/routes/{route.namespace}/{route.name}")
        return {str(k): int(v) for k, v in body["weights"].items()}

    def set_weights(self, route: Route, weights: dict[str, int]) -> None:
        self._call("PUT", f"/v1/routes/{route.namespace}/{route.name}", {"weights": weights})
