"""GPU -> pod attribution. The kubelet side is a recorded API contract (named as such) served by
a real gRPC server on a unix socket, encoded with the fields the kubelet sends that we skip; for
DRA, the node's ResourceSlices are a recorded API contract too (fixtures/dra/), served on loopback
to the official Kubernetes client so that its own deserialization runs."""

import json
import logging
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gpuslo.collectors import (
    Agent,
    GpuCollector,
    PodRef,
    PodResourcesAttributor,
    list_pod_devices,
    process_ref,
)
from gpuslo.collectors.attribution import (
    MESSAGES,
    DraDevice,
    ResourceSliceMap,
    list_pod_resources,
)
from gpuslo.collectors.backends import SimBackend
from gpuslo.foundation import conventions as c
from tests.conftest import FIXTURES, run_gpuslo
from tests.contracts import ContractServer, contract_fixture

pytestmark = pytest.mark.contract
CONTRACT = FIXTURES / "contracts" / "kubelet_podresources_v1_list.json"
DRA = Path(__file__).parent / "fixtures" / "dra"
DRA_KUBELET = DRA / "kubelet_podresources_v1_list.json"
SLICES = json.loads((DRA / "resourceslices_v1.json").read_text())
NODE = "gpu-node-1"
# The sim backend's UUIDs for node gpu-node-1, the ones the ResourceSlice contract publishes.
GPU = [
    "GPU-06e40dee-f1f8-57ca-399c-408affad08f6",
    "GPU-ed50ff99-a068-da3c-94d3-5b1eb622e5cb",
    "GPU-fea3ab18-20e7-cce0-a9ea-131bf648dd09",
    "GPU-9cf5b221-73ea-4e88-80f8-1f2e4929bb78",
    "GPU-0e5cbcf2-e6e7-f33d-4bf4-bba3b3a41232",
]
MIG = "MIG-9cf5b221-73ea-4e88-80f8-1f2e4929bb78-0"
STALE_GPU5 = "GPU-5a1d0c3e-7b2f-4c19-8e6d-2f0a9b7c4d11"

contract = contract_fixture(SLICES)


def kubelet_messages():
    """The kubelet's own message layout (api.proto, 1.34), wider than ours: cpu_ids,
    topology, CDI device names."""
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
            ("dynamic_resources", 5, f.TYPE_MESSAGE, True, "DynamicResource"),
        ],
        "ContainerDevices": [
            ("resource_name", 1, f.TYPE_STRING, False, ""),
            ("device_ids", 2, f.TYPE_STRING, True, ""),
            ("topology", 3, f.TYPE_MESSAGE, False, "TopologyInfo"),
        ],
        "TopologyInfo": [("nodes", 1, f.TYPE_MESSAGE, True, "NUMANode")],
        "NUMANode": [("ID", 1, f.TYPE_INT64, False, "")],
        "DynamicResource": [
            ("claim_name", 2, f.TYPE_STRING, False, ""),
            ("claim_namespace", 3, f.TYPE_STRING, False, ""),
            ("claim_resources", 4, f.TYPE_MESSAGE, True, "ClaimResource"),
        ],
        "ClaimResource": [
            ("cdi_devices", 1, f.TYPE_MESSAGE, True, "CDIDevice"),
            ("driver_name", 2, f.TYPE_STRING, False, ""),
            ("pool_name", 3, f.TYPE_STRING, False, ""),
            ("device_name", 4, f.TYPE_STRING, False, ""),
        ],
        "CDIDevice": [("name", 1, f.TYPE_STRING, False, "")],
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


