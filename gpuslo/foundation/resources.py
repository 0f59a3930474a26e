"""Files shipped inside the gpuslo wheel (alert windows, scenarios, runbooks, examples), read
through ``importlib.resources`` so they are found wherever gpuslo is installed."""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _resource(package: str, parts: tuple[str, ...]) -> Traversable:
    resource = resources.files(package)
    for part in parts:  # one part at a time: namespace folders take one child (Python 3.11)
        resource = resource.joinpath(part)
    return resource


def data_path(package: str, name: str, *more: str) -> Path:
    """A shipped file as a real path: the installed file itself, or (for a zipped install) a
    copy extracted for the life of the process."""
    resource = _resource(package, (name, *more))
    if not resource.is_file():
        where = "/".join((name, *more))
        raise FileNotFoundError(f"{package}: no shipped file {where!r}; is gpuslo installed whole?")
    return Path(_extracted.enter_context(resources.as_file(resource)))


def data_names(package: str, *parts: str, suffix: str = "") -> list[str]:
    """The names of the shipped files in a package folder, sorted, optionally by suffix."""
    folder = _resource(package, parts)
    return sorted(e.name for e in folder.iterdir() if e.is_file() and e.name.endswith(suffix))
