import json
import os
import socket

import pytest

from gpuslo.cli import main
from tests.conftest import run_gpuslo

run = run_gpuslo


def test_help_explains_the_agent_and_its_collector_switches():
    out = run("agent", "--help")
    assert out.returncode == 0
    for flag in (
        "--collector.gpu",
        "--no-collector.infiniband",
        "--once",
        "--listen",
        "--path.sysfs",
        "--gpu-backend",
        "9835",
    ):
        assert flag in out.stdout


def test_once_prints_one_scrape_from_the_sim_backend(capsys):
    assert (
        main(
            [
                "agent",
                "--once",
                "--gpu-backend",
                "sim",
                "--sim-gpus",
                "2",
                "--no-collector.infiniband",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("DCGM_FI_DEV_GPU_UTIL{") == 2
    assert 'gpuslo_collector_success{collector="gpu"} 1' in out
    assert "infiniband" not in out


def test_once_with_openmetrics_ends_with_eof(capsys):
    main(
        [
            "agent",
            "--once",
            "--openmetrics",
            "--gpu-backend",
            "sim",
            "--sim-gpus",
            "1",
            "--no-collector.infiniband",
        ]
    )
    assert capsys.readouterr().out.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "localhost"], "--listen: expected HOST:PORT"),
        (["--interval", "0"], "--interval: must be > 0"),
        (["--gpu-backend", "fixture"], "needs --gpu-fixture"),
        (["--record-gpu", "x.json"], "--record-gpu works with --once"),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2(args, message):
    out = run("agent", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_port_already_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("agent", "--gpu-backend", "sim", "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert "cannot listen on" in out.stderr and "Traceback" not in out.stderr


def test_recording_a_node_then_replaying_it_gives_the_same_gpu_series(tmp_path):
    rec = tmp_path / "node.json"
    out = run(
        "agent",
        "--once",
        "--gpu-backend",
        "sim",
        "--sim-gpus",
        "2",
        "--hostname",
        "n1",
        "--no-collector.infiniband",
        "--record-gpu",
        str(rec),
        "--record-frames",
        "2",
        "--interval",
        "0.01",
    )
    assert out.returncode == 0, out.stderr
    assert "recorded 2 frame(s) of 2 GPU(s)" in out.stderr
    assert len(json.loads(rec.read_text())["frames"]) == 2
    replay = run(
        "agent",
        "--once",
        "--gpu-backend",
        "fixture",
        "--gpu-fixture",
        str(rec),
        "--hostname",
        "n1",
        "--no-collector.infiniband",
    )
    assert replay.returncode == 0
    assert replay.stdout.count("gpuslo_gpu_up{") == 2


def test_recording_without_a_driver_fails_in_one_line(tmp_path, no_nvml_driver, capsys):
    code = main(
        ["agent", "--once", "--no-collector.infiniband", "--record-gpu", str(tmp_path / "x.json")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("gpuslo agent: error: NVML unavailable")
    assert "Traceback" not in err and not (tmp_path / "x.json").exists()


def test_demo_mode_serves_then_prints_a_scrape_fetched_over_http():
    out = run(
        "agent",
        "--gpu-backend",
        "sim",
        "--sim-gpus",
        "1",
        "--no-collector.infiniband",
        "--listen",
        "127.0.0.1:0",
        "--demo-seconds",
        "1.2",
        "--interval",
        "0.2",
    )
    assert out.returncode == 0, out.stderr
    assert "serving on http://127.0.0.1:" in out.stderr
    assert 'gpuslo_collector_success{collector="gpu"} 1' in out.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "agent" in capsys.readouterr().out


# Bad spec files: every validator answers in one line naming the file, never a traceback.
VALIDATORS = {
    "slo": ["slo", "validate"],
    "cost": ["cost", "validate"],
    "remediate": ["remediate", "validate"],
    "twin": ["twin", "validate"],
}
BAD_FILES = {
    "binary": b"\x00\x01\xff\xfe\x80 binary",
    "latin1": "name: caf\xe9\n".encode("latin-1"),
    "nested": b"[" * 10_000,
    "oversize": b"a: " + b"x" * 300 + b"\n",
}


def _one_line_refusal(out, path):
    assert out.returncode in (1, 2), out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], out.stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(VALIDATORS))
def test_validators_refuse_bad_files_in_one_line(tmp_path, monkeypatch, command, case):
    if case == "oversize":  # the limit lowered, so the test file stays small
        monkeypatch.setenv("GPUSLO_MAX_SPEC_BYTES", "200")
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(BAD_FILES[case])
    line = _one_line_refusal(run(*VALIDATORS[command], str(path), timeout=30), path)
    want = {
        "binary": "not UTF-8 text: byte 0xff at offset 2",
        "latin1": "not UTF-8 text: byte 0xe9 at offset 9",
        "nested": "nested deeper than",
        "oversize": "over the 200-byte limit",
    }[case]
    assert want in line


@pytest.mark.parametrize("special", ["/dev/zero", "dir", "fifo"])
@pytest.mark.parametrize("command", sorted(VALIDATORS))
def test_validators_refuse_non_regular_files_without_reading_them(tmp_path, command, special):
    path = {"/dev/zero": "/dev/zero", "dir": str(tmp_path), "fifo": str(tmp_path / "p.yaml")}[
        special
    ]
    if special == "fifo":
        os.mkfifo(path)
    _one_line_refusal(run(*VALIDATORS[command], path, timeout=30), path)


def _spec(tmp_path):
    spec = tmp_path / "chat.yaml"
    spec.write_text(
        "apiVersion: gpuslo/v1\nkind: SLOs\nslos:\n  - name: chat\n    service: chat\n"
        "    objective: 99.9\n    availability: {}\n"
    )
    return spec


def test_slo_generate_onto_a_file_is_one_line(tmp_path):
    spec, blocker = _spec(tmp_path), tmp_path / "out"
    blocker.write_text("x")
    line = _one_line_refusal(run("slo", "generate", str(spec), "-o", str(blocker)), blocker)
    assert "not a directory" in line
    under = blocker / "sub"
    line = _one_line_refusal(run("slo", "generate", str(spec), "-o", str(under)), under)
    assert "cannot create the output directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_slo_generate_into_a_read_only_dir_is_one_line(tmp_path):
    spec, ro = _spec(tmp_path), tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = _one_line_refusal(run("slo", "generate", str(spec), "-o", str(ro)), ro)
        assert "not writable" in line
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize(
    "args",
    [
        ["cost", "rules", "examples/cost/catalog.yaml"],
        ["alerts", "rules"],
        ["drift", "rules"],
        ["dashboards", "generate", "SPEC"],
        ["twin", "offline", "gpu-lost", "--step", "1h"],
    ],
)
def test_commands_writing_a_dir_refuse_a_file_as_output_in_one_line(tmp_path, args):
    blocker = tmp_path / "out"
    blocker.write_text("x")
    args = [str(_spec(tmp_path)) if a == "SPEC" else a for a in args]
    line = _one_line_refusal(run(*args, "-o", str(blocker)), blocker)
    assert "not a directory" in line


def test_alerts_config_into_a_missing_dir_is_one_line(tmp_path):
    target = tmp_path / "no" / "such" / "alertmanager.yml"
    out = run("alerts", "config", str(_spec(tmp_path)), "--hook-url", "http://h", "-o", str(target))
    assert "cannot write" in _one_line_refusal(out, target)
