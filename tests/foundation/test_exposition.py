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
