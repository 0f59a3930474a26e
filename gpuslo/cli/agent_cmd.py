"""``gpuslo agent``: the node agent's command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from typing import Any

from gpuslo.cli.dcgm_names import add_dcgm_names, naming_from
from gpuslo.foundation import conventions as c

COLLECTORS = (c.COLLECTOR_GPU, c.COLLECTOR_INFINIBAND)

DESCRIPTION = """\
Run the gpuslo node agent: sample GPUs (NVML) and InfiniBand/RoCE ports (sysfs) on their
own interval and serve the latest snapshot at /metrics (Prometheus text, or OpenMetrics when
the scraper asks for it) and /healthz. GPU series use dcgm-exporter's names and labels.
Inference servers (static targets or annotated pods) and apps pushing OTLP GenAI metrics are
folded into one set of request series (gen_ai_server_*); see docs/requests.md.
"""

EPILOG = """\
examples:
  gpuslo agent                                   serve on :9835 with NVML and /sys
  gpuslo agent --once                            print one scrape and exit
  gpuslo agent --gpu-backend sim --sim-gpus 8    a simulated 8-GPU node, no GPU needed
  gpuslo agent --no-collector.infiniband         GPUs only
  gpuslo agent --dcgm-names current              dcgm-exporter 4.9.0+ names and base units
  gpuslo agent --once --record-gpu gpu.json      record NVML samples as a test fixture
  gpuslo agent --dra --node-name "$NODE_NAME"    attribute GPUs claimed through DRA too
  gpuslo agent --server-target 'http://127.0.0.1:8000/metrics;namespace=llm;pod=vllm-0'
                                                 re-expose a vLLM server's request metrics
  gpuslo agent --discover-pods --otlp-listen 0.0.0.0:4318
                                                 scrape annotated pods on $NODE_NAME and accept
                                                 OTLP GenAI metrics from instrumented apps
