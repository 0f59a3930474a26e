import json
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
