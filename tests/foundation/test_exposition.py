from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gpuslo.foundation import conventions as c
from gpuslo.foundation.exposition import add, family, format_value, render, wants_openmetrics


def _families():
    replay = family(c.DCGM_PCIE_REPLAY)
    add(replay, {"gpu": "0"}, 3)
    xid = family(c.GPU_XID_ERRORS)
    add(xid, {"gpu": "0", "xid": "79"}, 1)
    info = family(c.GPU_INFO)
    add(info, {"gpu": "0", "driver_version": 'a"b\\c\nd'}, 1)
    return [replay, xid, info]


def test_dcgm_counter_keeps_its_name_without_total_in_text_format():
    text = render(_families(), openmetrics=False)
    assert "# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter\n" in text
    assert 'DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu="0"} 3\n' in text
    assert "DCGM_FI_DEV_PCIE_REPLAY_COUNTER_total" not in text


def test_openmetrics_declares_suffixless_counter_unknown_and_parses_strictly():
    text = render(_families(), openmetrics=True) + "# EOF\n"
    assert "# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER unknown\n" in text
    assert "# TYPE gpuslo_gpu_xid_errors counter\n" in text
    assert "# TYPE gpuslo_gpu info\n" in text
    parsed = {f.name: f for f in parse_om(text)}
    assert parsed["gpuslo_gpu_xid_errors"].samples[0].value == 1
    assert parsed["gpuslo_gpu"].samples[0].labels["driver_version"] == 'a"b\\c\nd'


def test_text_format_round_trips_escaped_label_values():
    text = render(_families(), openmetrics=False)
    parsed = {f.name: f for f in parse_text(text)}
    assert parsed["gpuslo_gpu_info"].samples[0].labels["driver_version"] == 'a"b\\c\nd'


def test_values_are_written_the_way_prometheus_writes_them():
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(1e20) == "1e+20"


def test_openmetrics_only_when_the_scraper_asks():
    prom = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    assert wants_openmetrics(prom)
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics(None)


def test_empty_families_are_not_rendered():
    assert render([family(c.GPU_UP)], openmetrics=False) == ""


def test_history_groups_each_family_and_keeps_every_samples_own_timestamp():
    import io

    from prometheus_client.core import Metric

    from gpuslo.foundation.exposition import History

    history = History()
    for step, at in enumerate((1_795_000_000.0, 1_795_000_015.0, 1_795_000_030.5)):
        for node in ("n0", "n1"):  # two agents' families of the same names, step by step
            up = family(c.GPU_UP)
            add(up, {"gpu": "0", "Hostname": node}, 1.0)
            xid = family(c.GPU_XID_ERRORS)
            if step and node == "n1":  # appears late
                add(xid, {"gpu": "0", "Hostname": node, "xid": "79"}, step)
            replay = family(c.DCGM_PCIE_REPLAY)
            add(replay, {"gpu": "0", "Hostname": node}, 0.25 * step)
            pod = family(c.GPU_POD_INFO)
            if step < 2:  # goes away
                add(pod, {"gpu": "0", "Hostname": node, "pod": 'a"b\\c\nd'}, 1.0)
            history.add([up, xid, replay, pod], at)
        ttft = Metric("ttft_seconds", "Time to first token.", "histogram")
        add(ttft, {"le": "1"}, step, "_bucket")
        add(ttft, {"le": "+Inf"}, step, "_bucket")
        add(ttft, {}, step, "_count")
        add(ttft, {}, 0.5 * step, "_sum")
        history.add([ttft], at)
    out = io.StringIO()
    assert history.write(out) == 3 * 2 + 2 + 3 * 2 + 2 * 2 + 3 * 4
    assert history.series == 2 + 1 + 2 + 2 + 4
    text = out.getvalue()
    types = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert types == [  # in order of first appearance
        "# TYPE gpuslo_gpu_up gauge",
        "# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER unknown",  # a counter without _total samples
        "# TYPE gpuslo_gpu_pod info",
        "# TYPE ttft_seconds_bucket unknown",  # a histogram's plain series
        "# TYPE ttft_seconds_count unknown",
        "# TYPE ttft_seconds_sum unknown",
        "# TYPE gpuslo_gpu_xid_errors counter",
    ]
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    lines = text.splitlines()
    assert 'gpuslo_gpu_up{gpu="0",Hostname="n0"} 1 1795000030.5' in lines
    assert 'gpuslo_gpu_xid_errors_total{gpu="0",Hostname="n1",xid="79"} 1 1795000015' in lines
    assert 'DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu="0",Hostname="n1"} 0.25 1795000015' in lines
    # Strictly parsed, each series' samples in time order, label values unescaped.
    parsed = {f.name: f for f in parse_om(text)}
    assert set(parsed) == {
        "gpuslo_gpu_up",
        "gpuslo_gpu_xid_errors",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "gpuslo_gpu_pod",
        "ttft_seconds_bucket",
        "ttft_seconds_count",
        "ttft_seconds_sum",
    }
    up = [(s.labels["Hostname"], float(s.timestamp)) for s in parsed["gpuslo_gpu_up"].samples]
    assert up == [
        ("n0", 1_795_000_000.0),
        ("n0", 1_795_000_015.0),
        ("n0", 1_795_000_030.5),
        ("n1", 1_795_000_000.0),
        ("n1", 1_795_000_015.0),
        ("n1", 1_795_000_030.5),
    ]
    pods = parsed["gpuslo_gpu_pod"].samples
    assert len(pods) == 4 and {s.labels["pod"] for s in pods} == {'a"b\\c\nd'}
    assert [s.value for s in parsed["ttft_seconds_sum"].samples] == [0, 0.5, 1]