def recorded_response(path=CONTRACT):
    m = kubelet_messages()
    data = json.loads(path.read_text())
    resp = m["ListPodResourcesResponse"]()
    for pod in data["pod_resources"]:
        p = resp.pod_resources.add(name=pod["name"], namespace=pod["namespace"])
        for cont in pod["containers"]:
            c_ = p.containers.add(name=cont["name"], cpu_ids=cont["cpu_ids"])
            for dev in cont["devices"]:
                d = c_.devices.add(resource_name=dev["resource_name"], device_ids=dev["device_ids"])
                d.topology.nodes.add(ID=dev["numa_node"])
            for claim in cont.get("dynamic_resources", []):
                dr = c_.dynamic_resources.add(
                    claim_name=claim["claim_name"], claim_namespace=claim["claim_namespace"]
                )
                for res in claim["claim_resources"]:
                    cr = dr.claim_resources.add(
                        driver_name=res["driver_name"],
                        pool_name=res["pool_name"],
                        device_name=res["device_name"],
                    )
                    for cdi in res["cdi_devices"]:
                        cr.cdi_devices.add(name=cdi)
    return resp


def serve_kubelet(sock, path):
    calls = []

    def list_(request, context):
        calls.append(request)
        return recorded_response(path)

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
    return server, calls


@pytest.fixture
def kubelet(tmp_path):
    sock = tmp_path / "kubelet.sock"
    server, calls = serve_kubelet(sock, CONTRACT)
    yield str(sock), calls
    server.stop(None)


@pytest.fixture
def dra_kubelet(tmp_path):
    """The kubelet of a node where NVIDIA's DRA driver and device plugin share the GPUs."""
    sock = tmp_path / "kubelet.sock"
    server, calls = serve_kubelet(sock, DRA_KUBELET)
    yield str(sock), calls
    server.stop(None)


def families(collector):
    return {
        m.name: {tuple(sorted(s.labels.items())): s.value for s in m.samples}
        for m in collector.collect()
    }


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


# --------------------------------------------------------------------------- DRA


def dra_attributor(server: ContractServer, sock: str, clock, **kw) -> PodResourcesAttributor:
    slices = ResourceSliceMap(server.api_client(), NODE, refresh=kw.pop("refresh", 60), clock=clock)
    return PodResourcesAttributor(sock, ttl=kw.pop("ttl", 10), clock=clock, slices=slices)


def test_the_kubelet_names_dra_devices_by_driver_pool_and_device_and_cdi_names_are_skipped(
    dra_kubelet,
):
    sock, _ = dra_kubelet
    answer = list_pod_resources(sock)
    assert answer.plugin == {GPU[1]: [PodRef("legacy", "train-0", "trainer")]}  # not rdma/ib
    assert answer.dra == {
        DraDevice("gpu.nvidia.com", NODE, "gpu-0"): [PodRef("llm", "chat-0", "vllm")],
        DraDevice("gpu.nvidia.com", NODE, "gpu-3-mig-1g10gb-19-0"): [
            PodRef("batch", "embed-1", "tei"),
            PodRef("batch", "embed-2", "tei"),
        ],
        DraDevice("gpu.nvidia.com", NODE, "gpu-5"): [PodRef("ghost", "orphan-0", "app")],
        DraDevice("compute-domain.nvidia.com", NODE, "channel-0"): [
            PodRef("hpc", "mpi-0", "launcher")
        ],
    }
    assert list_pod_devices(sock) == answer.plugin


def test_dra_gpus_and_mig_devices_are_attributed_through_slices_beside_device_plugin_gpus(
    dra_kubelet, contract, clock
):
    sock, _ = dra_kubelet
    server = contract("list_node_slices")
    holders = dra_attributor(server, sock, clock).holders()
    assert holders == {
        GPU[0]: [PodRef("llm", "chat-0", "vllm")],  # a whole GPU claimed through DRA
        GPU[1]: [PodRef("legacy", "train-0", "trainer")],  # the device plugin's, by UUID
        MIG: [PodRef("batch", "embed-1", "tei"), PodRef("batch", "embed-2", "tei")],  # shared
    }
    # gpu-5 is only in the pool's stale generation-1 slice: the newest generation rules
    assert STALE_GPU5 not in holders


