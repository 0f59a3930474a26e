"""YAML with positions: load documents and find the line/column of any field path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError, SpecProblem

M = TypeVar("M", bound=BaseModel)


def load_documents(path: str | Path) -> list[tuple[Any, yaml.Node]]:
    """Every document in the file as (plain data, node tree); YAML errors become SpecError."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SpecError([SpecProblem(name, 1, 1, "file", err.strerror or str(err))]) from err
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if n is not None]
        data = [yaml.safe_load(yaml.serialize(n)) for n in nodes]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([SpecProblem(name, line, col, "yaml", problem)]) from err
    if not nodes:
        raise SpecError([SpecProblem(name, 1, 1, "file", "no YAML documents")])
    return list(zip(data, nodes, strict=True))


def load_single(path: str | Path, model: type[M], what: str) -> tuple[M, yaml.Node]:
    """The one document of a file, validated by a pydantic ``model``; SpecError otherwise."""
    name = str(path)
    docs = load_documents(path)
    if len(docs) != 1:
        raise SpecError([SpecProblem(name, 1, 1, "file", f"one {what} document per file")])
    data, node = docs[0]
    try:
        return model.model_validate(data), node
    except ValidationError as err:
        raise SpecError(validation_problems(name, node, err)) from err


def problem_at(
    path: str | Path, node: yaml.Node, loc: Sequence[str | int], message: str
) -> SpecProblem:
    """A problem at a field path, with that field's line and column."""
    line, col = locate(node, loc)
    return SpecProblem(str(path), line, col, field_path(loc), message)


def locate(node: yaml.Node, loc: Sequence[str | int], key: bool = False) -> tuple[int, int]:
    """1-based line and column of the value at ``loc`` (or of its key when ``key``), or of the
    deepest ancestor that exists."""
    current = node
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                if k.value == part:
                    current = k if (last and key) else v
                    break
            else:
                break
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(current.value):
                current = current.value[part]
            else:
                break
        else:
            break
    mark = current.start_mark
    return mark.line + 1, mark.column + 1


def validation_problems(
    path: str, node: yaml.Node, err: Any, prefix: Sequence[str | int] = ()
) -> list[SpecProblem]:
    """A pydantic ValidationError as located problems; an unknown field points at its key."""
    out = []
    for e in err.errors():
        loc = (*prefix, *(p for p in e["loc"] if isinstance(p, (str, int))))
        line, col = locate(node, loc, key=e["type"] == "extra_forbidden")
        message = e["msg"].removeprefix("Value error, ")
        out.append(SpecProblem(path, line, col, field_path(loc), message))
    return out


def field_path(loc: Sequence[str | int]) -> str:
    """``("slos", 0, "objective")`` -> ``slos[0].objective``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"
