"""Spec files that are not what they claim: each is one located problem, never a traceback;
and the one-parse libyaml loader gives the data and positions the pure-Python one gave."""

import os
import threading
from pathlib import Path

import pytest
import yaml

from gpuslo.foundation import yamlpos
from gpuslo.foundation.errors import OutputError, SpecError
from gpuslo.foundation.output import prepare_output_dir, write_text
from gpuslo.foundation.yamlpos import load_documents


def problem(path):
    with pytest.raises(SpecError) as err:
        load_documents(path)
    assert len(err.value.problems) == 1, err.value.problems
    text = str(err.value.problems[0])
    assert "\n" not in text and text.startswith(f"{path}:")
    return text


def test_a_binary_file_names_the_first_bad_byte_and_its_offset(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\x00\x01\xff\xfe rest")
    assert problem(p) == (
        f"{p}:1:3: file: not UTF-8 text: byte 0xff at offset 2; gpuslo reads spec files as UTF-8"
    )


def test_a_latin1_file_gives_the_line_and_column_of_the_bad_byte(tmp_path):
    p = tmp_path / "latin.yaml"
    p.write_bytes("apiVersion: gpuslo/v1\nname: café\n".encode("latin-1"))
    assert problem(p).startswith(f"{p}:2:10: file: not UTF-8 text: byte 0xe9 at offset 31")


def test_control_characters_in_utf8_are_one_line_at_their_place(tmp_path):
    p = tmp_path / "ctl.yaml"
    p.write_text("a: 1\nb: \x07\n")
    assert problem(p).startswith(f"{p}:2:4: yaml: unacceptable character #x0007")


@pytest.mark.parametrize(
    "text", ["[" * 10_000, "[" * 500 + "]" * 500, "a:\n  " + "[" * 150 + "]" * 150]
)
def test_deep_flow_nesting_is_refused_with_its_place(tmp_path, text):
    p = tmp_path / "deep.yaml"
    p.write_text(text)
    out = problem(p)
    assert f"nested deeper than {yamlpos.MAX_DEPTH} levels" in out


def test_deep_block_nesting_points_at_the_first_node_past_the_limit(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("".join(f"{' ' * i}k{i}:\n" for i in range(300)) + " " * 300 + "leaf\n")
    assert problem(p) == (
        f"{p}:{yamlpos.MAX_DEPTH + 1}:{yamlpos.MAX_DEPTH + 1}: yaml: nested deeper than "
        f"{yamlpos.MAX_DEPTH} levels"
    )


def test_aliases_that_nest_deep_from_a_shallow_text_are_refused(tmp_path):
    lines = ["a0: &a0 " + "[" * 90 + "1" + "]" * 90]
    lines += [f"a{i}: &a{i} " + "[" * 90 + f"*a{i - 1}" + "]" * 90 for i in range(1, 40)]
    p = tmp_path / "aliases.yaml"
    p.write_text("\n".join(lines) + "\n")
    assert f"nested deeper than {yamlpos.MAX_DEPTH} levels" in problem(p)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    p = tmp_path / "loop.yaml"
    p.write_text("a: &loop\n  - x\n  - *loop\n")
    assert problem(p) == f"{p}:1:4: yaml: an alias refers to a collection that contains it"


@pytest.mark.parametrize("special", ["/dev/zero", "dir"])
def test_non_regular_files_are_refused_before_reading(tmp_path, special):
    path = tmp_path if special == "dir" else special
    kind = "a directory" if special == "dir" else "a character device"
    assert problem(path) == f"{path}:1:1: file: not a regular file ({kind})"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(problem(fifo)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the test run ends
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert out == [f"{fifo}:1:1: file: not a regular file (a FIFO)"]


def test_a_missing_file_keeps_its_message(tmp_path):
    assert problem(tmp_path / "nope.yaml").endswith("file: No such file or directory")


def test_an_oversize_file_names_the_limit(tmp_path, monkeypatch):
    assert yamlpos.max_spec_bytes() == 10 * 1024 * 1024
    monkeypatch.setenv("GPUSLO_MAX_SPEC_BYTES", "100")
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * 200 + "\n")
    assert problem(p) == (
        f"{p}:1:1: file: 204 bytes, over the 100-byte limit for spec files (GPUSLO_MAX_SPEC_BYTES)"
    )
    p.write_text("a: 1\n")
    assert load_documents(p)[0][0] == {"a": 1}


def test_a_bad_size_limit_setting_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUSLO_MAX_SPEC_BYTES", "lots")
    p = tmp_path / "a.yaml"
    p.write_text("a: 1\n")
    assert "GPUSLO_MAX_SPEC_BYTES" in problem(p)


SAMPLE = """\
base: &base {window: 30d, labels: {team: a}}
when: 2020-01-21 12:30:00
slos:
  - <<: *base
    name: one
    objective: 99.9
  - <<: [*base, {extra: true}]
    name: two
    objective: .inf
    empty:
    octal: 0o17
    list: [1, 2.5, yes, null, ~, "s"]
---
second: document
"""


def test_libyaml_gives_the_data_the_pure_python_loader_gives(tmp_path):
    p = tmp_path / "sample.yaml"
    p.write_text(SAMPLE)
    docs = load_documents(p)
    assert [d for d, _ in docs] == list(yaml.load_all(SAMPLE, Loader=yaml.SafeLoader))


def test_positions_come_from_the_one_parse_and_merges_leave_the_nodes_alone(tmp_path):
    p = tmp_path / "sample.yaml"
    p.write_text(SAMPLE)
    (data, node), (_, second) = load_documents(p)
    assert yamlpos.locate(node, ("slos", 1, "objective")) == (9, 16)
    assert yamlpos.locate(node, ("slos", 0, "name"), key=True) == (5, 5)
    assert second.start_mark.line + 1 == 14
    # the merge key is still in the tree, as written: serializing the node gives the file back
    assert yaml.safe_load(yaml.serialize(node)) == data
    assert any(k.value == "<<" for k, _ in node.value[2][1].value[0].value)


def test_the_pure_python_fallback_gives_the_same_documents(tmp_path, monkeypatch):
    p = tmp_path / "sample.yaml"
    p.write_text(SAMPLE)
    fast = load_documents(p)
    monkeypatch.setattr(yamlpos, "_FAST", False)
    slow = load_documents(p)
    assert [d for d, _ in slow] == [d for d, _ in fast]
    assert [n.start_mark.line for _, n in slow] == [n.start_mark.line for _, n in fast]


def test_yaml_errors_keep_the_pure_python_wording_and_place(tmp_path):
    p = tmp_path / "colon.yaml"
    p.write_text(": x\n")
    assert problem(p) == f"{p}:1:1: yaml: expected <block end>, but found ':'"


def test_output_dir_is_created_and_a_file_in_the_way_is_one_typed_error(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        prepare_output_dir(blocker)
    assert str(err.value) == f"{blocker}: not a directory (a file is in the way)"
    with pytest.raises(OutputError) as err:
        prepare_output_dir(blocker / "sub")
    assert str(err.value).startswith(f"{blocker / 'sub'}: cannot create the output directory")
    with pytest.raises(OutputError) as err:
        write_text(tmp_path, "x")
    assert str(err.value).startswith(f"{tmp_path}: cannot write: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_dir_is_one_typed_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError) as err:
            prepare_output_dir(ro)
        assert str(err.value) == f"{ro}: output directory is not writable"
    finally:
        ro.chmod(0o700)


class _TimestampsAsText(yaml.SafeLoader):
    pass


_TimestampsAsText.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def test_construct_gives_what_a_serialize_and_reparse_gave_without_the_second_parse(tmp_path):
    p = tmp_path / "sample.yaml"
    p.write_text(SAMPLE)
    root = Path(__file__).resolve().parents[2]
    files = [p, *sorted(root.glob("examples/**/*.yaml"))]
    files += sorted(root.glob("tests/slo_engine/fixtures/**/*.yaml"))
    assert len(files) > 50
    for path in files:
        try:
            docs = load_documents(path)
        except SpecError:  # a fixture of a broken file
            continue
        for data, node in docs:
            again = yaml.load(yaml.serialize(node), Loader=_TimestampsAsText)
            assert yamlpos.construct(node, timestamps_as_text=True) == again, path
            assert yamlpos.construct(node) == data, path
    (_, node), _ = load_documents(p)
    assert yamlpos.construct(node, timestamps_as_text=True)["when"] == "2020-01-21 12:30:00"


def test_a_large_broken_file_gets_libyamls_error_without_a_slow_reparse(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlpos, "_REPARSE_CHARS", 10)
    p = tmp_path / "colon.yaml"
    p.write_text("a: 1\n: x\n")
    assert problem(p).startswith(f"{p}:2:1: yaml: ")
