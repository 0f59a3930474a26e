"""The one-way flow of docs/architecture.md as a test: foundation <- producers <- readers <-
actuators <- the CLI. Every import of every gpuslo module (function-level ones included) is
checked against the allowed edges; a new backward import fails here with its file and line."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Which gpuslo packages each package may import (itself always). Readers build on the SLO
# engine and the cost model; nothing but the CLI reaches into the CLI.
ALLOWED: dict[str, set[str]] = {
    "gpuslo": set(),  # the root: version only
    "gpuslo.foundation": set(),
    "gpuslo.collectors": {"gpuslo.foundation"},
    "gpuslo.instrument": {"gpuslo", "gpuslo.foundation"},
    "gpuslo.simulator": {"gpuslo.foundation", "gpuslo.collectors"},
    "gpuslo.slo_engine": {"gpuslo.foundation"},
    "gpuslo.cost_model": {"gpuslo.foundation"},
    "gpuslo.drift": {"gpuslo.foundation"},
    "gpuslo.runbooks": {"gpuslo.foundation"},
    "gpuslo.examples": set(),
    "gpuslo.alerts": {"gpuslo.foundation", "gpuslo.slo_engine"},
    "gpuslo.dashboards": {"gpuslo.foundation", "gpuslo.slo_engine", "gpuslo.cost_model"},
    "gpuslo.remediation": {"gpuslo.foundation", "gpuslo.slo_engine"},
    "gpuslo.tenants": {"gpuslo.foundation", "gpuslo.slo_engine", "gpuslo.cost_model"},
    "gpuslo.rollouts": {
        "gpuslo.foundation",
        "gpuslo.slo_engine",
        "gpuslo.cost_model",
        "gpuslo.remediation",
    },
}
ALLOWED["gpuslo.cli"] = set(ALLOWED) - {"gpuslo.cli"}
ALLOWED["gpuslo.__main__"] = {"gpuslo.cli"}


def _package_dirs() -> dict[str, Path]:
    """gpuslo's packages and their folders, from pyproject's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / folder for pkg, folder in config["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every gpuslo module (dotted name) and its file."""
    dirs = _package_dirs()
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            # a folder mapped on its own (gpuslo.collectors) is not also part of gpuslo/
            if not any(
                name.startswith(other + ".") or name == other
                for other in dirs
                if other != pkg and other.startswith(pkg + ".")
            ):
                out[name] = path
    return out


def _unit(module: str) -> str:
    """The layer unit a module belongs to (its package in ALLOWED, most specific first)."""
    for unit in sorted(ALLOWED, key=len, reverse=True):
        if module == unit or module.startswith(unit + "."):
            return unit
    raise AssertionError(f"{module} belongs to no layer: add its package to ALLOWED")


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported gpuslo module) for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, t) for line, t in found if t == "gpuslo" or t.startswith("gpuslo.")]


MODULES = _modules()


def test_every_package_folder_is_mapped_and_has_a_layer():
    assert {"gpuslo.collectors", "gpuslo.slo_engine", "gpuslo.simulator"} <= set(MODULES)
    for module in MODULES:
        _unit(module)


def test_imports_only_point_down_the_layers():
    backward = []
    for module, path in sorted(MODULES.items()):
        unit = _unit(module)
        for line, target in _imports(module, path):
            to = _unit(target)
            if to == unit or to in ALLOWED[unit]:
                continue
            if target == "gpuslo" and unit != "gpuslo.foundation":
                continue  # ``from gpuslo import __version__``
            backward.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    assert not backward, "imports against the layers:\n" + "\n".join(backward)


def test_the_checker_sees_a_backward_import(tmp_path):
    # The check itself can fail: a reader importing the CLI is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from gpuslo.cli import main\n    return main\n")
    ((line, target),) = _imports("gpuslo.slo_engine.bad", bad)
    assert (line, target) == (2, "gpuslo.cli")
    assert _unit(target) not in ALLOWED[_unit("gpuslo.slo_engine.bad")]


def test_relative_imports_resolve_to_their_package(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from .agent import Agent\nfrom ..foundation import conventions\n")
    assert _imports("gpuslo.collectors", init) == [
        (1, "gpuslo.collectors.agent"),
        (2, "gpuslo.foundation"),
    ]


@pytest.mark.parametrize("folder", ["collectors", "slo_engine", "simulator", "remediation"])
def test_a_folder_is_not_importable_under_its_bare_name(folder):
    # One module, one name: from the checkout root, ``import collectors`` must refuse.
    out = subprocess.run(
        [sys.executable, "-c", f"import {folder}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert f"import gpuslo.{folder}, not {folder}" in out.stderr


def test_loggers_are_named_after_their_module():
    named = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "getLogger"
                and not (
                    node.args
                    and isinstance(node.args[0], ast.Name)
                    and node.args[0].id == "__name__"
                )
            ):
                named.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not named, "getLogger with a hand-written name: " + ", ".join(named)
