"""The ``fixture`` backend: replays GPU samples recorded from a real node (``--record-gpu``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import (
    BackendUnavailable,
    DriverInfo,
    GpuSample,
    XidEvent,
    sample_from_dict,
    sample_to_dict,
)

FORMAT_VERSION = 1


class FixtureBackend:
    """Serves a recording's samples in order, repeating the last one once they run out."""

    name = "fixture"

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._frames: list[list[GpuSample]] = []
        self._xids: list[XidEvent] = []
        self._next = 0
        self._driver = ""

    def open(self) -> DriverInfo:
        """Load the recording; ``BackendUnavailable`` if it is missing or not a recording."""
        try:
            data = json.loads(self._path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT_VERSION}")
            self._frames = [[sample_from_dict(s) for s in frame] for frame in data["frames"]]
            self._xids = [XidEvent(**x) for x in data.get("xid_events", [])]
            self._driver = str(data.get("driver_version", ""))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BackendUnavailable(f"{self._path}: not a GPU recording: {err}") from err
        return DriverInfo(driver_version=self._driver)

    def sample(self) -> list[GpuSample]:
        """The next recorded frame."""
        if not self._frames:
            return []
        frame = self._frames[min(self._next, len(self._frames) - 1)]
        self._next += 1
        return frame

    def drain_xid_events(self) -> list[XidEvent]:
        """Recorded XID events, delivered once."""
        events, self._xids = self._xids, []
        return events

    def close(self) -> None:
        """Nothing to release."""


def write_recording(
    path: str | Path,
    frames: list[list[GpuSample]],
    driver_version: str,
    xid_events: list[XidEvent],
    meta: dict[str, Any] | None = None,
) -> None:
    """Write samples taken from a backend as a recording the fixture backend replays."""
    data = {
        "format": FORMAT_VERSION,
        "driver_version": driver_version,
        "meta": meta or {},
        "frames": [[sample_to_dict(s) for s in frame] for frame in frames],
        "xid_events": [{"uuid": x.uuid, "xid": x.xid} for x in xid_events],
    }
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
