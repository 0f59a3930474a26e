"""The ``--dcgm-names`` flag every command that writes or reads GPU series shares."""

from __future__ import annotations

import argparse
from typing import Any

from gpuslo.foundation import conventions as c

HELP = (
    "which dcgm-exporter generation of GPU series names to use: legacy (dcgm-exporter up to "
    "4.8.x: DCGM_FI_DEV_GPU_UTIL in %%, FB in MiB, label Hostname) or current (4.9.0 and "
    "later: DCGM 4.7 names in base units, e.g. DCGM_FI_DEV_GPU_UTIL_RATIO, label hostname); "
    "docs/agent.md lists every name (default: %(default)s)"
)


def add_dcgm_names(parser: Any) -> None:
    """Add ``--dcgm-names legacy|current`` to a (sub)command's parser."""
    parser.add_argument(
        "--dcgm-names",
        choices=c.DCGM_GENERATIONS,
        default=c.DEFAULT_DCGM_GENERATION,
        help=HELP,
    )


def naming_from(args: argparse.Namespace) -> c.GpuNaming:
    """The naming the parsed ``--dcgm-names`` chose (the default when the flag is absent)."""
    return c.gpu_naming(getattr(args, "dcgm_names", c.DEFAULT_DCGM_GENERATION))
