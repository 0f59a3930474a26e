"""The naming contract's two dcgm-exporter generations: every GPU field gpuslo exports has a
DCGM-4 spelling with its source, values convert between the units both ways, and the fields
dcgm-exporter ships by default (its etc/default-counters.csv, legacy names) are all mapped."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from gpuslo.foundation import conventions as c

ROOT = Path(__file__).resolve().parents[2]
DCGM_DATA = ROOT.parent / "shared" / "data" / "dcgm"
RECORDING = ROOT / "tests" / "collectors" / "fixtures" / "gpu" / "sim-h100x2.json"
CURRENT = c.gpu_naming("current")
LEGACY = c.gpu_naming("legacy")
EXPORTED = (*c.GPU_FIELDS, c.DCGM_XID_ERRORS)
# The legacy unit as dcgm-exporter's help text states it -> the factor to the DCGM-4 base unit
# (dcgm-exporter 4.9.0: clocks MHz -> Hz, energy mJ -> J, utilization % -> ratio, MiB -> bytes).
UNIT_FACTORS = {"MHz": 1e6, "mJ": 1e-3, "%": 0.01, "MiB": 2.0**20}


def test_every_exported_gpu_field_has_a_current_spelling_with_its_source():
    for spec in EXPORTED:
        cur = c.DCGM_CURRENT_NAMES.get(spec.name)
        assert cur is not None, spec.name
        assert cur.source, spec.name
        assert re.fullmatch(r"DCGM_FI_(DEV|PROF)_[A-Z0-9_]+", cur.name), cur.name
        assert CURRENT.name(spec) == cur.name and LEGACY.name(spec) == spec.name
        assert CURRENT.spec(spec).type == spec.type
    names = [CURRENT.name(spec) for spec in EXPORTED]
    assert len(names) == len(set(names)), "two fields share a current name"


def test_a_unit_change_follows_the_legacy_help_unit_and_rewrites_the_help():
    for spec in EXPORTED:
        unit = re.search(r"\(in ([^)]+)\)", spec.help)
        expected = UNIT_FACTORS.get(unit.group(1), 1.0) if unit else 1.0
        assert CURRENT.factor(spec) == expected, spec.name
        assert LEGACY.factor(spec) == 1.0 and LEGACY.spec(spec) == spec
        if expected != 1.0:
            help_ = CURRENT.spec(spec).help
            assert unit.group(0) not in help_, help_
            assert c.DCGM_CURRENT_NAMES[spec.name].unit.split()[0] in help_, help_


def test_unconfirmed_names_say_so_in_their_source():
    unconfirmed = {k: v for k, v in c.DCGM_CURRENT_NAMES.items() if not v.confirmed}
    # the six fields DCGM 4.6.1's header does not rename (MEM_COPY/ENC/DEC util, FB x3)
    assert sorted(unconfirmed) == sorted(
        s.name
        for s in (
            c.DCGM_MEM_COPY_UTIL,
            c.DCGM_ENC_UTIL,
            c.DCGM_DEC_UTIL,
            c.DCGM_FB_FREE,
            c.DCGM_FB_USED,
            c.DCGM_FB_RESERVED,
        )
    )
    assert all(v.source.startswith("unconfirmed") for v in unconfirmed.values())
    confirmed = [v for v in c.DCGM_CURRENT_NAMES.values() if v.confirmed]
    assert all("DCGM 4.6.1 dcgm_fields.h" in v.source for v in confirmed)


def test_one_recorded_sample_converts_to_current_units_and_back():
    frame = json.loads(RECORDING.read_text())["frames"][0][0]["fields"]
    by_name = {spec.name: spec for spec in EXPORTED}
    assert set(frame) <= set(by_name)
    current = {CURRENT.name(by_name[k]): v * CURRENT.factor(by_name[k]) for k, v in frame.items()}
    assert current["DCGM_FI_DEV_SM_CLOCK_HERTZ"] == 1.98e9  # 1980 MHz
    assert current["DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL"] == pytest.approx(0.015)  # 15 mJ
    assert current["DCGM_FI_DEV_GPU_UTIL_RATIO"] == pytest.approx(0.30)  # 30 %
    assert current["DCGM_FI_DEV_FB_USED_BYTES"] == 4096 * 1024 * 1024  # 4096 MiB
    assert current["DCGM_FI_DEV_GPU_TEMP_CELSIUS"] == 35.0  # unchanged unit
    back_by_current = {CURRENT.name(spec): spec for spec in EXPORTED}
    back = {
        back_by_current[k].name: v / CURRENT.factor(back_by_current[k]) for k, v in current.items()
    }
    assert back == pytest.approx(frame, rel=1e-12)
    # and the worked examples of the issue, both ways
    for spec, legacy_value, current_value in (
        (c.DCGM_SM_CLOCK, 1410.0, 1.41e9),
        (c.DCGM_TOTAL_ENERGY, 987654321.0, 987654.321),
        (c.DCGM_GPU_UTIL, 87.0, 0.87),
        (c.DCGM_FB_USED, 20480.0, 21474836480.0),
    ):
        assert legacy_value * CURRENT.factor(spec) == pytest.approx(current_value, rel=1e-15)
        assert current_value / CURRENT.factor(spec) == pytest.approx(legacy_value, rel=1e-15)


def _active_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line, field, help) of every active (uncommented) row of a dcgm-exporter counters CSV."""
    rows = []
    with path.open(newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            rows.append((line_no, row[0].strip(), ",".join(row[2:]).strip()))
    return rows


def test_every_default_dcgm_exporter_field_gpuslo_exports_has_a_known_mapping():
    path = DCGM_DATA / "default-counters.current.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent (dcgm-exporter's default counter list, see its SOURCES.md)")
    rows = _active_rows(path)
    assert len(rows) == 26  # SOURCES.md: 26 active rows, legacy names
    exported = {spec.name: spec for spec in EXPORTED}
    ours = [(line, name, help_) for line, name, help_ in rows if name in exported]
    assert len(ours) >= 20
    for line, name, help_ in ours:
        cur = c.DCGM_CURRENT_NAMES.get(name)
        assert cur is not None, f"{path.name}:{line}: {name} has no current name"
        unit = re.search(r"\(in ([^)]+)\)", help_)
        expected = UNIT_FACTORS.get(unit.group(1), 1.0) if unit else 1.0
        assert cur.factor == expected, f"{path.name}:{line}: {name}: {help_}"


def test_host_and_driver_version_labels_follow_the_generation():
    assert LEGACY.host_label == "Hostname" and CURRENT.host_label == "hostname"
    assert LEGACY.driver_version_label == "DCGM_FI_DRIVER_VERSION"
    assert CURRENT.driver_version_label == "DCGM_FI_SYSTEM_DRIVER_VERSION"
    assert c.gpu_naming().generation == c.DEFAULT_DCGM_GENERATION
    with pytest.raises(ValueError, match="choose one of legacy, current"):
        c.gpu_naming("dcgm4")
