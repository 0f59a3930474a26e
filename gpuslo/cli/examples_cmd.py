"""``gpuslo examples``: the example inputs shipped in the wheel (SLO specs in each format, a
price catalog, a remediation policy), listed or copied out to start from."""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from gpuslo.cli.agent_cmd import UsageError

EPILOG = """\
examples:
  gpuslo examples list
  gpuslo examples copy ./my-gpuslo        # then: gpuslo slo generate ./my-gpuslo/slos/chat.yaml
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "examples",
        help="list or copy out the example SLO specs, price catalog and policy",
        description="The example inputs gpuslo ships: SLO specs (native, OpenSLO, Sloth), a "
        "price catalog with sourced prices and a remediation policy.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    esub = p.add_subparsers(dest="examples_command", metavar="SUBCOMMAND", required=True)
    ls = esub.add_parser("list", help="print the shipped example files")
    ls.set_defaults(func=list_examples)
    cp = esub.add_parser("copy", help="copy every example file into a folder")
    cp.add_argument("directory", type=Path, metavar="DIR")
    cp.add_argument("--force", action="store_true", help="overwrite files already there")
    cp.set_defaults(func=copy_examples)


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = f"{prefix}{entry.name}"
        if entry.is_dir() and entry.name != "__pycache__":
            out += _files(entry, f"{name}/")
        elif entry.is_file() and entry.name.endswith(".yaml"):
            out.append((name, entry))
    return out


def shipped() -> list[tuple[str, Traversable]]:
    """Every example file as (relative name, resource)."""
    return _files(resources.files("gpuslo.examples"))


def list_examples(args: argparse.Namespace) -> int:
    for name, _ in shipped():
        print(name)
    return 0


def copy_examples(args: argparse.Namespace) -> int:
    files = shipped()
    target: Path = args.directory
    clash = [name for name, _ in files if (target / name).exists()]
    if clash and not args.force:
        raise UsageError(f"{target / clash[0]} exists (use --force to overwrite)")
    for name, resource in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with resource.open("rb") as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out)
    print(f"{len(files)} example files in {target}")
    return 0