def test_an_allocated_device_missing_from_the_slices_is_unattributed_counted_and_logged(
    dra_kubelet, contract, clock, caplog
):
    sock, _ = dra_kubelet
    att = dra_attributor(contract("list_node_slices"), sock, clock)
    with caplog.at_level(logging.WARNING, "gpuslo.collectors.attribution"):
        att.holders()
    fams = families(att)
    assert fams[c.ATTRIBUTION_UNRESOLVED.name] == {
        (("reason", "no_uuid"),): 0,
        (("reason", "not_in_slices"),): 1,
    }
    assert fams[c.ATTRIBUTION_DEVICES.name] == {
        (("source", "device_plugin"),): 1,
        (("source", "dra"),): 2,
    }
    assert fams[c.ATTRIBUTION_KUBELET_SUCCESS.name] == {(): 1}
    assert fams[c.ATTRIBUTION_SLICES_SUCCESS.name] == {(): 1}
    assert fams[c.ATTRIBUTION_SLICE_DEVICES.name] == {(): 4}  # gpu-0, gpu-2, the MIG, gpu-4
    assert fams[c.ATTRIBUTION_SLICE_FAILURES.name] == {(): 0}
    warned = [r.getMessage() for r in caplog.records if "names no GPU" in r.getMessage()]
    assert len(warned) == 1 and "gpu-5" in warned[0] and "ghost/orphan-0/app" in warned[0]
    clock.advance(11)
    caplog.clear()
    att.holders()  # still unresolved: counted again, not logged again
    assert not [r for r in caplog.records if "names no GPU" in r.getMessage()]
    assert families(att)[c.ATTRIBUTION_UNRESOLVED.name][(("reason", "not_in_slices"),)] == 1


def test_a_dynamic_mig_partition_without_a_uuid_yet_is_counted_as_no_uuid(
    dra_kubelet, contract, clock
):
    sock, _ = dra_kubelet
    att = dra_attributor(contract("dynamic_mig"), sock, clock)
    holders = att.holders()
    assert MIG not in holders and holders[GPU[0]] == [PodRef("llm", "chat-0", "vllm")]
    assert families(att)[c.ATTRIBUTION_UNRESOLVED.name] == {
        (("reason", "no_uuid"),): 1,
        (("reason", "not_in_slices"),): 1,
    }


def test_unallocated_gpus_keep_reporting_without_pod_labels(dra_kubelet, contract, clock):
    sock, _ = dra_kubelet
    att = dra_attributor(contract("list_node_slices"), sock, clock)
    backend = SimBackend(count=5, node=NODE, clock=clock, mig=[[], [], [], ["1g.10gb"], []])
    gpu = GpuCollector(backend, hostname=NODE, attributor=att)
    agent = Agent([gpu, att], clock=clock)
    agent.sample_all()
    util = {}
    for fam in agent.snapshot(c.COLLECTOR_GPU).families:
        for s in fam.samples:
            if fam.name == c.DCGM_GPU_UTIL.name:
                util[s.labels[c.LABEL_UUID]] = s.labels[c.LABEL_POD]
    assert util == {
        GPU[0]: "chat-0",
        GPU[1]: "train-0",
        GPU[2]: "",  # published in the slices, claimed by nobody: still reported
        GPU[3]: "",  # MIG-enabled parent
        GPU[4]: "",
    }
    pod_info = [
        s.labels
        for fam in agent.snapshot(c.COLLECTOR_GPU).families
        if fam.name == c.GPU_POD_INFO.name.removesuffix("_info")
        for s in fam.samples
    ]
    held = sorted(
        (lab[c.LABEL_UUID], lab.get(c.LABEL_GPU_I_ID, ""), lab["pod"]) for lab in pod_info
    )
    assert held == sorted(
        [
            (GPU[0], "", "chat-0"),
            (GPU[1], "", "train-0"),
            (GPU[3], "1", "embed-1"),
            (GPU[3], "1", "embed-2"),
        ]
    )
    lines = agent.render().splitlines()
    assert f'{c.ATTRIBUTION_UNRESOLVED.name}{{reason="not_in_slices"}} 1' in lines


