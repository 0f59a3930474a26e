"""The digital twin: scenario validation, the fleet model's behaviour under each fault, offline
history that a real Prometheus backfills, and the live pool API driven by the remediation
hook's twin actuator."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from gpuslo.collectors import Agent, GpuCollector
from gpuslo.collectors.backends import SimBackend
from gpuslo.foundation.errors import SpecError
from gpuslo.foundation.promlab import Prometheus
from gpuslo.remediation.actuators import TwinActuator
from gpuslo.remediation.policy import Route, Workload
from gpuslo.simulator.fleet import Fleet
from gpuslo.simulator.live import LiveTwin
from gpuslo.simulator.offline import FleetAgents, run_offline
from gpuslo.simulator.scenario import load_scenario
from tests.conftest import run_gpuslo

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"


def run(fleet: Fleet, until: float, dt: float = 15.0) -> None:
    while fleet.t < until:
        fleet.step(dt)


FAULT_FREE = {"quiet-day", "fault-free-day"}  # the scenarios where nothing happens on purpose


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid(path):
    scenario = load_scenario(path)
    assert scenario.faults or scenario.actions or scenario.canaries or path.stem in FAULT_FREE


def test_a_scripted_fallback_shifts_traffic_at_its_time():
    fleet = Fleet(load_scenario(SCENARIOS / "cost-fallback.yaml"))
    run(fleet, 39 * 60)
    assert fleet.fallback_share["llama-70b"] == 0
    run(fleet, 41 * 60)
    assert fleet.fallback_share["llama-70b"] == 50
    assert fleet.totals[("llama-8b-cpu", "acme")].outcomes["success"] > 0


def test_scenario_problems_are_reported_at_their_place(tmp_path):
    text = (SCENARIOS / "gpu-lost.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("node: gpu-node-01, gpu: 3", "node: gpu-node-9, gpu: 3").replace(
            "replicas: 4, gpus_per_replica: 2", "replicas: 40, gpus_per_replica: 2"
        )
    )
    with pytest.raises(SpecError) as err:
        load_scenario(bad)
    messages = [str(p) for p in err.value.problems]
    assert any("faults[0].node: no node named 'gpu-node-9'" in m for m in messages), messages
    assert any("pools: the pools need 80 whole GPUs; the nodes have 16" in m for m in messages)
    bad.write_text(text.replace("profile: H200", "profile: B300"))
    with pytest.raises(SpecError, match=r"bad.yaml:\d+:\d+: nodes\[0\]\.profile: .*unknown GPU"):
        load_scenario(bad)


def test_a_traffic_spike_beyond_capacity_raises_latency_and_sheds_then_drains():
    fleet = Fleet(load_scenario(SCENARIOS / "traffic-spike.yaml"))
    pool = fleet.pools["llama-70b"]
    run(fleet, 35 * 60)
    before, rejected_before = (
        pool.ttft_mean,
        fleet.totals[("llama-70b", "acme")].outcomes["rejected"],
    )
    assert pool.load < 1 and rejected_before == 0
    run(fleet, 55 * 60)
    assert pool.load > 1.2 and pool.ttft_mean > 10 * before
    assert fleet.totals[("llama-70b", "acme")].outcomes["rejected"] > 0
    run(fleet, 90 * 60)
    assert pool.backlog == 0 and pool.ttft_mean < 2 * before


def test_thermal_throttling_slows_the_whole_sharded_replica_and_heats_the_gpu():
    fleet = Fleet(load_scenario(SCENARIOS / "thermal-throttling.yaml"))
    run(fleet, 25 * 60)
    tpot_before = fleet.pools["llama-70b"].replicas[0]
    hot = next(g for g in fleet.gpus if g.node == "gpu-node-00" and g.index == 1)
    peer = next(g for g in fleet.gpus if g.node == "gpu-node-00" and g.index == 2)
    run(fleet, 50 * 60)
    assert fleet._health(tpot_before) == pytest.approx(0.6)
    assert hot.temperature > peer.temperature + 5 and hot.power < peer.power
    assert hot.throttle_s > 0 and peer.throttle_s == 0


def test_a_lost_gpu_takes_its_replica_out_and_counts_the_xid(tmp_path):
    scenario = load_scenario(SCENARIOS / "gpu-lost.yaml")
    fleet = Fleet(scenario)
    run(fleet, 25 * 60)
    lost = next(g for g in fleet.gpus if g.node == "gpu-node-01" and g.index == 3)
    assert lost.lost and lost.xids == {79: 1}
    serving = [fleet._health(r) for r in fleet.pools["llama-70b"].replicas]
    assert serving.count(0.0) == 1
    run(fleet, 70 * 60)
    assert not lost.lost and lost.xids == {79: 1}  # back, and counted once


def test_scaling_adds_capacity_only_after_the_cold_start():
    fleet = Fleet(load_scenario(SCENARIOS / "traffic-spike.yaml"))
    run(fleet, 60)
    fleet.set_replicas("llama-70b", 4)
    pool = fleet.pools["llama-70b"]
    assert len(pool.replicas) == 4 and pool.ready == 4
    assert [fleet._health(r) > 0 for r in pool.replicas] == [True, True, True, False]
    run(fleet, 60 + 90)
    assert all(fleet._health(r) > 0 for r in pool.replicas)
    fleet.set_replicas("llama-70b", 9)  # 16 GPUs hold 4 replicas of 4: the rest stay pending
    assert len(pool.replicas) == 4


@pytest.mark.component
def test_offline_history_is_deterministic_and_a_real_prometheus_reads_the_fault(tmp_path):
    scenario = load_scenario(SCENARIOS / "traffic-spike.yaml")
    start = 1_795_000_000
    run_offline(scenario, tmp_path / "a", start)
    run_offline(scenario, tmp_path / "b", start)
    history = (tmp_path / "a" / "history.om").read_bytes()
    assert history == (tmp_path / "b" / "history.om").read_bytes()
    incidents = json.loads((tmp_path / "a" / "incidents.json").read_text())
    assert incidents == [
        {"kind": "traffic_spike", "start": start + 2400.0, "end": start + 3600.0, "tenant": "acme"}
    ]
    with Prometheus(tmp_path / "prom") as prom:
        prom.backfill_openmetrics(tmp_path / "a" / "history.om")
        prom.restart()
        shed = 'sum(rate(gen_ai_server_requests_total{outcome="rejected"}[5m]))'
        p99 = (
            "histogram_quantile(0.99, sum by (le) "
            "(rate(gen_ai_server_time_to_first_token_seconds_bucket[5m])))"
        )
        assert prom.scalar(shed, at=start + 30 * 60) == 0
        assert prom.scalar(shed, at=start + 55 * 60) > 1
        assert prom.scalar(p99, at=start + 55 * 60) > 5 * prom.scalar(p99, at=start + 30 * 60)


def test_the_hooks_twin_actuator_drives_the_live_pool_api_and_agents_serve_gpus():
    scenario = load_scenario(SCENARIOS / "traffic-spike.yaml")
    twin = LiveTwin(scenario, speed=60.0, tick=0.05).start()
    try:
        actuator = TwinActuator(f"http://127.0.0.1:{twin.port}")
        pool = Workload(namespace="inference", name="llama-70b")
        assert actuator.replicas(pool) == 3
        actuator.scale(pool, 4)
        assert actuator.replicas(pool) == 4
        route = Route(namespace="inference", name="llama-70b")
        assert actuator.weights(route) == {"llama-70b": 100, "llama-8b-cpu": 0}
        actuator.set_weights(route, {"llama-70b": 75, "llama-8b-cpu": 25})
        assert actuator.weights(route) == {"llama-70b": 75, "llama-8b-cpu": 25}
        text = ""
        for _ in range(100):  # until the model has stepped at least once
            with urllib.request.urlopen(f"http://127.0.0.1:{twin.port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if "gen_ai_server_requests_total{" in text:
                break
            time.sleep(0.05)
        assert 'gpuslo_twin_pool_replicas{pool="llama-70b",namespace="inference"} 4' in text
        assert "gen_ai_server_requests_total{" in text
        assert len(twin.agent_targets) == 2
        with urllib.request.urlopen(f"http://{twin.agent_targets[0]}/metrics", timeout=5) as resp:
            agent = resp.read().decode()
        assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0"' in agent and 'Hostname="gpu-node-00"' in agent
    finally:
        twin.stop()


def test_cli_offline_and_validate(tmp_path):
    out = run_gpuslo(
        "twin",
        "offline",
        str(SCENARIOS / "noisy-neighbour.yaml"),
        "-o",
        str(tmp_path),
        "--step",
        "1m",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "120 steps" in out.stdout and (tmp_path / "history.om").stat().st_size > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: gpuslo/v1\nkind: TwinScenario\n")
    out = run_gpuslo("twin", "validate", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "duration" in out.stderr


def test_an_infiniband_flap_stalls_only_the_replica_sharded_over_that_node():
    fleet = Fleet(load_scenario(SCENARIOS / "fabric-degradation.yaml"))
    run(fleet, 35 * 60)
    first, second = fleet.pools["llama-405b"].replicas
    assert {g.node for g in first.gpus} == {"gpu-node-00", "gpu-node-01"}
    assert fleet._health(first) == pytest.approx(0.2) and fleet._health(second) == 1.0
    run(fleet, 75 * 60)  # the NVLink CRC storm on gpu-node-02 slows the other replica
    assert fleet._health(first) == 1.0 and fleet._health(second) == pytest.approx(0.85)


def test_a_noisy_neighbour_takes_capacity_while_the_gpu_reads_busier():
    fleet = Fleet(load_scenario(SCENARIOS / "noisy-neighbour.yaml"))
    run(fleet, 40 * 60)
    shared = next(g for g in fleet.gpus if g.index == 2)
    others = [g.util for g in fleet.gpus if g.index != 2]
    assert shared.util > max(others)
    replica = fleet.pools["mistral-7b"].replicas[shared.replica]  # type: ignore[index]
    assert fleet._health(replica) == pytest.approx(0.7)


def test_mig_replicas_run_on_instances_and_a_neighbour_cannot_touch_them(tmp_path):
    scenario = load_scenario(SCENARIOS / "noisy-neighbour.yaml")
    fleet = Fleet(scenario)
    run(fleet, 40 * 60)
    mig = fleet.pools["phi-3-mig"]
    placed = [(r.gpus[0].node, r.gpus[0].index, r.slice.index) for r in mig.replicas]  # type: ignore[union-attr]
    assert placed == [
        ("mig-node-00", 0, 1),
        ("mig-node-00", 0, 2),
        ("mig-node-00", 1, 1),
        ("mig-node-00", 1, 2),
    ]
    assert all(fleet._health(r) == 1.0 for r in mig.replicas)  # the neighbour is on mig GPU 1
    whole = fleet.pools["mistral-7b"]
    assert all(r.slice is None and not r.gpus[0].slices for r in whole.replicas)
    gpu = next(g for g in fleet.gpus if g.node == "mig-node-00" and g.index == 0)
    assert gpu.util == pytest.approx(sum(3 / 7 * s.util for s in gpu.slices))
    run_offline(scenario, tmp_path, start=1_795_000_000, step=60)
    text = (tmp_path / "history.om").read_text()
    assert 'GPU_I_ID="2",GPU_I_PROFILE="3g.40gb"' in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SCENARIOS / "noisy-neighbour.yaml")
        .read_text()
        .replace("replicas: 4, mig", "replicas: 5, mig")
    )
    with pytest.raises(SpecError, match=r"5 replicas need 5 3g\.40gb instances; the nodes have 4"):
        load_scenario(bad)


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+) (\S+)$")
_LABEL = re.compile(r'([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"')


def _history_at(path: Path, at: float) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of an OpenMetrics history at one timestamp: (name, labels) -> value."""
    out = {}
    with path.open() as fh:
        for line in fh:
            m = _SAMPLE.match(line)
            if m is None or float(m.group(4)) != at:
                continue
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def _gpu_samples(samples, node: str):
    """The GPU collector's samples of one node: the series that name a GPU (UUID label)."""
    return {
        key: v
        for key, v in samples.items()
        if dict(key[1]).get("UUID") and dict(key[1]).get("Hostname") == node
    }


