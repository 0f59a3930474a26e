"""Write ``/sys/class/infiniband`` trees the agent's fabric collector reads, for the twin and
for benchmarks: the same files, formats and 4-byte-word data counters a real HCA exposes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Port counter files of an mlx5 HCA (kernel >= 4.5, so no counters_ext/).
MLX5_COUNTERS = (
    "excessive_buffer_overrun_errors", "link_downed", "link_error_recovery",
    "local_link_integrity_errors", "multicast_rcv_packets", "multicast_xmit_packets",
    "port_rcv_constraint_errors", "port_rcv_data", "port_rcv_discards", "port_rcv_errors",
    "port_rcv_packets", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
    "port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards", "port_xmit_packets",
    "port_xmit_wait", "symbol_error", "unicast_rcv_packets", "unicast_xmit_packets",
    "VL15_dropped",
)  # fmt: skip
MLX5_HW_COUNTERS = (
    "duplicate_request", "implied_nak_seq_err", "local_ack_timeout_err", "np_cnp_sent",
    "np_ecn_marked_roce_packets", "out_of_buffer", "out_of_sequence", "packet_seq_err",
    "rnr_nak_retry_err", "roce_adp_retrans", "roce_adp_retrans_to", "roce_slow_restart",
    "rp_cnp_handled", "rp_cnp_ignored",
)  # fmt: skip
_STATES = {"ACTIVE": (4, 5, "LinkUp"), "DOWN": (1, 3, "Disabled"), "INIT": (2, 2, "Polling")}


@dataclass
class IbPort:
    """One HCA port as sysfs shows it."""

    device: str
    port: int = 1
    link_layer: str = "InfiniBand"  # "Ethernet" for RoCE
    state: str = "ACTIVE"
    rate_gbps: int = 400
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MLX5_COUNTERS, 0))
    hw_counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MLX5_HW_COUNTERS, 0))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def write_infiniband_tree(sysfs_root: str | Path, ports: Iterable[IbPort]) -> Path:
    """Create or update ``<root>/class/infiniband`` for these ports; returns the class dir."""
    base = Path(sysfs_root) / "class" / "infiniband"
    for p in ports:
        dev = base / p.device
        _write(dev / "fw_ver", "28.39.1002")
        _write(dev / "board_id", "MT_0000000838")
        _write(dev / "hca_type", "MT4129")
        port = dev / "ports" / str(p.port)
        state_id, phys_id, phys_name = _STATES[p.state]
        _write(port / "state", f"{state_id}: {p.state}")
        _write(port / "phys_state", f"{phys_id}: {phys_name}")
        _write(port / "rate", f"{p.rate_gbps} Gb/sec (4X NDR)")
        _write(port / "link_layer", p.link_layer)
        write_counters(port / "counters", p.counters)
        write_counters(port / "hw_counters", p.hw_counters)
    return base


def write_counters(directory: Path, values: Mapping[str, int]) -> None:
    """Write one file per counter, as the driver does."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (directory / name).write_text(f"{value}\n")