"""


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def add_parser(sub: Any) -> None:
    """Register ``agent`` on the top-level subparsers."""
    p = sub.add_parser(
        "agent",
        help="run the node agent (GPU and fabric telemetry)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--listen",
        default=f"0.0.0.0:{c.AGENT_DEFAULT_PORT}",
        metavar="HOST:PORT",
        help="address to serve /metrics and /healthz on (default: %(default)s; port 0 = any)",
    )
    p.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    p.add_argument(
        "--openmetrics", action="store_true", help="with --once: print OpenMetrics, not text"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="sampling interval per collector (default: %(default)s)",
    )
    p.add_argument(
        "--max-series",
        type=int,
        default=20_000,
        metavar="N",
        help="cap on series per collector; the excess is dropped and counted "
        "(default: %(default)s)",
    )
    for name in COLLECTORS:
        p.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            default=True,
            action=argparse.BooleanOptionalAction,
            help=f"enable the {name} collector (default: on)",
        )
    p.add_argument(
        "--gpu-backend",
        choices=("nvml", "sim", "fixture"),
        default="nvml",
        help="where GPU samples come from (default: %(default)s)",
    )
    p.add_argument("--sim-gpus", type=int, default=8, metavar="N", help="sim backend: GPU count")
    p.add_argument(
        "--sim-profile",
        default="H100",
        choices=("H100", "H200", "A100"),
        help="sim backend: GPU model (default: %(default)s)",
    )
    p.add_argument("--gpu-fixture", metavar="FILE", help="fixture backend: a recording to replay")
    p.add_argument(
        "--record-gpu",
        metavar="FILE",
        help="with --once: also write the GPU backend's samples to FILE (a fixture recording)",
    )
    p.add_argument(
        "--record-frames",
        type=int,
        default=3,
        metavar="N",
        help="with --record-gpu: samples to record, one interval apart (default: %(default)s)",
    )
    p.add_argument(
        "--server-target",
        action="append",
        default=[],
        metavar="URL[;label=value...]",
        help="an inference server's /metrics to re-expose under the canonical gen_ai_server_* "
        "names (vLLM, SGLang, Dynamo, Triton, TGI recognised); labels such as namespace=, pod= and "
        "server= (to skip recognition) follow after ';'. Repeat for more targets",
    )
    p.add_argument(
        "--server-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="deadline for a target's whole response: connect, headers and body; a target "
        "slower than that (a trickle included) is down for that scrape (default: %(default)s)",
    )
    p.add_argument(
        "--server-max-bytes",
        type=int,
        default=32 * 2**20,
        metavar="N",
        help="read cap on a target's body; a larger one is not exported and the target is "
        "down with reason too_large (default: %(default)s, 32 MiB)",
    )
    p.add_argument(
        "--discover-pods",
        action="store_true",
        help='also scrape the pods on this node annotated gpuslo.io/scrape="true" (port from '
        "gpuslo.io/port; see docs/requests.md); needs list on pods (deploy/agent/rbac.yaml)",
    )
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        metavar="NAME",
        help="with --discover-pods or --dra: the node whose pods and ResourceSlices to list "
        "(default: $NODE_NAME)",
    )
    p.add_argument(
        "--discovery-refresh",
        type=float,
        default=30.0,
        metavar="S",
        help="with --discover-pods: list the pods again every S seconds (default: %(default)s)",
    )
    p.add_argument(
        "--otlp-listen",
        metavar="HOST:PORT",
        help=f"accept OTLP/HTTP metrics (POST /v1/metrics, protobuf or JSON) on this address "
        f"and map the GenAI metrics into the canonical series (usual port: {c.OTLP_DEFAULT_PORT}; "
        "off by default)",
    )
    p.add_argument(
        "--otlp-grpc-listen",
        metavar="HOST:PORT",
        help="accept OTLP/gRPC metrics (MetricsService/Export, gzip or not) on this address, "
        "into the same receiver as --otlp-listen (usual port: "
        f"{c.OTLP_GRPC_DEFAULT_PORT}; off by default). The receiver runs in a process of its "
        "own, so that ingest does not hold up a scrape",
    )
    p.add_argument(
        "--otlp-max-inflight",
        type=int,
        default=8,
        metavar="N",
        help="OTLP exports read, decoded or waiting to be folded in at once (HTTP and gRPC "
        "together); a sender beyond them gets 429 (HTTP) or UNAVAILABLE (gRPC) with a retry "
        "delay, and nothing of its export is kept (default: %(default)s)",
    )
    p.add_argument(
        "--otlp-max-streams",
        type=int,
        default=100_000,
        metavar="N",
        help="cap on OTLP streams tracked; points of new streams beyond it are rejected "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--otlp-max-streams-per-sender",
        type=int,
        default=10_000,
        metavar="N",
        help="cap on OTLP streams tracked per sender (resource), of any temporality; points of "
        "its new streams beyond it are rejected (default: %(default)s)",
    )
    p.add_argument(
        "--otlp-max-series",
        type=int,
        default=20_000,
        metavar="N",
        help="budget of samples the OTLP receiver exposes (canonical and pass-through series), "
        "apart from --max-series and the agent's own families; points that would add a series "
        "beyond it are rejected (default: %(default)s)",
    )
    p.add_argument(
        "--otlp-max-body",
        type=int,
        default=16 * 2**20,
        metavar="BYTES",
        help="largest OTLP request body, as sent; larger ones get 413 before they are read "
        "(OTLP/gRPC: the largest message, as sent and after gzip; RESOURCE_EXHAUSTED) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--otlp-max-decompressed",
        type=int,
        default=64 * 2**20,
        metavar="BYTES",
        help="largest OTLP request body after gzip; inflating stops there with 413 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--tenant-cap",
        type=int,
        default=100,
        metavar="N",
        help="distinct tenants that keep their own series; later ones become "
        'tenant="__other__", counted in gpuslo_tenant_overflow_total (default: %(default)s)',
    )
    p.add_argument("--path.sysfs", dest="sysfs", default="/sys", help="sysfs mount point")
    p.add_argument("--path.procfs", dest="procfs", default="/proc", help="procfs mount point")
    p.add_argument(
        "--pod-resources-socket",
        metavar="PATH",
        default="/var/lib/kubelet/pod-resources/kubelet.sock",
        help="kubelet pod-resources socket for GPU->pod attribution (skipped when absent)",
    )
    p.add_argument(
        "--dra",
        action="store_true",
        help="also attribute GPUs allocated through Dynamic Resource Allocation: the kubelet "
        "names each claimed device, this node's ResourceSlices give its GPU or MIG UUID; needs "
        "--node-name and list on resourceslices (resource.k8s.io); see docs/attribution.md",
    )
    p.add_argument(
        "--dra-driver",
        action="append",
        metavar="NAME",
        help="with --dra: a DRA driver whose devices are GPUs; repeat for more "
        "(default: gpu.nvidia.com, NVIDIA's DRA driver)",
    )
    p.add_argument(
        "--dra-refresh",
        type=float,
        default=60.0,
        metavar="S",
        help="with --dra: list this node's ResourceSlices again every S seconds; a failed "
        "listing keeps the last device map (default: %(default)s)",
    )
    p.add_argument(
        "--hostname",
        default=socket.gethostname(),
        help="value of the host label on GPU series (Hostname, or hostname with "
        "--dcgm-names current)",
    )
    add_dcgm_names(p)
    p.add_argument(
        "--demo-seconds",
        type=float,
        metavar="S",
        help="serve for S seconds, print one scrape fetched over HTTP, and exit",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity (default: %(default)s)",
    )
    p.set_defaults(func=run)


def _parse_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{flag}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _build_collectors(args: argparse.Namespace) -> list[Any]:
    from gpuslo.collectors import GpuCollector, InfinibandCollector
    from gpuslo.collectors.backends import FixtureBackend, NvmlBackend, SimBackend
    from gpuslo.collectors.tenants import TenantCap

    if args.tenant_cap < 0:
        raise UsageError("--tenant-cap: must be >= 0")
    tenants = TenantCap(args.tenant_cap)
    out: list[Any] = []
    if args.collector_gpu:
        backend: Any
        if args.gpu_backend == "sim":
            if args.sim_gpus < 0:
                raise UsageError("--sim-gpus: must be >= 0")
            backend = SimBackend(count=args.sim_gpus, profile=args.sim_profile, node=args.hostname)
        elif args.gpu_backend == "fixture":
            if not args.gpu_fixture:
                raise UsageError("--gpu-backend fixture needs --gpu-fixture FILE")
            backend = FixtureBackend(args.gpu_fixture)
        else:
            backend = NvmlBackend()
        attributor = _attributor(args)
        out.append(
            GpuCollector(
                backend,
                hostname=args.hostname,
                attributor=attributor,
                procfs=args.procfs,
                naming=naming_from(args),
            )
        )
        if attributor.slices is not None:
            out.append(attributor)  # the attribution collector: kubelet and DRA health
    if args.collector_infiniband:
        out.append(InfinibandCollector(args.sysfs))
    if args.server_target or args.discover_pods:
        from gpuslo.collectors.servers import ServerCollector

        if args.server_timeout <= 0:
            raise UsageError("--server-timeout: must be > 0 seconds")
        if args.server_max_bytes < 1:
            raise UsageError("--server-max-bytes: must be >= 1")
        targets = [_server_target(text) for text in args.server_target]
        discovery = _discovery(args) if args.discover_pods else None
        out.append(
            ServerCollector(
                targets,
                timeout=args.server_timeout,
                discovery=discovery,
                tenants=tenants,
                max_bytes=args.server_max_bytes,
            )
        )
    if args.otlp_listen or args.otlp_grpc_listen:
        from gpuslo.collectors.otlp_process import IngestConfig, OtlpIngest

        limits = {}
        for flag in (
            "otlp_max_streams",
            "otlp_max_streams_per_sender",
            "otlp_max_series",
            "otlp_max_body",
            "otlp_max_decompressed",
            "otlp_max_inflight",
        ):
            if getattr(args, flag) < 1:
                raise UsageError(f"--{flag.replace('_', '-')}: must be >= 1")
            limits[flag.removeprefix("otlp_")] = getattr(args, flag)
        config = IngestConfig(
            http=_parse_listen(args.otlp_listen, "--otlp-listen") if args.otlp_listen else None,
            grpc=(
                _parse_listen(args.otlp_grpc_listen, "--otlp-grpc-listen")
                if args.otlp_grpc_listen
                else None
            ),
            receiver=limits,
            tenant_cap=args.tenant_cap,
            log_level=logging.getLevelName(args.log_level.upper()),
        )
        out.append(OtlpIngest(config, tenants))
    if args.server_target or args.discover_pods or args.otlp_listen or args.otlp_grpc_listen:
        out.append(tenants)  # gpuslo_tenant_overflow_total and friends
    return out


def _discovery(args: argparse.Namespace) -> Any:
    from kubernetes.config import ConfigException

    from gpuslo.collectors.discovery import PodDiscovery

    if not args.node_name:
        raise UsageError("--discover-pods needs --node-name (or $NODE_NAME from the downward API)")
    if args.discovery_refresh <= 0:
        raise UsageError("--discovery-refresh: must be > 0 seconds")
    try:
        return PodDiscovery.from_environment(args.node_name, args.discovery_refresh)
    except (ConfigException, OSError) as err:
        raise UsageError(
            f"--discover-pods: no Kubernetes credentials (not in a pod, no kubeconfig): {err}"
        ) from err


def _attributor(args: argparse.Namespace) -> Any:
    """The kubelet attributor; with --dra, reading this node's ResourceSlices as well."""
    from gpuslo.collectors.attribution import (
        DEFAULT_DRA_DRIVER,
        PodResourcesAttributor,
        ResourceSliceMap,
    )

    if not args.dra:
        return PodResourcesAttributor(args.pod_resources_socket)
    from kubernetes.config import ConfigException

    if not args.node_name:
        raise UsageError("--dra needs --node-name (or $NODE_NAME from the downward API)")
    if args.dra_refresh <= 0:
        raise UsageError("--dra-refresh: must be > 0 seconds")
    drivers = args.dra_driver or [DEFAULT_DRA_DRIVER]
    try:
        slices = ResourceSliceMap.from_environment(args.node_name, drivers, args.dra_refresh)
    except (ConfigException, OSError) as err:
        raise UsageError(
            f"--dra: no Kubernetes credentials (not in a pod, no kubeconfig): {err}"
        ) from err
    return PodResourcesAttributor(args.pod_resources_socket, slices=slices)


