"""The remediation hook: Alertmanager webhooks in, guarded actions out (policies, cooldowns,
rate limits, a kill switch, dry runs, data and cause checks, reverts) with a journal that
makes each action happen once."""

if __name__ != "gpuslo.remediation":  # the folder is gpuslo.remediation; one module, one name
    raise ImportError(
        "import gpuslo.remediation, not remediation: this folder is part of the gpuslo package"
    )

from .actuators import Actuator, ActuatorError, LogActuator, TwinActuator
from .engine import CauseCheck, DataCheck, Outcome, Remediator
from .journal import Entry, Journal
from .policy import Policy, PolicyFile, load_policy
from .server import Hook, Metrics
from .webhook import Alert, Payload, PayloadError, parse_payload

__all__ = [
    "Actuator",
    "ActuatorError",
    "Alert",
    "CauseCheck",
    "DataCheck",
    "Entry",
    "Hook",
    "Journal",
    "LogActuator",
    "Metrics",
    "Outcome",
    "Payload",
    "PayloadError",
    "Policy",
    "PolicyFile",
    "Remediator",
    "TwinActuator",
    "load_policy",
    "parse_payload",
]
