"""GPU -> pod attribution: the kubelet pod-resources socket first, process cgroups otherwise.

The kubelet's PodResourcesLister (``k8s.io/kubelet/pkg/apis/podresources/v1``) answers
which pod/container holds which device ID; for ``nvidia.com/gpu`` and ``nvidia.com/mig-*``
resources the device IDs are GPU and MIG UUIDs. The message types are built at import from
a descriptor holding only the fields we read (protobuf skips the rest on the wire), so no
generated code is vendored.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE_PREFIX = "nvidia.com/"


@dataclass(frozen=True, order=True)
class PodRef:
    """A container in a pod."""

    namespace: str
    pod: str
    container: str


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
        ],
        "ContainerDevices": [
            ("resource_name", 1, string, optional, ""),
            ("device_ids", 2, string, repeated, ""),
        ],
    }
    for msg_name, fields in layout.items():
        msg = fdp.message_type.add(name=msg_name)
        for name, number, typ, label, type_name in fields:
            field = msg.field.add(name=name, number=number, type=typ, label=label)
            if type_name:
                field.type_name = f".gpuslo.podresources.v1.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"gpuslo.podresources.v1.{name}")
        )
        for name in layout
    }


MESSAGES = _build_messages()


def list_pod_devices(socket_path: str, timeout: float = 2.0) -> dict[str, list[PodRef]]:
    """Ask the kubelet which pod holds each NVIDIA device: device ID -> holders."""
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
    holders: dict[str, list[PodRef]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for device in container.devices:
                if not device.resource_name.startswith(GPU_RESOURCE_PREFIX):
                    continue
                for device_id in device.device_ids:
                    ref = PodRef(pod.namespace, pod.name, container.name)
                    holders.setdefault(device_id, []).append(ref)
    return {k: sorted(v) for k, v in holders.items()}


class PodResourcesAttributor:
    """Caches the kubelet's answer for ``ttl`` seconds; absent socket means no attribution."""

    def __init__(
        self,
        socket_path: str = DEFAULT_POD_RESOURCES_SOCKET,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, list[PodRef]] = {}
        self._fetched_at: float | None = None
        self._warned = False

    def available(self) -> bool:
        """True when the kubelet socket exists on this node."""
        return os.path.exists(self.socket_path)

    def holders(self) -> Mapping[str, list[PodRef]]:
        """Device ID -> pods, refreshed at most every ``ttl`` seconds; stale on error."""
        now = self._clock()
        if self._fetched_at is not None and now - self._fetched_at < self._ttl:
            return self._cached
        self._fetched_at = now
        if not self.available():
            self._cached = {}
            return self._cached
        try:
            self._cached = list_pod_devices(self.socket_path)
            self._warned = False
        except Exception as err:  # grpc.RpcError and friends: keep serving the last answer
            if not self._warned:
                log.warning("kubelet pod-resources at %s failed: %s", self.socket_path, err)
                self._warned = True
        return self._cached


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
