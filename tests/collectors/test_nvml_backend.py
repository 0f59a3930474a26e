import logging
import time

import pynvml as real
import pytest

from gpuslo.collectors import Agent, GpuCollector, InfinibandCollector
from gpuslo.collectors.backends import BackendUnavailable, NvmlBackend
from gpuslo.foundation import conventions as c
from tests.conftest import SYSFS
from tests.fake_pynvml import MIB, FakeGpu, FakeMig, FakeNvml


def gpus(n=2, **kw):
    return [
        FakeGpu(
            uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
            minor=i,
            bus_id=f"00000000:{0x18 + i:02X}:00.0",
            **kw,
        )
        for i in range(n)
    ]


def open_backend(fake):
    backend = NvmlBackend(nvml=fake, event_timeout_ms=20)
    backend.open()
    return backend


def test_fields_are_read_with_dcgm_units():
    fake = FakeNvml(gpus(1))
    backend = open_backend(fake)
    try:
        s = backend.sample()[0]
    finally:
        backend.close()
    f = s.fields
    assert f[c.DCGM_POWER_USAGE.name] == pytest.approx(312.456)  # mW -> W
    assert f[c.DCGM_TOTAL_ENERGY.name] == 987_654_321  # mJ, as dcgm
    assert f[c.DCGM_FB_USED.name] == 20480  # bytes -> MiB
    assert f[c.DCGM_FB_RESERVED.name] == 530
    assert f[c.DCGM_FB_FREE.name] == 81559 - 530 - 20480
    assert f[c.DCGM_MEMORY_TEMP.name] == 45  # from nvmlDeviceGetFieldValues
    assert f[c.DCGM_ECC_SBE_VOL.name] == 3 and f[c.DCGM_ECC_DBE_AGG.name] == 1
    assert f[c.DCGM_CORRECTABLE_REMAPPED_ROWS.name] == 4
    assert f[c.DCGM_UNCORRECTABLE_REMAPPED_ROWS.name] == 1
    assert s.throttle_ns["power"] == 1_500_000_000 and s.throttle_ns["low_utilization"] == 9e9
    assert (s.pcie_tx_bytes, s.pcie_rx_bytes) == (10_000_000, 20_000_000)
    assert len(s.nvlinks) == 18 and all(link.up for link in s.nvlinks)


def test_profiling_ratios_come_from_two_gpm_samples_as_fractions():
    backend = open_backend(FakeNvml(gpus(1)))
    try:
        first = backend.sample()[0].fields
        second = backend.sample()[0].fields
    finally:
        backend.close()
    assert c.DCGM_PROF_GR_ENGINE_ACTIVE.name not in first  # needs a previous sample
    assert second[c.DCGM_PROF_GR_ENGINE_ACTIVE.name] == pytest.approx(0.80)
    assert second[c.DCGM_PROF_PIPE_TENSOR_ACTIVE.name] == pytest.approx(0.425)
    assert second[c.DCGM_PROF_DRAM_ACTIVE.name] == pytest.approx(0.55)


def test_unsupported_fields_are_left_out_not_reported_as_zero():
    g = gpus(
        1,
        unsupported={
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetPcieThroughput",
            "nvmlGpmQueryDeviceSupport",
            "nvmlDeviceGetRemappedRows",
        },
    )[0]
    g.field_overrides[real.NVML_FI_DEV_MEMORY_TEMP] = (real.NVML_ERROR_NOT_SUPPORTED, 0, 0)
    backend = open_backend(FakeNvml([g]))
    try:
        backend.sample()
        f = backend.sample()[0].fields
    finally:
        backend.close()
    for spec in (
        c.DCGM_ECC_SBE_VOL,
        c.DCGM_PCIE_TX_THROUGHPUT,
        c.DCGM_MEMORY_TEMP,
        c.DCGM_PROF_SM_ACTIVE,
        c.DCGM_CORRECTABLE_REMAPPED_ROWS,
    ):
        assert spec.name not in f
    assert f[c.DCGM_GPU_UTIL.name] == 87


def test_nvml_all_ones_placeholder_is_not_a_reading():
    g = gpus(1)[0]
    g.field_overrides[real.NVML_FI_DEV_MEMORY_TEMP] = (
        real.NVML_SUCCESS,
        real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
        0xFFFFFFFFFFFFFFFF,
    )
    g.values["temp"] = 0xFFFFFFFF
    backend = open_backend(FakeNvml([g]))
    try:
        f = backend.sample()[0].fields
    finally:
        backend.close()
    assert c.DCGM_MEMORY_TEMP.name not in f and c.DCGM_GPU_TEMP.name not in f


