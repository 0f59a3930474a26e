"""Spec problems with their place in the file, and the exception that carries them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, order=True)
class SpecProblem:
    """One problem in a spec file, printed as ``file:line:col: field: message``."""

    path: str
    line: int
    col: int
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}:{self.col}: {prefix}{self.field}: {self.message}"


class SpecError(Exception):
    """A spec could not be used; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class OutputError(Exception):
    """An output path that cannot be written (a file where a directory goes, no permission);
    printed as ``path: message``."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
