"""InfiniBand/RoCE collector over ``/sys/class/infiniband`` (sysfs root configurable).

Names and units follow node_exporter's ``node_infiniband_*`` (data counters are 4-byte words
per lane in sysfs, reported as bytes); we add the port's link layer and the driver's
``hw_counters`` (RoCE congestion and retransmits).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import Metric

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family

from .errors import CollectorUnavailable

log = logging.getLogger(__name__)

_NOT_AVAILABLE = "N/A"  # e.g. "N/A (no PMA)": the counter does not exist on this port


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _parse_state(text: str) -> tuple[int, str]:
    """ "4: ACTIVE" -> (4, "ACTIVE")."""
    ident, _, name = text.partition(":")
    return int(ident.strip()), name.strip()


def _parse_rate(text: str) -> float:
    """ "100 Gb/sec (4X EDR)" -> bytes per second."""
    return float(text.split()[0]) * 125_000_000


class InfinibandCollector:
    """Reads every InfiniBand/RoCE device and port under the sysfs root on each sample."""

    name = c.COLLECTOR_INFINIBAND

    def __init__(self, sysfs: str | Path = "/sys") -> None:
        self.root = os.path.join(str(sysfs), "class", "infiniband")
        self._warned: set[str] = set()

    def _warn_once(self, path: str, problem: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("infiniband: %s: %s", path, problem)

    def _counter(self, path: str) -> int | None:
        text = _read(path)
        if text is None or text.startswith(_NOT_AVAILABLE):
            return None
        try:
            return int(text)
        except ValueError:
            self._warn_once(path, f"not a counter: {text[:40]!r}")
            return None

    def collect(self) -> Iterable[Metric]:
        """Families for every device and port; ``CollectorUnavailable`` without InfiniBand."""
        try:
            devices = sorted(os.listdir(self.root))
        except FileNotFoundError as err:
            raise CollectorUnavailable(
                f"no InfiniBand devices ({self.root} absent)", level=logging.DEBUG
            ) from err
        info, port_info = family(c.IB_INFO), family(c.IB_PORT_INFO)
        state, phys, rate = family(c.IB_STATE_ID), family(c.IB_PHYSICAL_STATE_ID), family(c.IB_RATE)
        counters = {
            suffix: family(c.MetricSpec(c.IB_PREFIX + suffix, "counter", _help(suffix)))
            for suffix, _ in (*c.IB_PORT_COUNTERS.values(), *c.IB_PORT_COUNTERS_EXT.values())
        }
        hw = family(c.IB_HW_COUNTER)
        for device in devices:
            dev_path = os.path.join(self.root, device)
            add(
                info,
                {
                    c.LABEL_BOARD_ID: _read(os.path.join(dev_path, "board_id")) or "",
                    c.LABEL_IB_DEVICE: device,
                    c.LABEL_FIRMWARE_VERSION: _read(os.path.join(dev_path, "fw_ver")) or "",
                    c.LABEL_HCA_TYPE: _read(os.path.join(dev_path, "hca_type")) or "",
                },
                1.0,
            )
            ports_path = os.path.join(dev_path, "ports")
            try:
                ports = sorted(os.listdir(ports_path), key=lambda p: (len(p), p))
            except OSError as err:
                self._warn_once(ports_path, str(err))
                continue
            for port in ports:
                self._port(
                    device,
                    port,
                    os.path.join(ports_path, port),
                    port_info,
                    state,
                    phys,
                    rate,
                    counters,
                    hw,
                )
        return [info, state, phys, rate, port_info, *counters.values(), hw]

    def _port(
        self,
        device: str,
        port: str,
        path: str,
        port_info: Metric,
        state: Metric,
        phys: Metric,
        rate: Metric,
        counters: dict[str, Metric],
        hw: Metric,
    ) -> None:
        labels = {c.LABEL_IB_DEVICE: device, c.LABEL_IB_PORT: port}
        state_name = phys_name = ""
        for fam, fname in ((state, "state"), (phys, "phys_state")):
            text = _read(os.path.join(path, fname))
            if text is None:
                continue
            try:
                ident, name = _parse_state(text)
            except ValueError:
                self._warn_once(os.path.join(path, fname), f"unparsable state {text[:40]!r}")
                continue
            add(fam, labels, ident)
            if fname == "state":
                state_name = name
            else:
                phys_name = name
        rate_text = _read(os.path.join(path, "rate"))
        if rate_text:
            try:
                add(rate, labels, _parse_rate(rate_text))
            except (ValueError, IndexError):
                self._warn_once(os.path.join(path, "rate"), f"unparsable rate {rate_text!r}")
        add(
            port_info,
            {
                **labels,
                c.LABEL_LINK_LAYER: _read(os.path.join(path, "link_layer")) or "",
                c.LABEL_STATE: state_name,
                c.LABEL_PHYS_STATE: phys_name,
            },
            1.0,
        )
        for subdir, table in (
            ("counters", c.IB_PORT_COUNTERS),
            ("counters_ext", c.IB_PORT_COUNTERS_EXT),
        ):
            base = os.path.join(path, subdir)
            for fname, (suffix, scale) in table.items():
                value = self._counter(os.path.join(base, fname))
                if value is not None:
                    add(counters[suffix], labels, value * scale)
        hw_path = os.path.join(path, "hw_counters")
        try:
            hw_files = sorted(os.listdir(hw_path))
        except OSError:
            return  # hw_counters only exist on some drivers (mlx5, irdma)
        for fname in hw_files:
            value = self._counter(os.path.join(hw_path, fname))
            if value is not None:
                add(hw, {**labels, c.LABEL_EVENT: fname}, value)


def _help(suffix: str) -> str:
    words = suffix.removesuffix("_total").replace("_", " ")
    return f"InfiniBand port counter: {words}."
