"""GPU -> pod attribution: the kubelet pod-resources socket first, process cgroups otherwise.

The kubelet's PodResourcesLister (``k8s.io/kubelet/pkg/apis/podresources/v1``) answers
which pod/container holds which device. Device-plugin resources (``nvidia.com/gpu``,
``nvidia.com/mig-*``) come as device IDs, which are GPU and MIG UUIDs. Devices allocated by
Dynamic Resource Allocation (``resource.k8s.io/v1``, NVIDIA's ``gpu.nvidia.com`` driver)
come as ``dynamic_resources``: a (driver, pool, device) triplet per claimed device, which
this node's ResourceSlices map to the GPU or MIG UUID the driver publishes as its ``uuid``
attribute. The message types are built at import from a descriptor holding only the fields
we read (protobuf skips the rest on the wire), so no generated code is vendored.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

log = logging.getLogger(__name__)

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE_PREFIX = "nvidia.com/"
DEFAULT_DRA_DRIVER = "gpu.nvidia.com"
DEFAULT_SLICE_REFRESH = 60.0
# Why a device allocated through DRA names no GPU (gpuslo_attribution_unresolved_devices):
UNRESOLVED_NOT_IN_SLICES = "not_in_slices"  # no ResourceSlice of the node lists it (now)
UNRESOLVED_NO_UUID = "no_uuid"  # listed, but without a uuid attribute (a dynamic MIG partition)


@dataclass(frozen=True, order=True)
class PodRef:
    """A container in a pod."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True, order=True)
class DraDevice:
    """A device allocated through DRA: the driver/pool/device triplet names it uniquely."""

    driver: str
    pool: str
    device: str


@dataclass(frozen=True)
class PodDevices:
    """One kubelet answer: device-plugin device IDs and DRA devices, each with its holders."""

    plugin: dict[str, list[PodRef]] = field(default_factory=dict)
    dra: dict[DraDevice, list[PodRef]] = field(default_factory=dict)


class Attributor(Protocol):
    """What the GPU collector asks for GPU -> pod attribution: device ID (GPU or MIG UUID) ->
    the pods holding it. ``PodResourcesAttributor`` asks the kubelet; the digital twin
    answers from its fleet's placement."""

    def holders(self) -> Mapping[str, list[PodRef]]:
        """Device ID -> holders, now."""
        ...


@dataclass(frozen=True)
class ProcessRef:
    """A process and the pod/container its cgroup names (empty when not in a pod)."""

    pid: int
    pod_uid: str
    container_id: str


def _build_messages() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="gpuslo/podresources_v1.proto", package="gpuslo.podresources.v1", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    string, message = f.TYPE_STRING, f.TYPE_MESSAGE
    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    # Field numbers as in the kubelet's api.proto (Kubernetes 1.31+): DynamicResource's
    # field 1 (class_name) was removed in 1.31, ClaimResource gained driver/pool/device.
    layout: dict[str, list[tuple[str, int, int, int, str]]] = {
        "ListPodResourcesRequest": [],
        "ListPodResourcesResponse": [("pod_resources", 1, message, repeated, "PodResources")],
        "PodResources": [
            ("name", 1, string, optional, ""),
            ("namespace", 2, string, optional, ""),
            ("containers", 3, message, repeated, "ContainerResources"),
        ],
        "ContainerResources": [
            ("name", 1, string, optional, ""),
            ("devices", 2, message, repeated, "ContainerDevices"),
            ("dynamic_resources", 5, message, repeated, "DynamicResource"),
        ],
        "ContainerDevices": [
            ("resource_name", 1, string, optional, ""),
            ("device_ids", 2, string, repeated, ""),
        ],
        "DynamicResource": [
            ("claim_name", 2, string, optional, ""),
            ("claim_namespace", 3, string, optional, ""),
            ("claim_resources", 4, message, repeated, "ClaimResource"),
        ],
        "ClaimResource": [
            ("driver_name", 2, string, optional, ""),
            ("pool_name", 3, string, optional, ""),
            ("device_name", 4, string, optional, ""),
        ],
    }
    for msg_name, fields in layout.items():
        msg = fdp.message_type.add(name=msg_name)
        for name, number, typ, label, type_name in fields:
            fld = msg.field.add(name=name, number=number, type=typ, label=label)
            if type_name:
                fld.type_name = f".gpuslo.podresources.v1.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"gpuslo.podresources.v1.{name}")
        )
        for name in layout
    }


