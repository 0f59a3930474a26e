"""The ``gpuslo`` command (the roof): one subcommand module per capability and the end-to-end
demo orchestrator. Nothing else in gpuslo imports from here."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
