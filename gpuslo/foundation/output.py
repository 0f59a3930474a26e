"""Where commands write: output directories checked up front and writes that fail as one
typed error (``OutputError``), which the CLI prints in one line."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError


def prepare_output_dir(path: str | Path) -> Path:
    """The directory ``path``, created with its parents when missing; OutputError when a file
    is in the way, it cannot be created or it is not writable."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "not a directory (a file is in the way)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way"
        raise OutputError(out, f"cannot create the output directory: {reason}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(out, "output directory is not writable")
    return out


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``; OutputError in one line when that fails."""
    target = Path(path)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(target, f"cannot write: {err.strerror or err}") from None
    return target