MESSAGES = _build_messages()


def list_pod_resources(socket_path: str, timeout: float = 2.0) -> PodDevices:
    """Ask the kubelet which pod holds each NVIDIA device-plugin device and each DRA device."""
    import grpc

    request_cls, response_cls = (
        MESSAGES["ListPodResourcesRequest"],
        MESSAGES["ListPodResourcesResponse"],
    )
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        call = channel.unary_unary(
            LIST_METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        response = call(request_cls(), timeout=timeout)
    plugin: dict[str, set[PodRef]] = {}
    dra: dict[DraDevice, set[PodRef]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            ref = PodRef(pod.namespace, pod.name, container.name)
            for device in container.devices:
                if not device.resource_name.startswith(GPU_RESOURCE_PREFIX):
                    continue
                for device_id in device.device_ids:
                    plugin.setdefault(device_id, set()).add(ref)
            for claim in container.dynamic_resources:
                for res in claim.claim_resources:
                    if res.device_name:  # empty for non-device resources, per api.proto
                        key = DraDevice(res.driver_name, res.pool_name, res.device_name)
                        dra.setdefault(key, set()).add(ref)
    return PodDevices(
        {k: sorted(v) for k, v in plugin.items()}, {k: sorted(v) for k, v in dra.items()}
    )


def list_pod_devices(socket_path: str, timeout: float = 2.0) -> dict[str, list[PodRef]]:
    """Ask the kubelet which pod holds each NVIDIA device-plugin device: device ID -> holders."""
    return list_pod_resources(socket_path, timeout).plugin


def _string_attribute(device: Any, driver: str, name: str) -> str:
    # An attribute name without a domain is in the driver's own (resource.k8s.io/v1
    # QualifiedName), so "uuid" and "gpu.nvidia.com/uuid" are the same attribute.
    attributes = device.attributes or {}
    for key in (name, f"{driver}/{name}"):
        attr = attributes.get(key)
        if attr is not None and attr.string:
            return str(attr.string)
    return ""


def slice_device_uuids(slices: Iterable[Any], drivers: Collection[str]) -> dict[DraDevice, str]:
    """(driver, pool, device) -> the GPU or MIG UUID its ``uuid`` attribute names ("" when it
    has none), from ResourceSlices (kubernetes.client V1ResourceSlice). Only the given drivers
    count, and within a pool only the slices of its newest generation, as the API asks."""
    wanted = [s for s in slices if s.spec is not None and s.spec.driver in drivers]
    newest: dict[tuple[str, str], int] = {}
    for s in wanted:
        key = (s.spec.driver, s.spec.pool.name)
        newest[key] = max(newest.get(key, s.spec.pool.generation), s.spec.pool.generation)
    out: dict[DraDevice, str] = {}
    for s in wanted:
        spec = s.spec
        if spec.pool.generation != newest[(spec.driver, spec.pool.name)]:
            continue
        for device in spec.devices or []:
            uuid = _string_attribute(device, spec.driver, "uuid")
            out[DraDevice(spec.driver, spec.pool.name, device.name)] = uuid
    return out


class ResourceSliceMap:
    """This node's DRA devices -> GPU/MIG UUIDs, from its ResourceSlices listed through the
    official client at most every ``refresh`` seconds; a failed listing keeps the last map."""

    def __init__(
        self,
        api_client: Any,
        node: str,
        drivers: Collection[str] = (DEFAULT_DRA_DRIVER,),
        refresh: float = DEFAULT_SLICE_REFRESH,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        self.api = client.ResourceV1Api(api_client)
        self.node = node
        self.drivers = frozenset(drivers)
        self.refresh = refresh
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._uuids: dict[DraDevice, str] = {}
        self._listed_at: float | None = None
        self.success = False
        self.error: str | None = None
        self.failures = 0
        self.served = True  # False once the API server said it has no resource.k8s.io/v1

    @classmethod
    def from_environment(
        cls,
        node: str,
        drivers: Collection[str] = (DEFAULT_DRA_DRIVER,),
        refresh: float = DEFAULT_SLICE_REFRESH,
    ) -> ResourceSliceMap:
        """In a pod: the service account; elsewhere: the kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(), node, drivers, refresh)

    def uuids(self) -> dict[DraDevice, str]:
        """The current map; lists the slices again when the last listing is ``refresh`` old."""
        with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self.refresh:
                self._listed_at = now
                self._list()
            return self._uuids

    def stats(self) -> tuple[bool, int, int]:
        """(last listing worked, devices with a UUID, failed listings so far), lock-free."""
        return self.success, sum(1 for uuid in self._uuids.values() if uuid), self.failures

    def _list(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            answer = self.api.list_resource_slice(
                field_selector=f"spec.nodeName={self.node}", _request_timeout=self.timeout
            )
        except ApiException as err:
            if err.status == 404:
                # No resource.k8s.io/v1 here (Kubernetes before 1.34, or DRA off): nothing is
                # allocated through DRA, which is not a failure (node_exporter's ErrNoData).
                if self.served:
                    log.info("the API server serves no resource.k8s.io/v1: no DRA devices")
                self.served, self._uuids = False, {}
                self.success, self.error = True, None
                return
            self._failed(f"HTTP {err.status}: {err.reason}")
            return
        except Exception as err:  # connection refused, TLS, timeouts: keep the last map
            self._failed(f"{type(err).__name__}: {err}")
            return
        self._uuids = slice_device_uuids(answer.items or [], self.drivers)
        self.served, self.success, self.error = True, True, None

    def _failed(self, message: str) -> None:
        self.failures += 1
        if self.error != message:
            log.warning(
                "listing ResourceSlices of node %s failed (keeping %d devices): %s",
                self.node,
                len(self._uuids),
                message,
            )
        self.success, self.error = False, message


class PodResourcesAttributor:
    """Caches the kubelet's answer for ``ttl`` seconds; absent socket means no attribution.

    With ``slices``, devices allocated through DRA by one of its drivers are attributed too,
    each through the UUID the node's ResourceSlices give it; one they do not name is left
    out and counted. As a collector (``collect()``) it reports how attribution is doing."""

    name = c.COLLECTOR_ATTRIBUTION

    def __init__(
        self,
        socket_path: str = DEFAULT_POD_RESOURCES_SOCKET,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        slices: ResourceSliceMap | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.slices = slices
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._answer = PodDevices()
        self._cached: dict[str, list[PodRef]] = {}
        self._fetched_at: float | None = None
        self._warned = False
        self._unresolved: dict[DraDevice, str] = {}
        self._stats = _Stats()

    def available(self) -> bool:
        """True when the kubelet socket exists on this node."""
        return os.path.exists(self.socket_path)

    def holders(self) -> Mapping[str, list[PodRef]]:
        """Device ID -> pods, refreshed at most every ``ttl`` seconds; stale on error."""
        with self._lock:
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._ttl:
                return self._cached
            self._fetched_at = now
            answered = False
            if not self.available():
                self._answer = PodDevices()
            else:
                try:
                    self._answer = list_pod_resources(self.socket_path)
                    self._warned, answered = False, True
                except Exception as err:  # grpc.RpcError and friends: keep the last answer
                    if not self._warned:
                        log.warning("kubelet pod-resources at %s failed: %s", self.socket_path, err)
                        self._warned = True
            self._cached = self._combine(self._answer, answered)
            return self._cached

    def _combine(self, answer: PodDevices, answered: bool) -> dict[str, list[PodRef]]:
        out = {k: list(v) for k, v in answer.plugin.items()}
        if self.slices is None:
            self._stats = _Stats(answered, ((c.SOURCE_DEVICE_PLUGIN, len(out)),))
            return out
        plugin = len(out)
        uuids = self.slices.uuids()
        unresolved: dict[DraDevice, str] = {}
        dra = 0
        for device, refs in answer.dra.items():
            if device.driver not in self.slices.drivers:
                continue  # another driver's device (NICs, IMEX channels): not a GPU
            uuid = uuids.get(device)
            if not uuid:
                unresolved[device] = UNRESOLVED_NO_UUID if uuid == "" else UNRESOLVED_NOT_IN_SLICES
                continue
            dra += 1
            out[uuid] = sorted(set(out.get(uuid, [])) | set(refs))
        for device in sorted(unresolved.keys() - self._unresolved.keys()):
            log.warning(
                "DRA device %s/%s/%s held by %s names no GPU (%s): not attributed",
                device.driver,
                device.pool,
                device.device,
                ", ".join(f"{r.namespace}/{r.pod}/{r.container}" for r in answer.dra[device]),
                unresolved[device],
            )
        self._unresolved = unresolved
        reasons = {r: 0 for r in (UNRESOLVED_NOT_IN_SLICES, UNRESOLVED_NO_UUID)}
        for reason in unresolved.values():
            reasons[reason] += 1
        self._stats = _Stats(
            answered,
            ((c.SOURCE_DEVICE_PLUGIN, plugin), (c.SOURCE_DRA, dra)),
            tuple(sorted(reasons.items())),
        )
        return out

    def collect(self) -> list[Metric]:
        """The attribution collector: kubelet and ResourceSlice health, attributed and
        unresolved devices as of the last refresh (it never asks the kubelet or the API)."""
        stats = self._stats  # replaced whole by holders(): read without waiting on it
        kubelet, attributed = family(c.ATTRIBUTION_KUBELET_SUCCESS), family(c.ATTRIBUTION_DEVICES)
        add(kubelet, {}, 1.0 if stats.kubelet_success else 0.0)
        for source, n in stats.attributed:
            add(attributed, {c.LABEL_SOURCE: source}, float(n))
        out = [kubelet, attributed]
        if self.slices is not None:
            unresolved, ok, count, failures = (
                family(c.ATTRIBUTION_UNRESOLVED),
                family(c.ATTRIBUTION_SLICES_SUCCESS),
                family(c.ATTRIBUTION_SLICE_DEVICES),
                family(c.ATTRIBUTION_SLICE_FAILURES),
            )
            for reason, n in stats.unresolved:
                add(unresolved, {c.LABEL_REASON: reason}, float(n))
            success, devices, failed = self.slices.stats()
            add(ok, {}, 1.0 if success else 0.0)
            add(count, {}, float(devices))
            add(failures, {}, float(failed))
            out += [unresolved, ok, count, failures]
        return out


@dataclass(frozen=True)
class _Stats:
    kubelet_success: bool = False
    attributed: tuple[tuple[str, int], ...] = ()
    unresolved: tuple[tuple[str, int], ...] = ()


# cgroup v1: /kubepods/burstable/pod<uid>/<id>
# cgroup v2 (systemd): /kubepods.slice/kubepods-burstable.slice/
#                      kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_CONTAINER_ID = re.compile(r"(?:^|[-/])([0-9a-f]{64})(?:\.scope)?$")


def process_ref(pid: int, procfs: str | Path = "/proc") -> ProcessRef:
    """The pod UID and container ID a process's cgroup names (empty strings when none)."""
    try:
        text = (Path(procfs) / str(pid) / "cgroup").read_text()
    except OSError:
        return ProcessRef(pid, "", "")
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        uid = _POD_UID.search(path)
        if uid is None:
            continue
        container = _CONTAINER_ID.search(path)
        return ProcessRef(
            pid,
            uid.group(1).replace("_", "-"),
            container.group(1) if container else "",
        )
    return ProcessRef(pid, "", "")
