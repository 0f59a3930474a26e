"""Inference-server targets discovered from Kubernetes pods by annotation.

A pod is scraped when it carries ``gpuslo.io/scrape: "true"``; ``gpuslo.io/port`` names the
port (a number, or a container port's name; default: the container port named ``metrics``),
``gpuslo.io/path`` the path (default ``/metrics``), ``gpuslo.io/scheme`` http or https,
``gpuslo.io/server`` the adapter (skips recognition), ``gpuslo.io/model`` and
``gpuslo.io/tenant`` labels for servers that do not say (TGI; a tenant-dedicated pod). The
agent lists the pods of its own node (``spec.nodeName`` field selector) through the official
client, at most every ``refresh`` seconds; a failed listing keeps the last good targets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

from .servers import ADAPTERS, Target

log = logging.getLogger(__name__)

DEFAULT_REFRESH = 30.0


def pod_target(pod: Any) -> tuple[Target | None, str]:
    """The target of one pod (a kubernetes.client V1Pod), or None and why it is skipped
    (an empty reason for pods that are not annotated for scraping at all)."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    annotations = (meta.annotations or {}) if meta else {}
    if annotations.get(c.ANNOTATION_SCRAPE, "").strip().lower() != "true":
        return None, ""
    if status is None or status.phase != "Running":
        return None, "not_running"
    if not status.pod_ip:
        return None, "no_pod_ip"
    ports = {
        p.name: p.container_port
        for container in (spec.containers if spec else None) or []
        for p in container.ports or []
        if p.name
    }
    wanted = annotations.get(c.ANNOTATION_PORT, "").strip()
    if not wanted:
        port = ports.get("metrics")
    elif wanted.isdigit():
        port = int(wanted)
    else:
        port = ports.get(wanted)
    if port is None or not 0 < port < 65536:
        return None, "bad_port"
    scheme = annotations.get(c.ANNOTATION_SCHEME, "http").strip().lower()
    if scheme not in ("http", "https"):
        return None, "bad_scheme"
    server = annotations.get(c.ANNOTATION_SERVER, "").strip().lower() or None
    if server is not None and server not in {a.server for a in ADAPTERS}:
        return None, "unknown_server"
    path = annotations.get(c.ANNOTATION_PATH, "/metrics").strip() or "/metrics"
    if not path.startswith("/"):
        path = "/" + path
    host = f"[{status.pod_ip}]" if ":" in status.pod_ip else status.pod_ip
    labels = {c.LABEL_NAMESPACE: meta.namespace or "", c.LABEL_POD: meta.name or ""}
    for annotation, label in (
        (c.ANNOTATION_MODEL, c.LABEL_MODEL),
        (c.ANNOTATION_TENANT, c.LABEL_TENANT),
    ):
        if annotations.get(annotation, "").strip():
            labels[label] = annotations[annotation].strip()
    return Target(f"{scheme}://{host}:{port}{path}", tuple(sorted(labels.items())), server), ""


class PodDiscovery:
    """Lists the node's pods through the official Kubernetes client, cached for ``refresh``."""

    def __init__(
        self,
        api_client: Any,
        node: str,
        refresh: float = DEFAULT_REFRESH,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.node = node
        self.refresh = refresh
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: list[Target] = []
        self._skipped: dict[str, int] = {}
        self._listed_at: float | None = None
        self.success = False
        self.error: str | None = None

    @classmethod
    def from_environment(cls, node: str, refresh: float = DEFAULT_REFRESH) -> PodDiscovery:
        """In a pod: the service account; elsewhere: the kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(), node, refresh)

    def targets(self) -> list[Target]:
        """The current targets; lists the pods again when the last listing is ``refresh`` old."""
        with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self.refresh:
                self._listed_at = now
                self._list()
            return list(self._targets)

    def _list(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            pods = self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node}", _request_timeout=self.timeout
            )
        except ApiException as err:
            self._failed(f"HTTP {err.status}: {err.reason}")
            return
        except Exception as err:  # connection refused, TLS, timeouts: keep the last targets
            self._failed(f"{type(err).__name__}: {err}")
            return
        targets: list[Target] = []
        skipped: dict[str, int] = {}
        for pod in pods.items or []:
            target, why = pod_target(pod)
            if target is not None:
                targets.append(target)
            elif why:
                skipped[why] = skipped.get(why, 0) + 1
                meta = pod.metadata
                where = f"{meta.namespace}/{meta.name}" if meta else "?"
                log.debug("not scraping pod %s: %s", where, why)
        self._targets = sorted(targets, key=lambda t: t.url)
        self._skipped = skipped
        self.success, self.error = True, None

    def _failed(self, message: str) -> None:
        if self.error != message:
            log.warning(
                "listing pods on node %s failed (keeping %d targets): %s",
                self.node,
                len(self._targets),
                message,
            )
        self.success, self.error = False, message

    def metrics(self) -> list[Metric]:
        ok, count, skipped = (
            family(c.DISCOVERY_SUCCESS),
            family(c.DISCOVERY_TARGETS),
            family(c.DISCOVERY_SKIPPED),
        )
        with self._lock:
            add(ok, {}, 1.0 if self.success else 0.0)
            add(count, {}, float(len(self._targets)))
            for reason, n in sorted(self._skipped.items()):
                add(skipped, {c.LABEL_REASON: reason}, float(n))
        return [ok, count, skipped]
