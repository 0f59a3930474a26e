"""YAML with positions: load documents and find the line/column of any field path."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError, SpecProblem

M = TypeVar("M", bound=BaseModel)

MAX_SPEC_BYTES = 10 * 1024 * 1024
"""Spec files larger than this are refused unread (``GPUSLO_MAX_SPEC_BYTES`` overrides)."""
MAX_DEPTH = 100
"""Collections nested deeper than this are refused: no spec needs it, and building deeper
data would recurse without bound (libyaml itself stops flow nesting at 1000)."""
SIZE_ENV = "GPUSLO_MAX_SPEC_BYTES"

_FAST = hasattr(yaml, "CSafeLoader")  # libyaml: one C parse; the pure-Python one otherwise
_MERGE = "tag:yaml.org,2002:merge"
_REPARSE_CHARS = 256 * 1024  # a broken file up to this size gets the pure-Python wording
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class _Constructing(yaml.constructor.SafeConstructor):
    """SafeConstructor's data, but merge keys (``<<``) are flattened on copies: the node tree
    stays as written, so positions and re-serialization see the file's own structure."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode) and any(k.tag == _MERGE for k, _ in node.value):
            copy = _merge_copy(node)
            assert isinstance(copy, yaml.MappingNode)
            node = copy
        return super().construct_mapping(node, deep)


def _merge_copy(node: yaml.Node) -> yaml.Node:
    """A copy of the mapping nodes along merge edges (what flatten_mapping rewrites)."""
    if isinstance(node, yaml.MappingNode):
        value = [(k, _merge_copy(v) if k.tag == _MERGE else v) for k, v in node.value]
        return yaml.MappingNode(node.tag, value, node.start_mark, node.end_mark, node.flow_style)
    if isinstance(node, yaml.SequenceNode):
        items = [_merge_copy(v) for v in node.value]
        return yaml.SequenceNode(node.tag, items, node.start_mark, node.end_mark, node.flow_style)
    return node


class _CLoader(_Constructing, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


class _PyLoader(_Constructing, yaml.SafeLoader):
    pass


class _CTextTimestamps(_CLoader):
    pass


class _PyTextTimestamps(_PyLoader):
    pass


def _timestamp_text(loader: Any, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


for _cls in (_CTextTimestamps, _PyTextTimestamps):
    _cls.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_text)


def construct(node: yaml.Node, *, timestamps_as_text: bool = False) -> Any:
    """The plain data of a composed node, as ``yaml.safe_load`` of that node's text gives it,
    without serializing and parsing it again; ``timestamps_as_text`` keeps unquoted timestamps
    as written (``2020-01-21 12:30:00``), as YAML-to-JSON tools read them. The node is left as
    it is (merge keys are flattened on copies)."""
    if timestamps_as_text:
        loader_class: Any = _CTextTimestamps if _FAST else _PyTextTimestamps
    else:
        loader_class = _CLoader if _FAST else _PyLoader
    loader = loader_class("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def max_spec_bytes() -> int:
    """The size limit for spec files: ``GPUSLO_MAX_SPEC_BYTES`` or 10 MiB."""
    text = os.environ.get(SIZE_ENV, "").strip()
    if not text:
        return MAX_SPEC_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{SIZE_ENV}={text!r}: expected a positive number of bytes")
    return value


def _file_problem(name: str, message: str, line: int = 1, col: int = 1) -> SpecError:
    return SpecError([SpecProblem(name, line, col, "file", message)])


def read_spec_text(path: str | Path) -> str:
    """A spec file's text: a regular file (checked before reading, so a FIFO or a device never
    blocks or streams), at most the size limit, UTF-8; SpecError in one line otherwise."""
    name = str(path)
    try:
        limit = max_spec_bytes()
    except ValueError as err:
        raise _file_problem(name, str(err)) from None
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _file_problem(name, err.strerror or str(err)) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _KINDS if test(info.st_mode)), "a special file")
            raise _file_problem(name, f"not a regular file ({kind})")
        if info.st_size > limit:
            raise _file_problem(name, _too_big(info.st_size, limit))
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(limit + 1)
    except OSError as err:
        raise _file_problem(name, err.strerror or str(err)) from err
    finally:
        os.close(fd)
    if len(raw) > limit:  # grew while we looked
        raise _file_problem(name, _too_big(len(raw), limit))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        message = (
            f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start}; "
            "gpuslo reads spec files as UTF-8"
        )
        raise _file_problem(name, message, line, col) from None


