"""OTLP/gRPC metrics receiver: ``opentelemetry.proto.collector.metrics.v1.MetricsService/Export``
on ``host:port`` (usually 4317), beside OTLP/HTTP and into the same ``OtlpReceiver``.

One code path with OTLP/HTTP: the same decoding (``otlp.decode``), the same fold
(``OtlpReceiver.export``: whole or nothing, ``partial_success`` for rejected points), the same
in-flight slots (``OtlpReceiver.slot``). What differs is the status each outcome gets, as the
OTLP specification's "OTLP/gRPC" section asks:

==========================================  =================================================
outcome                                     gRPC status
==========================================  =================================================
folded in (some points maybe rejected)      ``OK``, with ``partial_success`` when some were
bytes that are not an export, or an export  ``INVALID_ARGUMENT`` (not retryable: the same data
that cannot be folded in                    would fail again; nothing of it was kept)
every in-flight slot taken (throttling)     ``UNAVAILABLE`` with a ``google.rpc.RetryInfo``
                                            delay in ``grpc-status-details-bin`` (retryable)
message over ``max_message`` bytes (before  ``RESOURCE_EXHAUSTED`` from gRPC itself (not
or after gzip), or over the RPC queue       retried without RetryInfo: the sender's batch is
                                            too large)
==========================================  =================================================

The request is registered with raw bytes (no deserializer) so that bytes which do not parse
get ``INVALID_ARGUMENT`` from the receiver, not the ``INTERNAL`` that gRPC gives a failed
deserializer. gzip (``grpc-encoding: gzip``) is inflated by gRPC, and gRPC checks the
inflated size against the same ``max_message``.
"""

from __future__ import annotations

import logging
import socket
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from .otlp import RETRY_AFTER, Busy, ExportFailed, NotAnExport, OtlpReceiver, decode

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
METHOD = "Export"
MAX_SEND = 1 << 20  # an ExportMetricsServiceResponse is a few bytes
STATUS_DETAILS = "grpc-status-details-bin"


def _retry_details(message: str) -> bytes:
    """A ``google.rpc.Status`` (UNAVAILABLE) carrying a RetryInfo, as gRPC's rich error
    model sends it in the ``grpc-status-details-bin`` trailer."""
    info = AnyPb()
    info.Pack(RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER)))
    status = Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[info])
    details: bytes = status.SerializeToString()
    return details


def _check_free(host: str, port: int) -> None:
    """Raise the OSError a bind of ``host:port`` gets (gRPC's own is a log line and 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


class _Export:
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def __call__(self, body: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        receiver = self.receiver
        try:
            with receiver.slot():
                response = receiver.export(decode(body))
        except Busy as err:
            receiver.count_request("UNAVAILABLE")
            context.set_trailing_metadata(((STATUS_DETAILS, _retry_details(str(err))),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except (NotAnExport, ExportFailed) as err:
            receiver.count_request("INVALID_ARGUMENT")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        receiver.count_request("OK")
        return response


class OtlpGrpcServer:
    """OTLP/gRPC on ``host:port`` (port 0 picks a free one), served by gRPC's own threads.

    ``max_message`` bounds one message, as sent and after gzip (default: the receiver's
    ``max_body``); at most ``max_inflight`` RPCs run and as many more wait, so what the server
    holds is bounded by ``2 * max_inflight`` messages; beyond that gRPC answers
    ``RESOURCE_EXHAUSTED`` without reading the message."""

    def __init__(
        self, receiver: OtlpReceiver, host: str, port: int, max_message: int | None = None
    ) -> None:
        limit = receiver.max_body if max_message is None else max_message
        if limit < 1:
            raise ValueError("max_message must be >= 1")
        if port:
            _check_free(host, port)
        workers = receiver.max_inflight
        self.max_message = limit
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", MAX_SEND),
                ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared one
            ],
            maximum_concurrent_rpcs=2 * workers,
        )
        handler = grpc.unary_unary_rpc_method_handler(
            _Export(receiver),
            request_deserializer=None,  # raw bytes: decoded (and refused) by the receiver
            response_serializer=ExportMetricsServiceResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(target)
        except RuntimeError as err:  # grpcio raises when the port cannot be bound
            raise OSError(98, f"cannot bind {target}: {err}") from None
        if not bound:
            raise OSError(98, f"cannot bind {target}")
        self._host, self._port = host, bound
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        return self._host, self._port

    def start(self) -> None:
        self._server.start()
        self._started = True

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving: RPCs in progress get ``grace`` seconds to finish."""
        event: Any = self._server.stop(grace)
        if self._started:
            event.wait(grace + 1)
