from pathlib import Path

from gpuslo.foundation import conventions as c

ROOT = Path(__file__).resolve().parents[1]


def contract_metrics():
    specs = [v for v in vars(c).values() if isinstance(v, c.MetricSpec)]
    return {s.name for s in specs if not s.name.startswith(c.IB_PREFIX)}


def test_every_metric_in_the_naming_contract_is_documented():
    doc = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing = sorted(name for name in contract_metrics() if name not in doc)
    assert missing == []


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text()[:300]
    assert "make demo" in head and "make test" in head
