import json

import pytest

from gpuslo.collectors import Agent, GpuCollector, PodRef, is_blank
from gpuslo.collectors.backends import FixtureBackend, SimBackend, write_recording
from gpuslo.collectors.backends.base import GpuIdentity, GpuSample
from gpuslo.foundation import conventions as c


def scrape(collector, clock=None):
    agent = Agent([collector], clock=clock) if clock else Agent([collector])
    agent.sample_all()
    return agent.render()


def values(text, name):
    """{labels-string: value} for every sample of one metric name."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, val = line.rpartition(" ")
            out[head[len(name) :]] = float(val)
    return out


def sim(clock, **kw):
    return SimBackend(node="node-a", clock=clock, **kw)


def test_sim_node_exposition_matches_golden(clock, golden):
    backend = sim(clock, count=2, mig=[[], ["3g.40gb", "1g.10gb"]])
    backend.set_load(0, 0.9, memory_used_mib=60000)
    col = GpuCollector(backend, hostname="node-a")
    Agent([col], clock=clock).sample(col)
    clock.advance(5)
    agent = Agent([col], clock=clock)
    agent.sample_all()
    clock.advance(0.5)
    golden("gpu_sim.prom", agent.render())


def test_xid_errors_are_counted_per_code_not_reported_as_last_value(clock):
    backend = sim(clock, count=2)
    col = GpuCollector(backend, hostname="h")
    backend.inject_xid(1, 48)
    backend.inject_xid(1, 48)
    backend.inject_xid(1, 94)
    scrape(col)
    backend.inject_xid(1, 48)
    text = scrape(col)
    xids = values(text, c.GPU_XID_ERRORS.name)
    by_code = {k.split('xid="')[1].split('"')[0]: v for k, v in xids.items()}
    assert by_code == {"48": 3.0, "94": 1.0}
    assert all('gpu="1"' in k for k in xids)
    last = values(text, c.DCGM_XID_ERRORS.name)
    assert sorted(last.values()) == [0.0, 48.0]


def test_gpu_off_the_bus_reports_up_zero_and_the_others_keep_reporting(clock):
    backend = sim(clock, count=3)
    col = GpuCollector(backend, hostname="h")
    backend.inject_xid(1, 79)
    text = scrape(col)
    up = {k.split('gpu="')[1].split('"')[0]: v for k, v in values(text, c.GPU_UP.name).items()}
    assert up == {"0": 1.0, "1": 0.0, "2": 1.0}
    util = values(text, c.DCGM_GPU_UTIL.name)
    assert len(util) == 2 and not any('gpu="1"' in k for k in util)
    assert any('gpu="1"' in k and 'xid="79"' in k for k in values(text, c.GPU_XID_ERRORS.name))


def test_thermal_throttle_time_accumulates_in_seconds_per_reason(clock):
    backend = sim(clock, count=1)
    col = GpuCollector(backend, hostname="h")
    scrape(col)
    backend.set_thermal_throttle(0, True)
    clock.advance(10)
    text = scrape(col, clock)
    thr = {
        k.split('reason="')[1].split('"')[0]: v
        for k, v in values(text, c.GPU_THROTTLE_SECONDS.name).items()
    }
    assert thr["thermal"] == pytest.approx(10.0)
    assert thr["power"] == 0.0
    clocks = values(text, c.DCGM_SM_CLOCK.name)
    assert list(clocks.values()) == [round(1980 * 0.6)]


def test_mig_instances_carry_gpu_instance_id_and_profile(clock):
    backend = sim(clock, count=1, mig=[["3g.40gb", "1g.10gb"]])
    text = scrape(GpuCollector(backend, hostname="h"))
    used = values(text, c.DCGM_FB_USED.name)
    mig = [k for k in used if "GPU_I_ID" in k]
    assert len(mig) == 2
    assert any('GPU_I_ID="1"' in k and 'GPU_I_PROFILE="3g.40gb"' in k for k in mig)
    assert any('GPU_I_ID="2"' in k and 'GPU_I_PROFILE="1g.10gb"' in k for k in mig)


# A dcgm-exporter /metrics excerpt in its documented format (gpuslo's own: labels gpu, UUID,
# pci_bus_id, device, modelName, Hostname; values invented). A field the GPU cannot report comes
# out as DCGM's int64 sentinel, DCGM_INT64_NOT_SUPPORTED = DCGM_INT64_BLANK + 2 (dcgm_structs.h).
DCGM_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
DCGM_SAMPLE = f"""\
# HELP DCGM_FI_DEV_GPU_TEMP GPU die temperature, degrees C (sample text).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-1c2d3e4f-0000-4a5b-8c9d-0e1f2a3b4c5d",pci_bus_id="00000000:19:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-7"}} 41
# HELP DCGM_FI_DEV_MEMORY_TEMP HBM temperature, degrees C (sample text).
# TYPE DCGM_FI_DEV_MEMORY_TEMP gauge
DCGM_FI_DEV_MEMORY_TEMP{{gpu="0",UUID="GPU-1c2d3e4f-0000-4a5b-8c9d-0e1f2a3b4c5d",pci_bus_id="00000000:19:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-7"}} {DCGM_INT64_BLANK + 2}
"""  # noqa: E501


def test_dcgm_blank_sentinels_and_nan_are_never_exported(tmp_path):
    # The value dcgm-exporter prints for a memory temperature the GPU does not report.
    printed = DCGM_SAMPLE.split("DCGM_FI_DEV_MEMORY_TEMP{")[1].split("} ")[1].split()[0]
    assert printed == "9223372036854775794"
    blank = float(printed)
    assert is_blank(blank)
    ident = GpuIdentity(0, "GPU-1", "NVIDIA H100", "00000000:01:00.0", 0)
    frame = [
        GpuSample(
            ident,
            fields={
                c.DCGM_MEMORY_TEMP.name: blank,
                c.DCGM_GPU_TEMP.name: 55.0,
                c.DCGM_POWER_USAGE.name: float("nan"),
                c.DCGM_SM_CLOCK.name: float(0x7FFFFFF0),
                c.DCGM_FB_USED.name: float(0xFFFFFFFF),
            },
        )
    ]
    rec = tmp_path / "rec.json"
    write_recording(rec, [frame], "570.1", [])
    text = scrape(GpuCollector(FixtureBackend(rec), hostname="h"))
    assert values(text, c.DCGM_GPU_TEMP.name) != {}
    for spec in (c.DCGM_MEMORY_TEMP, c.DCGM_POWER_USAGE, c.DCGM_SM_CLOCK, c.DCGM_FB_USED):
        assert values(text, spec.name) == {}, spec.name
    assert not is_blank(0.0) and not is_blank(-5.0) and not is_blank(81559.0)


class StaticHolders:
    def __init__(self, holders):
        self._holders = holders

    def holders(self):
        return self._holders


def test_single_owner_puts_pod_labels_on_gpu_series_and_shared_gpu_lists_holders(clock):
    backend = sim(clock, count=2, mig=[[], ["1g.10gb"]])
    uuid0 = backend.sample()[0].identity.uuid
    mig_uuid = backend.sample()[1].mig[0].uuid
    holders = {
        uuid0: [PodRef("llm", "chat-0", "vllm")],
        mig_uuid: [PodRef("batch", "embed-1", "tei"), PodRef("batch", "embed-2", "tei")],
    }
    col = GpuCollector(backend, hostname="h", attributor=StaticHolders(holders))
    text = scrape(col)
    util = values(text, c.DCGM_GPU_UTIL.name)
    gpu0 = next(k for k in util if 'gpu="0"' in k)
    assert 'pod="chat-0"' in gpu0 and 'namespace="llm"' in gpu0 and 'container="vllm"' in gpu0
    pods = values(text, c.GPU_POD_INFO.name.removesuffix("_info") + "_info")
    shared = [k for k in pods if 'GPU_I_ID="1"' in k]
    assert {k.split('pod="')[1].split('"')[0] for k in shared} == {"embed-1", "embed-2"}
    mig_used = next(k for k in values(text, c.DCGM_FB_USED.name) if "GPU_I_ID" in k)
    assert 'pod=""' in mig_used  # two holders: no single owner on the series itself


def test_without_kubelet_processes_are_attributed_through_their_cgroup(clock, tmp_path):
    uid = "0b6a3c34-1d2e-4f5a-9b8c-7d6e5f4a3b2c"
    cid = "a" * 64
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope\n"
    )
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text("0::/user.slice/session-3.scope\n")
    backend = sim(clock, count=1)
    backend.set_processes(0, [4242, 77, 99999])
    text = scrape(GpuCollector(backend, hostname="h", procfs=tmp_path))
    procs = values(text, "gpuslo_gpu_process_info")
    by_pid = {k.split('pid="')[1].split('"')[0]: k for k in procs}
    assert f'pod_uid="{uid}"' in by_pid["4242"] and f'container_id="{cid}"' in by_pid["4242"]
    assert 'pod_uid=""' in by_pid["77"] and 'pod_uid=""' in by_pid["99999"]


def _pod_process(procfs, pid, uid):
    (procfs / str(pid)).mkdir()
    (procfs / str(pid) / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-"
        f"{'b' * 64}.scope\n"
    )


def test_processes_are_listed_on_gpus_the_kubelet_attributes_too(clock, tmp_path):
    # A noisy neighbour's process on a served GPU is the strongest sign of sharing: it must
    # show even when the kubelet names the GPU's holder.
    serving = "11111111-2222-3333-4444-555555555555"
    foreign = "99999999-8888-7777-6666-555555555555"
    _pod_process(tmp_path, 100, serving)
    _pod_process(tmp_path, 31337, foreign)
    backend = sim(clock, count=2)
    uuid0 = backend.sample()[0].identity.uuid
    backend.set_processes(0, [100, 31337])
    holders = {uuid0: [PodRef("llm", "chat-0", "vllm")]}
    text = scrape(GpuCollector(backend, "h", StaticHolders(holders), procfs=tmp_path))
    procs = values(text, c.GPU_PROCESS_INFO.name)
    uids = {k.split('pod_uid="')[1].split('"')[0] for k in procs}
    assert uids == {serving, foreign}
    assert all('gpu="0"' in k and 'pod="chat-0"' in k for k in procs)
    dropped = values(text, c.GPU_PROCESSES_DROPPED.name)
    assert sorted(dropped.values()) == [0.0, 0.0]  # every GPU has the counter, none dropped


def test_processes_per_gpu_are_capped_one_per_pod_first_and_the_rest_counted(clock, tmp_path):
    busy, other = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
    workers = list(range(200, 210))  # ten workers of one pod, listed before the other pod's
    for pid in workers:
        _pod_process(tmp_path, pid, busy)
    _pod_process(tmp_path, 500, other)
    backend = sim(clock, count=1)
    backend.set_processes(0, [*workers, 500])
    collector = GpuCollector(backend, "h", procfs=tmp_path, max_processes=4)
    agent = Agent([collector], clock=clock)
    agent.sample_all()
    procs = values(agent.render(), c.GPU_PROCESS_INFO.name)
    pids = [k.split('pid="')[1].split('"')[0] for k in procs]
    assert len(pids) == 4 and "500" in pids  # the other pod is not crowded out
    assert any(f'pod_uid="{other}"' in k for k in procs)
    agent.sample_all()  # the counter sums what each sample left out: 7 + 7
    dropped = values(agent.render(), c.GPU_PROCESSES_DROPPED.name)
    assert list(dropped.values()) == [14.0]


def test_recording_round_trips_through_the_fixture_backend(clock, tmp_path):
    backend = sim(clock, count=2, mig=[["1g.10gb"]])
    frames = [backend.sample()]
    backend.inject_xid(0, 13)
    rec = tmp_path / "node.json"
    write_recording(rec, frames, "sim-1.0", backend.drain_xid_events())
    data = json.loads(rec.read_text())
    assert data["format"] == 1 and len(data["frames"][0]) == 2
    replay = FixtureBackend(rec)
    assert replay.open().driver_version == "sim-1.0"
    assert replay.sample() == frames[0]
    assert [e.xid for e in replay.drain_xid_events()] == [13]


def test_fixture_backend_rejects_a_file_that_is_not_a_recording(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": 99}')
    col = GpuCollector(FixtureBackend(bad), hostname="h")
    agent = Agent([col])
    snap = agent.sample(col)
    assert not snap.success and "not a GPU recording" in (snap.error or "")


def test_sim_backend_refuses_unknown_profiles():
    with pytest.raises(ValueError, match="unknown GPU profile"):
        SimBackend(profile="Z9000")


class ExplodingBackend(SimBackend):
    def open(self):
        raise KeyError("bug in open")


def test_a_bug_while_opening_the_backend_is_a_broken_collector_not_absent_hardware(caplog):
    col = GpuCollector(ExplodingBackend(count=1), hostname="h")
    snap = Agent([col]).sample(col)
    assert not snap.success and snap.error == "KeyError: 'bug in open'"
    assert "Traceback" in caplog.text


# --------------------------------------------------------------------------- naming generations
CURRENT = c.gpu_naming("current")
LEGACY = c.gpu_naming("legacy")
# One GPU's sample in the backends' legacy units (NVML's and dcgm-exporter <= 4.8: MHz, mJ, %,
# MiB), values chosen so every unit change shows.
RECORDED = {
    c.DCGM_SM_CLOCK.name: 1410.0,
    c.DCGM_MEM_CLOCK.name: 2619.0,
    c.DCGM_MEMORY_TEMP.name: 47.0,
    c.DCGM_GPU_TEMP.name: 41.0,
    c.DCGM_POWER_USAGE.name: 312.5,
    c.DCGM_TOTAL_ENERGY.name: 987_654_321.0,
    c.DCGM_PCIE_TX_THROUGHPUT.name: 600.0,
    c.DCGM_PCIE_RX_THROUGHPUT.name: 900.0,
    c.DCGM_PCIE_REPLAY.name: 2.0,
    c.DCGM_GPU_UTIL.name: 87.0,
    c.DCGM_MEM_COPY_UTIL.name: 35.0,
    c.DCGM_ENC_UTIL.name: 3.0,
    c.DCGM_DEC_UTIL.name: 9.0,
    c.DCGM_FB_FREE.name: 60549.0,
    c.DCGM_FB_USED.name: 20480.0,
    c.DCGM_FB_RESERVED.name: 530.0,
    c.DCGM_ECC_SBE_VOL.name: 3.0,
    c.DCGM_ECC_DBE_VOL.name: 0.0,
    c.DCGM_ECC_SBE_AGG.name: 5.0,
    c.DCGM_ECC_DBE_AGG.name: 1.0,
    c.DCGM_UNCORRECTABLE_REMAPPED_ROWS.name: 1.0,
    c.DCGM_CORRECTABLE_REMAPPED_ROWS.name: 4.0,
    c.DCGM_ROW_REMAP_FAILURE.name: 0.0,
    c.DCGM_ROW_REMAP_PENDING.name: 1.0,
    c.DCGM_PROF_GR_ENGINE_ACTIVE.name: 0.8,
    c.DCGM_PROF_SM_ACTIVE.name: 0.72,
    c.DCGM_PROF_SM_OCCUPANCY.name: 0.4,
    c.DCGM_PROF_PIPE_TENSOR_ACTIVE.name: 0.425,
    c.DCGM_PROF_DRAM_ACTIVE.name: 0.55,
}
MIG_RECORDED = {c.DCGM_FB_USED.name: 9728.0, c.DCGM_FB_FREE.name: 30208.0}


def recorded_node(tmp_path):
    """A fixture recording of one GPU (with one MIG instance) holding RECORDED."""
    from gpuslo.collectors.backends.base import MigSample

    ident = GpuIdentity(0, "GPU-1c2d3e4f", "NVIDIA H100 80GB HBM3", "00000000:19:00.0", 0)
    mig = MigSample(1, 0, "3g.40gb", "MIG-5e6f", fields=dict(MIG_RECORDED))
    rec = tmp_path / "node.json"
    write_recording(rec, [[GpuSample(ident, fields=dict(RECORDED), mig=[mig])]], "570.1", [])
    return rec


def scrape_as(rec, naming):
    return scrape(GpuCollector(FixtureBackend(rec), hostname="gpu-node-7", naming=naming))


def test_current_names_export_every_field_under_its_dcgm4_name_in_base_units(tmp_path):
    rec = recorded_node(tmp_path)
    legacy, current = scrape_as(rec, LEGACY), scrape_as(rec, CURRENT)
    for spec in c.GPU_FIELDS:
        new = CURRENT.name(spec)
        assert new == c.DCGM_CURRENT_NAMES[spec.name].name
        got = {k: v for k, v in values(current, new).items() if "GPU_I_ID" not in k}
        assert list(got.values()) == [
            pytest.approx(RECORDED[spec.name] * CURRENT.factor(spec), rel=1e-12)
        ], spec.name
        assert f"# TYPE {new} {spec.type}\n" in current
        if new != spec.name:  # a renamed field is served under its new name only
            assert values(current, spec.name) == {}, spec.name
        old = {k: v for k, v in values(legacy, spec.name).items() if "GPU_I_ID" not in k}
        assert list(old.values()) == [RECORDED[spec.name]]
    # the unit changes dcgm-exporter 4.9.0 lists, on the values themselves
    assert list(values(current, "DCGM_FI_DEV_SM_CLOCK_HERTZ").values()) == [1.41e9]
    assert list(values(current, "DCGM_FI_DEV_MEMORY_CLOCK_HERTZ").values()) == [2.619e9]
    assert list(values(current, "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL").values()) == [987654.321]
    assert list(values(current, "DCGM_FI_DEV_GPU_UTIL_RATIO").values()) == [0.87]
    whole = {k: v for k, v in values(current, "DCGM_FI_DEV_FB_USED_BYTES").items()}
    assert sorted(whole.values()) == [9728 * 2**20, 20480 * 2**20]
    assert "# HELP DCGM_FI_DEV_SM_CLOCK_HERTZ SM clock frequency (in Hz).\n" in current
    assert "(in MHz)" not in current and "(in mJ)" not in current and "(in MiB)" not in current
    assert "(in %)" not in current
    # the XID gauge too, and the host label of dcgm-exporter 4.8.3 and later on every series
    assert values(current, "DCGM_FI_DEV_XID_ERROR") and not values(
        current, "DCGM_FI_DEV_XID_ERRORS"
    )
    samples = [line for line in current.splitlines() if line and not line.startswith("#")]
    gpu_samples = [s for s in samples if s.startswith(("DCGM_", "gpuslo_gpu_"))]
    assert gpu_samples and all('hostname="gpu-node-7"' in s for s in gpu_samples)
    assert "Hostname=" not in current and 'Hostname="gpu-node-7"' in legacy


def test_mig_instances_carry_current_names_and_bytes(tmp_path):
    current = scrape_as(recorded_node(tmp_path), CURRENT)
    for spec in c.MIG_FIELDS:
        mig = {k: v for k, v in values(current, CURRENT.name(spec)).items() if "GPU_I_ID" in k}
        assert len(mig) == 1, spec.name
        ((labels, value),) = mig.items()
        assert 'GPU_I_ID="1"' in labels and 'GPU_I_PROFILE="3g.40gb"' in labels
        assert 'hostname="gpu-node-7"' in labels
        assert value == MIG_RECORDED[spec.name] * 2**20


def test_gpuslo_own_series_keep_their_names_and_units_in_both_generations(tmp_path):
    rec = recorded_node(tmp_path)
    legacy, current = scrape_as(rec, LEGACY), scrape_as(rec, CURRENT)
    for spec in (c.GPU_UP, c.GPU_ENERGY_JOULES):
        old = sorted(values(legacy, spec.name).values())
        assert old and old == sorted(values(current, spec.name).values())
    assert list(values(current, c.GPU_ENERGY_JOULES.name).values()) == [987654.321]


def test_sim_node_exposition_in_current_names_matches_golden(clock, golden):
    backend = sim(clock, count=2, mig=[[], ["3g.40gb", "1g.10gb"]])
    backend.set_load(0, 0.9, memory_used_mib=60000)
    col = GpuCollector(backend, hostname="node-a", naming=CURRENT)
    Agent([col], clock=clock).sample(col)
    clock.advance(5)
    agent = Agent([col], clock=clock)
    agent.sample_all()
    clock.advance(0.5)
    golden("gpu_sim_current.prom", agent.render())


def test_agent_serves_current_names_with_the_flag_and_legacy_by_default(tmp_path):
    from tests.conftest import run_gpuslo

    rec = recorded_node(tmp_path)
    common = ("agent", "--once", "--gpu-backend", "fixture", "--gpu-fixture", str(rec))
    common += ("--no-collector.infiniband", "--hostname", "gpu-node-7")
    common += ("--pod-resources-socket", "/nonexistent/kubelet.sock")
    default = run_gpuslo(*common)
    assert default.returncode == 0, default.stderr
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0"' in default.stdout and "Hostname=" in default.stdout
    current = run_gpuslo(*common, "--dcgm-names", "current")
    assert current.returncode == 0, current.stderr
    assert values(current.stdout, "DCGM_FI_DEV_GPU_UTIL_RATIO")
    assert "DCGM_FI_DEV_GPU_UTIL{" not in current.stdout and "Hostname=" not in current.stdout
    bad = run_gpuslo(*common, "--dcgm-names", "dcgm4")
    assert bad.returncode == 2 and "--dcgm-names" in bad.stderr and "Traceback" not in bad.stderr
