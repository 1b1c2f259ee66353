"""Exit 0 when a fleetwire gRPC server answers SERVING to ``grpc.health.v1.Health/Check``.

The container healthchecks of ``deploy/compose`` run it, and so can Kubernetes exec probes
on clusters whose native gRPC probe cannot speak TLS (before 1.37): every fleetwire port
serves TLS only, so the check verifies the server's certificate against ``--ca`` for
``--server-name`` like a node or a client would. Exit codes: 0 SERVING, 1 any other status,
2 no answer (refused, TLS failure, deadline). Needs only grpcio and grpcio-health-checking,
which fleetwire depends on.

    python grpc_health_check.py --ca /etc/fleetwire/tls/ca.pem --server-name bridge 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(
    address: str,
    *,
    ca_file: Path | None,
    server_name: str,
    insecure: bool,
    service: str,
    timeout: float,
) -> str:
    """The serving status's name (``SERVING``, ``NOT_SERVING``...) of ``service`` ("" is
    the whole server) at ``address``. Raises grpc.RpcError when the server does not answer."""
    if insecure:
        channel = grpc.insecure_channel(address)
    else:
        roots = ca_file.read_bytes() if ca_file is not None else None
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--ca", type=Path, help="PEM CA the server's certificate chains to")
    parser.add_argument("--server-name", default="", help="name the certificate must carry")
    parser.add_argument("--service", default="", help="service to ask for; default the server")
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline, seconds")
    parser.add_argument("--insecure", action="store_true", help="plaintext server")
    args = parser.parse_args(argv)
    try:
        status = check(
            args.address,
            ca_file=args.ca,
            server_name=args.server_name,
            insecure=args.insecure,
            service=args.service,
            timeout=args.timeout,
        )
    except grpc.RpcError as err:
        print(f"{args.address}: no answer: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
