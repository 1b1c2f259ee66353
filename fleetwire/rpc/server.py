"""How every fleetwire gRPC server is started: the edge (``edge.edge_server``: options,
checked decoding, mapped errors) inside the telemetry (``telemetry.ServerTelemetry``: a
span per call, ``fleetwire_grpc_server_*`` metrics), the services, health checking (SERVING
for each service and for the server as a whole) and reflection (for grpcurl), on one
address, over TLS (``tls.ServerTls``) unless plaintext was asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fleetwire.rpc.edge import edge_server
from fleetwire.rpc.options import SERVER_OPTIONS
from fleetwire.rpc.telemetry import GrpcServerMetrics, ServerTelemetry
from fleetwire.rpc.tls import ServerTls


@dataclass(frozen=True, slots=True)
class Serving:
    server: grpc.aio.Server
    port: int  # the bound port (the asked one, or the one picked for port 0)


async def start_server(
    address: str,
    services: Sequence[str],
    add_services: Callable[[grpc.aio.Server], None],
    tls: ServerTls | None,
    *,
    max_streams_per_connection: int | None = None,
    connection_idle: timedelta | None = None,
    client_ca: bytes | None = None,
    metrics: GrpcServerMetrics | None = None,
) -> Serving:
    """Builds the server, lets ``add_services`` register the servicers of ``services``
    (full names), binds ``address`` (TLS with ``tls``, plaintext with None; with
    ``client_ca`` clients must present a certificate chaining to it) and starts; health
    says SERVING once it serves. ``connection_idle``: a connection without an open call
    for this long is closed. ``metrics``: where its calls are counted and timed (the
    process's registry); every call is traced either way."""
    options = list(SERVER_OPTIONS)
    if max_streams_per_connection is not None:
        options = [o for o in options if o[0] != "grpc.max_concurrent_streams"]
        options.append(("grpc.max_concurrent_streams", max_streams_per_connection))
    if connection_idle is not None:
        idle_ms = max(1, int(connection_idle.total_seconds() * 1000))
        options.append(("grpc.max_connection_idle_ms", idle_ms))
    served = (*services, health.SERVICE_NAME, reflection.SERVICE_NAME)
    if metrics is not None:
        metrics.expect(served)
    server = edge_server(options, outer=(ServerTelemetry(metrics),))
    add_services(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(served, server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials(client_ca=client_ca))
    await server.start()
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Serving(server, port)
