"""Write ``/sys/class/infiniband`` trees the agent's fabric collector reads, for the twin and
for benchmarks: the same files, formats and 4-byte-word data counters a real HCA exposes."""

from __future__ import annotations

import os
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


def write_infiniband_tree(sysfs_root: str | Path, ports: Iterable[IbPort]) -> Path:
    """Create or update ``<root>/class/infiniband`` for these ports; returns the class dir."""
    return InfinibandTree(sysfs_root).write(ports)


class InfinibandTree:
    """A ``<root>/class/infiniband`` tree kept up to date with its ports: the first ``write``
    lays out every file, later ones rewrite only the files whose text changed (a digital twin
    updates its ports every step). With ``atomic``, each file is replaced by a rename, so a
    collector reading the tree meanwhile never sees half a file."""

    def __init__(self, sysfs_root: str | Path, atomic: bool = True) -> None:
        self.root = str(sysfs_root)
        self.base = os.path.join(self.root, "class", "infiniband")
        self._base = Path(self.base)
        self.atomic = atomic
        self._scratch = os.path.join(self.root, ".gpuslo-sysfs-write")
        self._written: dict[str, str] = {}  # path -> text it holds
        self._dirs: dict[tuple[str, int], tuple[str, str]] = {}  # port -> (device, port) dirs

    def write(self, ports: Iterable[IbPort]) -> Path:
        """Bring the tree in line with ``ports``; returns the class dir."""
        put = self._put
        for p in ports:
            dirs = self._dirs.get((p.device, p.port))
            if dirs is None:
                dev = os.path.join(self.base, p.device)
                dirs = self._dirs[(p.device, p.port)] = (dev, f"{dev}/ports/{p.port}")
            dev, port = dirs
            state_id, phys_id, phys_name = _STATES[p.state]
            put(f"{dev}/fw_ver", "28.39.1002")
            put(f"{dev}/board_id", "MT_0000000838")
            put(f"{dev}/hca_type", "MT4129")
            put(f"{port}/state", f"{state_id}: {p.state}")
            put(f"{port}/phys_state", f"{phys_id}: {phys_name}")
            put(f"{port}/rate", f"{p.rate_gbps} Gb/sec (4X NDR)")
            put(f"{port}/link_layer", p.link_layer)
            for name, value in p.counters.items():
                put(f"{port}/counters/{name}", str(value))
            for name, value in p.hw_counters.items():
                put(f"{port}/hw_counters/{name}", str(value))
        return self._base

    def _put(self, path: str, text: str) -> None:
        if self._written.get(path) == text:
            return
        if path not in self._written:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(self._scratch if self.atomic else path, "w") as fh:
            fh.write(text + "\n")
        if self.atomic:
            os.replace(self._scratch, path)
        self._written[path] = text


def write_counters(directory: Path, values: Mapping[str, int]) -> None:
    """Write one file per counter, as the driver does."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (directory / name).write_text(f"{value}\n")
