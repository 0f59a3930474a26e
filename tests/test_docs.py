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


def test_links_in_the_readme_and_docs_point_to_files_inside_the_repository():
    import re

    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (page.parent / target).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_architecture_page_names_every_package_folder():
    import tomllib

    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    text = (ROOT / "docs" / "architecture.md").read_text()
    for package, folder in mapping["package-dir"].items():
        if package != "gpuslo":
            assert f"`{folder}/`" in text and f"`{package}`" in text, package


def test_test_files_named_in_the_docs_exist():
    import re

    named = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named |= set(re.findall(r"tests/[a-z_/]+\.py", page.read_text()))
    assert named and sorted(n for n in named if not (ROOT / n).is_file()) == []