def test_a_failed_slice_listing_keeps_the_last_mapping_and_is_counted(
    dra_kubelet, contract, clock, caplog
):
    sock, _ = dra_kubelet
    server = contract("list_then_forbidden")
    att = dra_attributor(server, sock, clock, ttl=10, refresh=60)
    first = att.holders()
    clock.advance(30)  # the kubelet is asked again, the slices are not yet (the contract
    assert att.holders() == first  # server fails the test on a request it did not expect)
    clock.advance(31)
    with caplog.at_level(logging.WARNING, "gpuslo.collectors.attribution"):
        assert att.holders() == first  # 403: the last good map stays
    assert att.slices is not None and "HTTP 403" in (att.slices.error or "")
    assert "ResourceSlices of node gpu-node-1 failed" in caplog.text
    fams = families(att)
    assert fams[c.ATTRIBUTION_SLICES_SUCCESS.name] == {(): 0}
    assert fams[c.ATTRIBUTION_SLICE_FAILURES.name] == {(): 1}
    assert fams[c.ATTRIBUTION_SLICE_DEVICES.name] == {(): 4}


def test_a_cluster_without_resource_k8s_io_v1_is_not_a_failure(kubelet, contract, clock):
    sock, _ = kubelet  # a device-plugin node on a cluster older than Kubernetes 1.34
    att = dra_attributor(contract("not_served"), sock, clock)
    assert att.holders() == list_pod_devices(sock)
    fams = families(att)
    assert fams[c.ATTRIBUTION_SLICES_SUCCESS.name] == {(): 1}
    assert fams[c.ATTRIBUTION_SLICE_FAILURES.name] == {(): 0}
    assert fams[c.ATTRIBUTION_UNRESOLVED.name][(("reason", "not_in_slices"),)] == 0


def test_only_the_configured_drivers_devices_count(dra_kubelet, clock):
    sock, _ = dra_kubelet
    server = ContractServer(SLICES["list_node_slices"])
    try:
        slices = ResourceSliceMap(
            server.api_client(), NODE, drivers=["compute-domain.nvidia.com"], clock=clock
        )
        att = PodResourcesAttributor(sock, clock=clock, slices=slices)
        # IMEX channels carry no uuid: claimed, listed, but no GPU to attribute
        assert att.holders() == {GPU[1]: [PodRef("legacy", "train-0", "trainer")]}
        assert families(att)[c.ATTRIBUTION_UNRESOLVED.name][(("reason", "no_uuid"),)] == 1
    finally:
        server.done()


def test_agent_once_with_dra_attributes_through_a_kubeconfig(dra_kubelet, tmp_path, monkeypatch):
    sock, _ = dra_kubelet
    server = ContractServer(SLICES["list_node_slices"])
    port = server.http.server_address[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc = run_gpuslo(
        "agent", "--once", "--gpu-backend", "sim", "--sim-gpus", "5", "--hostname", NODE,
        "--no-collector.infiniband", "--pod-resources-socket", sock, "--dra", "--node-name", NODE,
    )  # fmt: skip
    server.done()
    assert proc.returncode == 0, proc.stderr
    util = [line for line in proc.stdout.splitlines() if line.startswith(c.DCGM_GPU_UTIL.name)]
    assert len(util) == 5
    assert sum(f'UUID="{GPU[0]}"' in line and 'pod="chat-0"' in line for line in util) == 1
    assert sum(f'UUID="{GPU[2]}"' in line and 'pod=""' in line for line in util) == 1
    assert f"{c.ATTRIBUTION_SLICES_SUCCESS.name} 1" in proc.stdout.splitlines()


def test_agent_cli_dra_needs_a_node_name(monkeypatch):
    monkeypatch.delenv("NODE_NAME", raising=False)
    proc = run_gpuslo("agent", "--once", "--gpu-backend", "sim", "--sim-gpus", "1", "--dra")
    assert proc.returncode == 2
    assert "--dra needs --node-name" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dra-refresh", "0"], "--dra-refresh: must be > 0 seconds"),
        ([], "--dra: no Kubernetes credentials"),
    ],
)
def test_agent_cli_dra_errors_are_one_line(monkeypatch, tmp_path, extra, message):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc = run_gpuslo(
        "agent", "--once", "--gpu-backend", "sim", "--sim-gpus", "1", "--dra", "--node-name", NODE,
        *extra,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