def _server_target(text: str) -> Any:
    """``URL[;label=value...]`` -> Target; a clear error for anything else."""
    from urllib.parse import urlparse

    from gpuslo.collectors.servers import ADAPTERS, Target

    url, *pairs = text.split(";")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--server-target: expected an http(s) URL, got {url!r}")
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--server-target: expected label=value after ';', got {pair!r}")
        labels[key.strip()] = value.strip()
    server = labels.pop("server", None)
    if server is not None and server not in {a.server for a in ADAPTERS}:
        known = ", ".join(a.server for a in ADAPTERS)
        raise UsageError(f"--server-target: unknown server {server!r}; known: {known}")
    return Target(url, tuple(sorted(labels.items())), server)


def run(args: argparse.Namespace) -> int:
    """Run the agent as the arguments ask."""
    from gpuslo.collectors import Agent
    from gpuslo.collectors.scrape_process import ScrapeProcess

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.interval <= 0:
        raise UsageError("--interval: must be > 0 seconds")
    if args.max_series < 1:
        raise UsageError("--max-series: must be >= 1")
    if args.record_gpu and not args.once:
        raise UsageError("--record-gpu works with --once")
    host, port = _parse_listen(args.listen)
    for flag, value in (
        ("--otlp-listen", args.otlp_listen),
        ("--otlp-grpc-listen", args.otlp_grpc_listen),
    ):
        if value and args.once:
            raise UsageError(f"{flag} needs a serving agent, not --once")
    collectors = _build_collectors(args)
    agent = Agent(collectors, interval=args.interval, max_series=args.max_series)
    if args.once:
        if args.record_gpu:
            return _record(agent, args)
        agent.sample_all()
        sys.stdout.write(agent.render(openmetrics=args.openmetrics))
        agent.stop()
        return 0
    # /metrics is served from a process of its own (scrape_process.py): a scrape never
    # waits for the GIL behind the sampling threads.
    server = ScrapeProcess(
        agent, host, port, log_level=logging.getLevelName(args.log_level.upper())
    )
    try:
        server.bind()
    except OSError as err:
        why = err.strerror or str(err)
        raise UsageError(f"--listen: cannot listen on {args.listen}: {why}") from err
    otlp = None  # the OTLP receiver is a collector: its process stops with the agent
    ingest = next((col for col in collectors if col.name == c.COLLECTOR_OTLP), None)
    if ingest is not None:
        from gpuslo.collectors.otlp_process import IngestFailed

        try:
            ingest.start()
        except IngestFailed as err:
            server.stop()
            value = args.otlp_listen if err.flag == "--otlp-listen" else args.otlp_grpc_listen
            raise UsageError(f"{err.flag}: cannot listen on {value}: {err}") from err
    # The sampling threads share the GIL (the scrape and OTLP ingest have processes of
    # their own): a 0.5 ms switch interval (Python's default is 5 ms) keeps one busy
    # collector from holding up the others' deadlines.
    sys.setswitchinterval(0.0005)
    # SIGTERM (what Kubernetes sends) and Ctrl-C both end the agent cleanly, exit status 0.
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()  # signals reach only it
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main else None
    agent.start()
    server.start()
    bound = "{}:{}".format(*server.address)
    log = logging.getLogger(__name__)
    log.info(
        "serving on http://%s/metrics (collectors: %s, every %ss)",
        bound,
        ", ".join(col.name for col in collectors) or "none",
        args.interval,
    )
    if ingest is not None:
        addresses = list(ingest.addresses)
        if args.otlp_listen:
            log.info("OTLP/HTTP metrics on http://%s:%s/v1/metrics", *addresses.pop(0))
        if args.otlp_grpc_listen:
            log.info("OTLP/gRPC metrics on %s:%s", *addresses.pop(0))
    status = 0
    try:
        with contextlib.suppress(KeyboardInterrupt):
            if args.demo_seconds is not None:
                if not stop.wait(max(0.0, args.demo_seconds)):
                    with urllib.request.urlopen(f"http://{bound}/metrics", timeout=5) as resp:
                        sys.stdout.write(resp.read().decode())
            else:
                while not stop.wait(1.0):
                    if not server.alive:
                        log.error("the scrape process exited: stopping")
                        status = 1
                        break
    finally:
        _shutdown(agent, server, otlp, log)
        if main:
            signal.signal(signal.SIGTERM, previous)
    return status