def _too_big(size: int, limit: int) -> str:
    return f"{size} bytes, over the {limit}-byte limit for spec files ({SIZE_ENV})"


def _too_deep(name: str, line: int, col: int) -> SpecError:
    return SpecError(
        [SpecProblem(name, line, col, "yaml", f"nested deeper than {MAX_DEPTH} levels")]
    )


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _yaml_problem(name: str, text: str, err: yaml.YAMLError) -> SpecError:
    mark = getattr(err, "problem_mark", None)
    position = getattr(err, "position", None)  # ReaderError: a character index, no mark
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(position, int):
        line, col = _position(text, position)
    else:
        line, col = 1, 1
    if isinstance(err, yaml.reader.ReaderError):
        problem = f"unacceptable character #x{err.character:04x}: {err.reason}"
    else:
        problem = getattr(err, "problem", None) or str(err)
    if "maximum nesting depth" in problem:
        return _too_deep(name, line, col)
    return SpecError([SpecProblem(name, line, col, "yaml", " ".join(problem.split()))])


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The collections directly inside a collection node."""
    if isinstance(node, yaml.MappingNode):
        items = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        items = node.value
    else:
        return []
    return [n for n in items if isinstance(n, (yaml.MappingNode, yaml.SequenceNode))]


def _check_depth(name: str, root: yaml.Node) -> None:
    """Refuse collections nested deeper than MAX_DEPTH, aliases followed (a shallow text can
    alias its way deep), and aliases that contain themselves; iterative, each node once."""
    height: dict[int, int] = {}
    on_path = {id(root)}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, todo = stack[-1]
        for child in todo:
            if id(child) in on_path:
                mark = child.start_mark
                raise SpecError(
                    [
                        SpecProblem(
                            name,
                            mark.line + 1,
                            mark.column + 1,
                            "yaml",
                            "an alias refers to a collection that contains it",
                        )
                    ]
                )
            if id(child) not in height:
                on_path.add(id(child))
                stack.append((child, iter(_children(child))))
                break
        else:
            stack.pop()
            on_path.discard(id(node))
            height[id(node)] = 1 + max((height[id(c)] for c in _children(node)), default=0)
    if height.get(id(root), 0) <= MAX_DEPTH:
        return
    node = root  # down the deepest path to the first collection past the limit
    for _ in range(MAX_DEPTH):
        node = max(_children(node), key=lambda c: height[id(c)])
    raise _too_deep(name, node.start_mark.line + 1, node.start_mark.column + 1)


def load_documents(path: str | Path) -> list[tuple[Any, yaml.Node]]:
    """Every document in the file as (plain data, node tree); a file that is not a regular
    UTF-8 file within the size limit, YAML errors and nesting past MAX_DEPTH become
    SpecError. The file is parsed once (libyaml when installed), positions kept."""
    name = str(path)
    text = read_spec_text(path)
    loader_class: Any = _CLoader if _FAST else _PyLoader
    loader = loader_class(text)
    try:
        nodes = []
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is not None:
                    nodes.append(node)
        except yaml.YAMLError as err:
            raise _syntax_error(name, text, err) from err
        except RecursionError:  # the pure-Python composer recurses per level
            raise _too_deep(name, 1, 1) from None
        if not nodes:
            raise SpecError([SpecProblem(name, 1, 1, "file", "no YAML documents")])
        data = []
        for node in nodes:
            _check_depth(name, node)
            try:
                data.append(loader.construct_document(node))
            except yaml.YAMLError as err:
                raise _yaml_problem(name, text, err) from err
            except RecursionError:  # aliases of aliases: deep data from shallow text
                mark = node.start_mark
                raise _too_deep(name, mark.line + 1, mark.column + 1) from None
    finally:
        loader.dispose()
    return list(zip(data, nodes, strict=True))


def _syntax_error(name: str, text: str, err: yaml.YAMLError) -> SpecError:
    """A YAML error in the words and place of the pure-Python parser (libyaml's wording
    differs), found by reparsing the broken file with it, up to _REPARSE_CHARS (the pure-Python
    parser takes seconds per MiB); libyaml's own error otherwise."""
    problem = _yaml_problem(name, text, err)
    if not _FAST or len(text) > _REPARSE_CHARS or "nested deeper" in problem.problems[0].message:
        return problem
    try:
        for _ in yaml.compose_all(text, Loader=yaml.SafeLoader):
            pass
    except yaml.YAMLError as pure:
        return _yaml_problem(name, text, pure)
    except RecursionError:
        pass
    return problem


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