def test_offline_history_holds_the_agents_own_gpu_series(tmp_path):
    """The history's GPU series of a node at a step are what that node's real agent (a
    GpuCollector over the sim backend, fed from the fleet) renders at that step: names, label
    sets and values, all of them without a keep list, the kept families with the default."""
    scenario = load_scenario(SCENARIOS / "noisy-neighbour.yaml")  # MIG and a noisy neighbour
    start, dt, steps = 1_795_000_000, 60.0, 40  # 40 min: the neighbour is on the GPUs
    run_offline(scenario, tmp_path / "all", start, step=dt, families=None)
    run_offline(scenario, tmp_path / "kept", start, step=dt)
    fleet = Fleet(scenario)
    with TemporaryDirectory() as workdir:
        agents = FleetAgents(fleet, Path(workdir), agent_clock=lambda: fleet.t)
        for _ in range(steps):
            fleet.step(dt)
            agents.feed()
            agents.sample()
        rendered = {n.name: n.agent.render(openmetrics=True) for n in agents}
        node = next(iter(agents))
        assert isinstance(node.agent, Agent) and isinstance(node.backend, SimBackend)
        assert isinstance(node.agent.collectors[0], GpuCollector)
    at = start + steps * dt
    everything = _history_at(tmp_path / "all" / "history.om", at)
    kept = _history_at(tmp_path / "kept" / "history.om", at)
    for name, text in rendered.items():
        agent = {
            (s.name, frozenset(s.labels.items())): s.value
            for fam in parse_om(text)
            for s in fam.samples
        }
        gpu = _gpu_samples(agent, name)
        assert len(gpu) > 100 and _gpu_samples(everything, name) == gpu
        kept_names = {n for n, _ in _gpu_samples(kept, name)}
        assert _gpu_samples(kept, name) == {k: v for k, v in gpu.items() if k[0] in kept_names}
    # Whether the agent lists processes on GPUs the kubelet attributes is the collector's
    # policy (the history keeps what it serves, as compared above).
    assert kept_names - {"gpuslo_gpu_process_info"} == {
        "gpuslo_gpu_up",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "gpuslo_gpu_throttle_seconds_total",
        "gpuslo_gpu_nvlink_crc_flit_errors_total",
        "gpuslo_gpu_pod_info",
    }
    # The kubelet's answer comes from the fleet's placement: each MIG instance's replica pod.
    mig_pods = {
        (d["GPU_I_ID"], d["pod"])
        for (n, labels), _ in kept.items()
        if n == "gpuslo_gpu_pod_info" and (d := dict(labels)).get("GPU_I_ID")
    }
    assert mig_pods == {("1", "phi-3-mig-0"), ("2", "phi-3-mig-1"), ("1", "phi-3-mig-2"),
                        ("2", "phi-3-mig-3")}  # fmt: skip


