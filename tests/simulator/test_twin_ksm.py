"""The twin emits what a cluster's kube-state-metrics serves (pods, owners, readiness,
Deployments), in offline history and on its live endpoint, and spells GPU series in the
dcgm-exporter generation it is asked for, so correlation reads the twin as a real cluster."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gpuslo.foundation import conventions as c
from gpuslo.simulator.fleet import Fleet
from gpuslo.simulator.ksm import ksm_families, replicaset_name
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.offline import history_families, run_offline
from gpuslo.simulator.scenario import load_scenario
from tests.conftest import run_gpuslo
from tests.simulator.test_twin import SCENARIOS, _history_at


def _ready(samples, pod: str, condition: str = "true") -> float:
    (value,) = [
        v
        for (name, labels), v in samples.items()
        if name == "kube_pod_status_ready"
        and ("pod", pod) in labels
        and ("condition", condition) in labels
    ]
    return value


def test_the_history_holds_kube_state_metrics_series_and_an_xid_restart_is_not_ready(tmp_path):
    scenario = load_scenario(SCENARIOS / "gpu-lost.yaml")  # XID 48 at 80m restarts a replica
    start = 1_795_000_000
    run_offline(scenario, tmp_path, start, step=60)
    path = tmp_path / "history.om"
    before, during = _history_at(path, start + 79 * 60), _history_at(path, start + 81 * 60)
    pods = [f"llama-70b-{i}" for i in range(4)]
    assert [_ready(before, p) for p in pods] == [1.0] * 4
    # the replica on gpu-node-00 GPU 0 restarts for its 2-minute cold start: NotReady
    assert sorted(_ready(during, p) for p in pods) == [0.0, 1.0, 1.0, 1.0]
    assert sum(_ready(during, p, "false") for p in pods) == 1.0
    assert all(_ready(during, p, "unknown") == 0.0 for p in pods)
    rs = replicaset_name("llama-70b")
    assert rs.startswith("llama-70b-") and len(rs) == len("llama-70b-") + 10
    owners = {
        dict(labels)["pod"]: dict(labels)
        for (name, labels), _ in before.items()
        if name == "kube_pod_owner"
    }
    assert set(owners) == set(pods)
    assert {(o["owner_kind"], o["owner_name"], o["owner_is_controller"]) for o in owners.values()} \
        == {("ReplicaSet", rs, "true")}  # fmt: skip
    rs_owner = {dict(labels)["replicaset"]: dict(labels) for (n, labels), _ in before.items()
                if n == "kube_replicaset_owner"}  # fmt: skip
    assert rs_owner[rs]["owner_kind"] == "Deployment" and rs_owner[rs]["owner_name"] == "llama-70b"
    deployment = frozenset({"namespace": "inference", "deployment": "llama-70b"}.items())
    assert during[("kube_deployment_spec_replicas", deployment)] == 4
    assert during[("kube_deployment_status_replicas_ready", deployment)] == 3
    assert before[("kube_deployment_status_replicas_available", deployment)] == 4
    # every pod's series share its namespace, name and UID, as kube-state-metrics' do
    uids = {
        name: {dict(labels)["uid"] for (n, labels), _ in before.items() if n == name}
        for name in ("kube_pod_info", "kube_pod_owner", "kube_pod_labels", "kube_pod_status_ready")
    }
    assert len(uids["kube_pod_info"]) == 4 and len(set(map(frozenset, uids.values()))) == 1
    info = [dict(labels) for (n, labels), _ in before.items() if n == "kube_pod_info"]
    assert {i["created_by_kind"] for i in info} == {"ReplicaSet"}
    assert {i["node"] for i in info} <= {"gpu-node-00", "gpu-node-01"}
    labelled = {dict(labels).get("label_pool") for (n, labels), _ in before.items()
                if n == "kube_pod_labels"}  # fmt: skip
    assert labelled == {"llama-70b"}
    # and each serving pod's server states its model: the canonical series with a pod label
    running = {
        dict(labels)["pod"]: dict(labels)["model"]
        for (n, labels), _ in before.items()
        if n == "gpuslo_server_requests_running"
    }
    assert running == dict.fromkeys(pods, "llama-3-70b")


def test_kube_state_metrics_families_are_gauges_with_a_new_uid_for_a_recreated_pod():
    fleet = Fleet(load_scenario(SCENARIOS / "traffic-spike.yaml"))
    fleet.step(15)

    def uid_of(pod: str) -> str:
        info = next(f for f in ksm_families(fleet) if f.name == c.KSM_POD_INFO)
        return next(s.labels["uid"] for s in info.samples if s.labels["pod"] == pod)

    assert {f.type for f in ksm_families(fleet)} == {"gauge"}
    first = uid_of("llama-70b-2")
    fleet.set_replicas("llama-70b", 2)
    fleet.step(15)
    fleet.set_replicas("llama-70b", 3)  # the same name, a new pod
    assert uid_of("llama-70b-2") != first
    ready = next(f for f in ksm_families(fleet) if f.name == c.KSM_POD_STATUS_READY)
    new = {
        s.labels["condition"]: s.value for s in ready.samples if s.labels["pod"] == "llama-70b-2"
    }
    assert new == {"true": 0.0, "false": 1.0, "unknown": 0.0}  # in its cold start


def test_the_live_endpoint_serves_the_kube_state_metrics_series():
    twin = LiveTwin(load_scenario(SCENARIOS / "traffic-spike.yaml"), speed=60.0, tick=0.05)
    twin.start()
    try:
        text = ""
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{twin.port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if "gpuslo_server_requests_running{" in text:
                break
            time.sleep(0.05)
    finally:
        twin.stop()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ready = fams["kube_pod_status_ready"]
    assert ready.type == "gauge"
    pods = {s.labels["pod"] for s in ready.samples if s.labels["namespace"] == "inference"}
    assert {"llama-70b-0", "llama-70b-1", "llama-70b-2"} <= pods
    assert {s.labels["condition"] for s in ready.samples} == {"true", "false", "unknown"}
    assert {"kube_pod_owner", "kube_replicaset_owner", "kube_pod_info"} <= set(fams)
    running = fams["gpuslo_server_requests_running"]
    assert {s.labels["model"] for s in running.samples} >= {"llama-3-70b"}


def test_the_twin_spells_gpu_series_in_the_generation_asked_for(tmp_path):
    out = run_gpuslo(
        "twin",
        "offline",
        str(SCENARIOS / "gpu-lost.yaml"),
        "-o",
        str(tmp_path),
        "--step",
        "10m",
        "--start",
        "1795000000",
        "--dcgm-names",
        "current",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    samples = _history_at(tmp_path / "history.om", 1_795_000_000 + 600)
    naming = c.gpu_naming("current")
    temp = naming.name(c.DCGM_GPU_TEMP)
    gpu = [dict(labels) for (n, labels), _ in samples.items() if n == temp]
    assert len(gpu) == 16 and all("hostname" in g and "Hostname" not in g for g in gpu)
    fabric = [dict(labels) for (n, labels), _ in samples.items() if n == "node_infiniband_state_id"]
    assert fabric and all("hostname" in f for f in fabric)  # the scrape's target label too
    assert temp in history_families(naming)
    bad = run_gpuslo("twin", "offline", "gpu-lost", "-o", str(tmp_path), "--dcgm-names", "x")
    assert bad.returncode == 2 and "--dcgm-names" in bad.stderr
