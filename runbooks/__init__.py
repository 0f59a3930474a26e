"""One Markdown runbook per alert kind, shipped in the wheel and linked from every alert's
``runbook_url``."""

if __name__ != "gpuslo.runbooks":  # the folder is gpuslo.runbooks; one module, one name
    raise ImportError(
        "import gpuslo.runbooks, not runbooks: this folder is part of the gpuslo package"
    )

from gpuslo.foundation.resources import data_names, data_path


def names() -> list[str]:
    """The shipped runbooks, by name (``latency-slo``, ``gpu-health``, ...)."""
    return [name.removesuffix(".md") for name in data_names(__name__, suffix=".md")]


def read(name: str) -> str:
    """The text of one shipped runbook."""
    return data_path(__name__, f"{name}.md").read_text()


__all__ = ["names", "read"]
