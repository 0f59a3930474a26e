"""The twin's kube-state-metrics: the pod and workload series a cluster's kube-state-metrics
(v2) serves for the fleet's replica pods, so correlation reads the twin through the same
queries as a real cluster (replica readiness, pod -> pool).

Each pool is a Deployment (``kube_deployment_*{namespace, deployment}``) of one ReplicaSet
(``kube_replicaset_owner``) owning the pool's replica pods. Per pod: ``kube_pod_info``,
``kube_pod_owner``, ``kube_pod_status_ready{condition}`` and ``kube_pod_labels`` with the
pool label, as kube-state-metrics exports it when started with
``--metric-labels-allowlist=pods=[pool]``. A pod is Ready once its cold start is over and
while it is not restarting after an XID that took its process down; a replica on a lost GPU
stays Ready (a hung CUDA context does not fail a readiness probe). The twin's pods keep
their ``<pool>-<replica>`` names: a real Deployment's pods carry two hashes instead, which
nothing here depends on.

Names, labels and types follow kube-state-metrics' docs (``docs/metrics/workload/``:
pod-metrics.md, replicaset-metrics.md, deployment-metrics.md): every family is a gauge.
"""

from __future__ import annotations

import hashlib

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

from .fleet import Fleet, PoolState, Replica

_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' name hashes


def replicaset_name(pool: str) -> str:
    """The pool's ReplicaSet: ``<deployment>-<pod-template-hash>``, stable per pool."""
    digest = hashlib.sha1(pool.encode()).digest()
    return f"{pool}-" + "".join(_HASH_CHARS[b % len(_HASH_CHARS)] for b in digest[:10])


def pod_uid(namespace: str, pod: str, created: float) -> str:
    """A pod's UID: the same for one incarnation of the pod, new when it is recreated."""
    h = hashlib.sha1(f"{namespace}/{pod}/{created:.3f}".encode()).hexdigest()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def is_ready(replica: Replica, t: float) -> bool:
    """The pod's Ready condition: past its cold start, not restarting."""
    return replica.ready_at <= t and not t < replica.restarts_until


def ksm_families(fleet: Fleet, pool_label: str = c.LABEL_POOL) -> list[Metric]:
    """The kube-state-metrics series of every pool's Deployment, ReplicaSet and pods now."""

    def gauge(name: str, help_: str) -> Metric:
        return family(c.MetricSpec(name, "gauge", help_))

    info = gauge(c.KSM_POD_INFO, "Information about pod.")
    owner = gauge(c.KSM_POD_OWNER, "Information about the Pod's owner.")
    labels_f = gauge(c.KSM_POD_LABELS, "Kubernetes labels converted to Prometheus labels.")
    ready = gauge(c.KSM_POD_STATUS_READY, "Describes whether the pod is ready to serve requests.")
    rs_owner = gauge(c.KSM_REPLICASET_OWNER, "Information about the ReplicaSet's owner.")
    spec_replicas = gauge(
        c.KSM_DEPLOYMENT_SPEC_REPLICAS, "Number of desired pods for a deployment."
    )
    status_ready = gauge(
        c.KSM_DEPLOYMENT_REPLICAS_READY, "The number of ready replicas per deployment."
    )
    status_available = gauge(
        c.KSM_DEPLOYMENT_REPLICAS_AVAILABLE, "The number of available replicas per deployment."
    )
    label_key = c.KSM_LABEL_PREFIX + pool_label
    for name, state in fleet.pools.items():
        ns = state.spec.namespace
        rs = replicaset_name(name)
        n_ready = 0
        for i, replica in enumerate(state.replicas):
            pod = f"{name}-{i}"
            created = replica.ready_at - _cold_start(state)
            base = {
                c.LABEL_NAMESPACE: ns,
                c.LABEL_POD: pod,
                c.LABEL_UID: pod_uid(ns, pod, created),
            }
            node = replica.gpus[0].node if replica.gpus else ""
            add(
                info,
                {
                    **base,
                    c.LABEL_NODE: node,
                    c.LABEL_CREATED_BY_KIND: "ReplicaSet",
                    c.LABEL_CREATED_BY_NAME: rs,
                    "host_network": "false",
                },
                1.0,
            )
            add(
                owner,
                {
                    **base,
                    c.LABEL_OWNER_KIND: "ReplicaSet",
                    c.LABEL_OWNER_NAME: rs,
                    c.LABEL_OWNER_IS_CONTROLLER: "true",
                },
                1.0,
            )
            add(labels_f, {**base, label_key: name}, 1.0)
            up = is_ready(replica, fleet.t)
            n_ready += up
            for condition, value in (("true", up), ("false", not up), ("unknown", False)):
                add(ready, {**base, c.LABEL_CONDITION: condition}, float(value))
        add(
            rs_owner,
            {
                c.LABEL_NAMESPACE: ns,
                c.LABEL_REPLICASET: rs,
                c.LABEL_OWNER_KIND: "Deployment",
                c.LABEL_OWNER_NAME: name,
                c.LABEL_OWNER_IS_CONTROLLER: "true",
            },
            1.0,
        )
        deployment = {c.LABEL_NAMESPACE: ns, c.LABEL_DEPLOYMENT: name}
        add(spec_replicas, deployment, float(state.desired))
        add(status_ready, deployment, float(n_ready))
        add(status_available, deployment, float(n_ready))
    return [info, owner, labels_f, ready, rs_owner, spec_replicas, status_ready, status_available]


def _cold_start(state: PoolState) -> float:
    from gpuslo.foundation.durations import parse_duration

    return parse_duration(state.spec.cold_start)
