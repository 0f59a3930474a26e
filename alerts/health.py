"""Agent, GPU and fabric health alerts: what the node agent's own series say is broken,
whatever the SLOs show. Each alert links its runbook."""

from __future__ import annotations

from typing import Any

from gpuslo.foundation import conventions as c

_DEFAULT_NAMING = c.gpu_naming()  # dcgm-exporter's default generation of GPU names


def _alert(
    name: str, expr: str, for_: str, severity: str, runbook: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {c.LABEL_SEVERITY: severity, c.LABEL_TIER: "health"},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{c.RUNBOOK_BASE_URL}/{runbook}.md",
        },
    }


def health_rules(naming: c.GpuNaming = _DEFAULT_NAMING) -> list[dict[str, Any]]:
    """One group per layer: agent, GPU, fabric; GPU series grouped and described by
    ``naming``'s host label (``Hostname`` before dcgm-exporter 4.8.3, ``hostname`` after)."""
    host = f"{{{{ $labels.{naming.host_label} }}}}"
    agent = [
        _alert(
            c.ALERT_COLLECTOR_FAILING,
            f"{c.COLLECTOR_SUCCESS.name} == 0",
            "10m",
            "ticket",
            "agent-health",
            "The {{ $labels.collector }} collector on {{ $labels.instance }} is failing.",
            "gpuslo_collector_success has been 0 for 10 minutes: that source's series are "
            "missing or stale.",
        ),
        _alert(
            c.ALERT_TARGET_DOWN,
            f"{c.TARGET_UP.name} == 0",
            "5m",
            "ticket",
            "agent-health",
            "Inference server {{ $labels.target }} cannot be scraped.",
            "The agent's last scrapes of the target failed (timeout, refused, HTTP error or "
            "output that is not metrics); its request series are stale.",
        ),
    ]
    gpu = [
        _alert(
            c.ALERT_GPU_LOST,
            f"{c.GPU_UP.name} == 0",
            "2m",
            "page",
            "gpu-health",
            f"GPU {{{{ $labels.gpu }}}} on {host} is lost.",
            "gpuslo_gpu_up is 0: the GPU stopped answering NVML (XID 79, fell off the bus, "
            "or failing). The pods on it are degraded or down.",
        ),
        _alert(
            c.ALERT_XID_ERRORS,
            f"increase({c.GPU_XID_ERRORS.name}[10m]) > 0",
            "0m",
            "ticket",
            "gpu-health",
            f"XID {{{{ $labels.xid }}}} on GPU {{{{ $labels.gpu }}}} of {host}.",
            "The driver reported XID errors in the last 10 minutes.",
        ),
        _alert(
            c.ALERT_GPU_THERMAL_THROTTLING,
            f'rate({c.GPU_THROTTLE_SECONDS.name}{{reason="thermal"}}[5m]) > 0.1',
            "10m",
            "ticket",
            "gpu-health",
            f"GPU {{{{ $labels.gpu }}}} on {host} is thermally throttled.",
            "More than 10% of the time for 10 minutes: the GPU runs slower, and so does every "
            "replica it is part of.",
        ),
    ]
    fabric = [
        _alert(
            c.ALERT_NVLINK_CRC_ERRORS,
            f"sum by ({naming.host_label}, {c.LABEL_GPU}) "
            f"(rate({c.GPU_NVLINK_CRC_FLIT_ERRORS.name}[5m])) > 1",
            "10m",
            "ticket",
            "fabric-health",
            f"NVLink CRC errors on GPU {{{{ $labels.gpu }}}} of {host}.",
            "Over one CRC flit error a second for 10 minutes: collectives slow down.",
        ),
        _alert(
            c.ALERT_INFINIBAND_PORT_DOWN,
            f"{c.IB_STATE_ID.name} != 4",
            "2m",
            "page",
            "fabric-health",
            "InfiniBand port {{ $labels.device }}/{{ $labels.port }} is not active.",
            "The port's state is not ACTIVE (4) for 2 minutes: multi-node replicas stall.",
        ),
    ]
    return [
        {"name": name, "rules": rules}
        for name, rules in zip(c.HEALTH_RULE_GROUPS, (agent, gpu, fabric), strict=True)
    ]