def test_nvlink_counters_are_per_link_and_in_bytes():
    g = gpus(1, links=4)[0]
    g.link_state[2] = real.NVML_FEATURE_DISABLED
    g.link_kib[(real.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 1)] = 1000
    g.link_kib[(real.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, 1)] = 3
    g.link_errors[(3, real.NVML_NVLINK_ERROR_DL_CRC_FLIT)] = 17
    g.link_errors[(3, real.NVML_NVLINK_ERROR_DL_REPLAY)] = 2
    backend = open_backend(FakeNvml([g]))
    try:
        links = {link.link: link for link in backend.sample()[0].nvlinks}
    finally:
        backend.close()
    assert sorted(links) == [0, 1, 2, 3]
    assert links[1].tx_bytes == 1000 * 1024 and links[1].rx_bytes == 3 * 1024
    assert links[0].tx_bytes is None  # field not reported: not zero
    assert not links[2].up and links[0].up
    assert links[3].crc_flit_errors == 17 and links[3].replay_errors == 2


def test_mig_instances_are_enumerated_with_dcgm_profile_names():
    g = gpus(1)[0]
    g.mig = [FakeMig(1, 0, 3, 40192, "MIG-aaa", 1000 * MIB), FakeMig(9, 0, 1, 9856, "MIG-bbb", 0)]
    backend = open_backend(FakeNvml([g]))
    try:
        mig = backend.sample()[0].mig
    finally:
        backend.close()
    assert [(m.gpu_instance_id, m.profile, m.uuid) for m in mig] == [
        (1, "3g.39gb", "MIG-aaa"),
        (9, "1g.10gb", "MIG-bbb"),
    ]
    assert mig[0].fields[c.DCGM_FB_USED.name] == 1000


def test_a_lost_gpu_is_reported_lost_and_the_others_keep_reporting():
    fake = FakeNvml(gpus(3))
    backend = open_backend(fake)
    try:
        fake._gpus[1].lost = True
        samples = backend.sample()
    finally:
        backend.close()
    assert [s.lost for s in samples] == [False, True, False]
    assert samples[1].fields == {} and "lost" in (samples[1].error or "")
    assert samples[2].fields[c.DCGM_GPU_UTIL.name] == 87


def test_a_gpu_lost_before_start_keeps_its_slot_as_down():
    g = gpus(2)
    g[0].lost = True
    backend = open_backend(FakeNvml(g))
    try:
        samples = backend.sample()
    finally:
        backend.close()
    assert samples[0].lost and not samples[1].lost


def test_xid_errors_arrive_as_nvml_events_and_are_counted():
    fake = FakeNvml(gpus(2))
    col = GpuCollector(NvmlBackend(nvml=fake, event_timeout_ms=20), hostname="h")
    agent = Agent([col])
    agent.sample_all()
    assert fake.registered == {0, 1}
    for xid in (31, 31, 79):
        fake.events.put((1, xid))
    deadline = time.monotonic() + 5
    while not fake.events.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    agent.sample_all()
    text = agent.render()
    agent.stop()
    lines = [ln for ln in text.splitlines() if ln.startswith(c.GPU_XID_ERRORS.name + "{")]
    counts = {ln.split('xid="')[1].split('"')[0]: ln.rsplit(" ", 1)[1] for ln in lines}
    assert counts == {"31": "2", "79": "1"}
    assert all('gpu="1"' in ln for ln in lines)


def test_without_a_driver_the_gpu_collector_fails_cleanly_and_fabric_keeps_serving(
    caplog, no_nvml_driver
):
    with pytest.raises(BackendUnavailable, match="NVML"):
        NvmlBackend().open()
    gpu = GpuCollector(NvmlBackend(), hostname="h")
    ib = InfinibandCollector(SYSFS)
    agent = Agent([gpu, ib])
    with caplog.at_level(logging.WARNING):
        agent.sample_all()
        agent.sample_all()
    text = agent.render()
    assert 'gpuslo_collector_success{collector="gpu"} 0' in text
    assert 'gpuslo_collector_success{collector="infiniband"} 1' in text
    assert "node_infiniband_state_id{" in text
    nvml_lines = [r for r in caplog.records if "NVML" in r.getMessage()]
    assert len(nvml_lines) == 1 and r"Traceback" not in caplog.text


def test_missing_library_in_the_fake_is_the_same_failure():
    with pytest.raises(BackendUnavailable, match="Library Not Found"):
        NvmlBackend(nvml=FakeNvml(gpus(1), library_missing=True)).open()
