"""The pieces every spec-file model shares: strict pydantic bases (an unknown field is an
error, never ignored), the DNS-label name pattern and the duration check. The YAML side
(positions, one-document files, problems at a field) is ``yamlpos``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from .durations import parse_duration

# A Kubernetes DNS label (RFC 1123): what names of SLOs, pools, policies and tenants must be,
# so they can become label values, rule names and object names unchanged.
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"


class Strict(BaseModel):
    """A spec model that rejects unknown fields (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


class FrozenStrict(BaseModel):
    """A strict spec model whose instances cannot change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_duration(value: str) -> str:
    """A field validator: the value must be a positive Prometheus duration (``5m``, ``1h``)."""
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(check_duration)]