def _shutdown(agent: Any, server: Any, otlp: Any, log: logging.Logger) -> None:
    """Stop serving, then sampling: within a second or two, whatever the targets do."""
    log.info("shutting down")
    started = time.monotonic()
    if otlp is not None:
        otlp.stop()
    server.stop()
    # Close the target scrapes first: a sampling thread waiting on a stuck target ends now,
    # not at its deadline (the agent closes them again after joining, harmlessly).
    for col in agent.collectors:
        if col.name == c.COLLECTOR_SERVERS:
            col.close()
    agent.stop()
    log.info("stopped in %.1fs", time.monotonic() - started)


def _record(agent: Any, args: argparse.Namespace) -> int:
    from gpuslo.collectors import GpuCollector
    from gpuslo.collectors.backends import write_recording

    gpu = next((col for col in agent.collectors if isinstance(col, GpuCollector)), None)
    if gpu is None:
        raise UsageError("--record-gpu needs the gpu collector")
    frames, xids = [], []
    driver = gpu.backend.open()
    try:
        for i in range(max(1, args.record_frames)):
            if i:
                time.sleep(args.interval)
            frames.append(gpu.backend.sample())
            xids += gpu.backend.drain_xid_events()
    finally:
        gpu.backend.close()
    write_recording(
        args.record_gpu,
        frames,
        driver.driver_version,
        xids,
        meta={
            "hostname": args.hostname,
            "backend": gpu.backend.name,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    sys.stderr.write(
        f"recorded {len(frames)} frame(s) of {len(frames[0])} GPU(s) to {args.record_gpu}\n"
    )
    return 0
