"""GPU -> pod attribution. The kubelet side is a recorded API contract (named as such) served by
a real gRPC server on a unix socket, encoded with the fields the kubelet sends that we skip."""

import json
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gpuslo.collectors import PodRef, PodResourcesAttributor, list_pod_devices, process_ref
from gpuslo.collectors.attribution import MESSAGES
from tests.conftest import FIXTURES

pytestmark = pytest.mark.contract
CONTRACT = FIXTURES / "contracts" / "kubelet_podresources_v1_list.json"


def kubelet_messages():
    """The kubelet's own message layout, wider than ours (cpu_ids, topology)."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="kubelet_v1.proto", package="v1", syntax="proto3")
    layout = {
        "ListPodResourcesResponse": [("pod_resources", 1, f.TYPE_MESSAGE, True, "PodResources")],
        "PodResources": [
            ("name", 1, f.TYPE_STRING, False, ""),
            ("namespace", 2, f.TYPE_STRING, False, ""),
            ("containers", 3, f.TYPE_MESSAGE, True, "ContainerResources"),
        ],
        "ContainerResources": [
            ("name", 1, f.TYPE_STRING, False, ""),
            ("devices", 2, f.TYPE_MESSAGE, True, "ContainerDevices"),
            ("cpu_ids", 3, f.TYPE_INT64, True, ""),
        ],
        "ContainerDevices": [
            ("resource_name", 1, f.TYPE_STRING, False, ""),
            ("device_ids", 2, f.TYPE_STRING, True, ""),
            ("topology", 3, f.TYPE_MESSAGE, False, "TopologyInfo"),
        ],
        "TopologyInfo": [("nodes", 1, f.TYPE_MESSAGE, True, "NUMANode")],
        "NUMANode": [("ID", 1, f.TYPE_INT64, False, "")],
    }
    for name, fields in layout.items():
        msg = fdp.message_type.add(name=name)
        for fname, num, typ, rep, tname in fields:
            fld = msg.field.add(
                name=fname,
                number=num,
                type=typ,
                label=f.LABEL_REPEATED if rep else f.LABEL_OPTIONAL,
            )
            if tname:
                fld.type_name = f".v1.{tname}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"v1.{n}")) for n in layout
    }


def recorded_response():
    m = kubelet_messages()
    data = json.loads(CONTRACT.read_text())
    resp = m["ListPodResourcesResponse"]()
    for pod in data["pod_resources"]:
        p = resp.pod_resources.add(name=pod["name"], namespace=pod["namespace"])
        for cont in pod["containers"]:
            c = p.containers.add(name=cont["name"], cpu_ids=cont["cpu_ids"])
            for dev in cont["devices"]:
                d = c.devices.add(resource_name=dev["resource_name"], device_ids=dev["device_ids"])
                d.topology.nodes.add(ID=dev["numa_node"])
    return resp


@pytest.fixture
def kubelet(tmp_path):
    sock = tmp_path / "kubelet.sock"
    calls = []

    def list_(request, context):
        calls.append(request)
        return recorded_response()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {
            "List": grpc.unary_unary_rpc_method_handler(
                list_,
                request_deserializer=MESSAGES["ListPodResourcesRequest"].FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield str(sock), calls
    server.stop(None)


def test_gpu_and_mig_devices_map_to_their_pods_and_other_devices_are_ignored(kubelet):
    sock, calls = kubelet
    holders = list_pod_devices(sock)
    assert holders["GPU-aaaaaaaa-0000-0000-0000-000000000000"] == [PodRef("llm", "chat-0", "vllm")]
    assert holders["GPU-bbbbbbbb-0000-0000-0000-000000000000"] == [PodRef("llm", "chat-0", "vllm")]
    assert holders["MIG-11111111-2222-3333-4444-555555555555"] == [
        PodRef("batch", "embed-1", "tei"),
        PodRef("batch", "embed-2", "tei"),
    ]
    assert "mlx5_0" not in holders
    assert len(calls) == 1


def test_answers_are_cached_for_the_ttl_and_kept_when_the_kubelet_goes_away(kubelet, clock):
    sock, calls = kubelet
    att = PodResourcesAttributor(sock, ttl=10, clock=clock)
    first = att.holders()
    att.holders()
    assert len(calls) == 1
    clock.advance(11)
    att.holders()
    assert len(calls) == 2
    att.socket_path = sock + ".gone"
    clock.advance(11)
    assert att.holders() == {}  # socket absent: no kubelet on this node any more
    assert first


def test_a_kubelet_that_errors_leaves_the_last_answer_in_place(kubelet, clock, tmp_path, caplog):
    sock, _ = kubelet
    att = PodResourcesAttributor(sock, ttl=1, clock=clock)
    good = att.holders()
    dead = tmp_path / "dead.sock"
    dead.write_text("")  # exists but nobody listens
    att.socket_path = str(dead)
    clock.advance(2)
    assert att.holders() == good
    assert "pod-resources" in caplog.text


def test_no_socket_means_no_attribution(tmp_path):
    assert PodResourcesAttributor(str(tmp_path / "none.sock")).holders() == {}


@pytest.mark.parametrize(
    ("line", "uid", "cid"),
    [
        (
            "11:memory:/kubepods/burstable/pod6f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f/" + "b" * 64,
            "6f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
            "b" * 64,
        ),
        (
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1c2d3e_4a5b_6c7d_"
            "8e9f_0a1b2c3d4e5f.slice/crio-" + "c" * 64 + ".scope",
            "6f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
            "c" * 64,
        ),
        ("0::/system.slice/containerd.service", "", ""),
    ],
)
def test_cgroup_paths_of_both_cgroup_versions_name_the_pod(tmp_path, line, uid, cid):
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "cgroup").write_text(line + "\n")
    ref = process_ref(10, tmp_path)
    assert (ref.pod_uid, ref.container_id) == (uid, cid)
