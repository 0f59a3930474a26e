import logging
import shutil

import pytest

from gpuslo.collectors import Agent, CollectorUnavailable, InfinibandCollector
from tests.conftest import SYSFS


def render(sysfs):
    agent = Agent([InfinibandCollector(sysfs)])
    agent.sample_all()
    snap = agent.snapshot("infiniband")
    assert snap is not None
    return snap


def series(snap):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in snap.families for s in f.samples
    }


def key(name, device, port="1", **extra):
    return (name, tuple(sorted({"device": device, "port": port, **extra}.items())))


def test_fixture_tree_exposition_matches_golden(golden):
    golden("infiniband.prom", render(SYSFS).text(openmetrics=False))


def test_data_counters_are_reported_in_bytes_not_four_byte_words():
    s = series(render(SYSFS))
    assert s[key("node_infiniband_port_data_received_bytes_total", "mlx5_0")] == 2_500_000_000 * 4
    assert s[key("node_infiniband_legacy_data_transmitted_bytes_total", "mthca0", "2")] == 36e9
    assert s[key("node_infiniband_rate_bytes_per_second", "mlx5_0")] == 400e9 / 8


def test_counters_without_a_pma_are_skipped_not_zero():
    s = series(render(SYSFS))
    assert key("node_infiniband_vl15_dropped_total", "mlx5_0") not in s
    assert s[key("node_infiniband_symbol_error_total", "mlx5_0")] == 7


def test_roce_port_reports_link_layer_and_congestion_counters():
    s = series(render(SYSFS))
    info = key(
        "gpuslo_infiniband_port_info",
        "mlx5_1",
        link_layer="Ethernet",
        state="ACTIVE",
        phys_state="LinkUp",
    )
    assert s[info] == 1
    hw = "gpuslo_infiniband_hw_events_total"
    assert s[key(hw, "mlx5_1", event="np_cnp_sent")] == 340
    assert s[key(hw, "mlx5_1", event="np_ecn_marked_roce_packets")] == 1250
    assert s[key(hw, "mlx5_0", event="out_of_buffer")] == 12


def test_a_down_port_reports_its_state_ids():
    s = series(render(SYSFS))
    assert s[key("node_infiniband_state_id", "mlx5_2")] == 1
    assert s[key("node_infiniband_physical_state_id", "mlx5_2")] == 3
    assert s[key("node_infiniband_link_downed_total", "mlx5_2")] == 5


def test_no_infiniband_on_the_node_is_no_data_logged_at_debug(tmp_path):
    col = InfinibandCollector(tmp_path)
    with pytest.raises(CollectorUnavailable) as err:
        col.collect()
    assert err.value.level == logging.DEBUG
    snap = render(tmp_path)
    assert not snap.success and snap.families == ()


def test_a_garbled_counter_is_skipped_with_one_warning_and_the_rest_is_served(tmp_path, caplog):
    root = tmp_path / "sys"
    shutil.copytree(SYSFS, root)
    bad = root / "class/infiniband/mlx5_0/ports/1/counters/port_rcv_packets"
    bad.write_text("garbage\n")
    (root / "class/infiniband/mlx5_1/board_id").unlink()
    col = InfinibandCollector(root)
    with caplog.at_level(logging.WARNING):
        Agent([col]).sample_all()
        snap = render(root)
    s = series(snap)
    assert snap.success
    assert key("node_infiniband_port_packets_received_total", "mlx5_0") not in s
    assert s[key("node_infiniband_port_packets_received_total", "mlx5_1")] == 10
    info = (
        "node_infiniband_info",
        tuple(
            sorted(
                {
                    "device": "mlx5_1",
                    "board_id": "",
                    "firmware_version": "28.39.1002",
                    "hca_type": "MT4129",
                }.items()
            )
        ),
    )
    assert s[info] == 1
    assert caplog.text.count("not a counter") == 2  # one per collector instance, not per sample