def test_offline_fabric_series_come_from_the_agents_infiniband_collector(tmp_path):
    scenario = load_scenario(SCENARIOS / "fabric-degradation.yaml")  # 15 s steps
    start = 1_795_000_000
    run_offline(scenario, tmp_path, start)
    port = frozenset({"device": "mlx5_2", "port": "1", "Hostname": "gpu-node-01"}.items())
    state, recoveries, sent = (
        f"node_infiniband_{s}"
        for s in ("state_id", "link_error_recovery_total", "port_data_transmitted_bytes_total")
    )
    history = tmp_path / "history.om"
    before = _history_at(history, start + 30 * 60 - 15)
    down = _history_at(history, start + 30 * 60)  # the flap: down half of each minute
    up = _history_at(history, start + 30 * 60 + 30)
    assert before[(state, port)] == 4 and before[(recoveries, port)] == 0
    assert down[(state, port)] == 1 and up[(state, port)] == 4
    assert up[(recoveries, port)] == 3  # one a step while the link flaps
    # sysfs counts data in 4-byte words; the collector reports bytes: 5 GB/s while up
    assert before[(sent, port)] == (30 * 60 - 15) * 5e9 == down[(sent, port)]
    other = frozenset({"device": "mlx5_2", "port": "1", "Hostname": "gpu-node-00"}.items())
    assert down[(state, other)] == 4
    # The CRC storm on gpu-node-02 GPU 5 (from 70m, 40 errors/s on link 0), through the sim
    # backend's NVLink counters: at 80m, 41 steps of 15 s
    storm = _history_at(history, start + 80 * 60)
    crc = {
        dict(labels)["link"]: v
        for (n, labels), v in storm.items()
        if n == "gpuslo_gpu_nvlink_crc_flit_errors_total"
        and ("Hostname", "gpu-node-02") in labels
        and ("gpu", "5") in labels
    }
    assert len(crc) == 18 and crc["0"] == 40 * 41 * 15 and sum(crc.values()) == crc["0"]
