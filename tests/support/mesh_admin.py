"""The admin port in tests: operator keys made straight in a mesh's database, channels that
send one, and readiness from the mesh itself (which nodes a scheduler's MeshAdminService
lists, and since when) instead of reading processes' logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from pydantic import SecretStr

from fleetwire.process.settings import PostgresSettings
from fleetwire.store.db import open_pool
from fleetwire.store.operators import OperatorStore, Role
from fleetwire.v1 import mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from tests.support.tls import client_credentials


async def create_operator_key(dsn: str, role: str = "admin", name: str = "tests") -> str:
    """A new operator key in the mesh's database (created and migrated if need be)."""
    pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn)))
    try:
        issued = await OperatorStore(pool).create_key(name, Role.of(role), actor="tests")
    finally:
        await pool.close()
    return issued.secret


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


class SendsOperatorKey(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <key>`` to every unary call of an aio channel."""

    def __init__(self, key: str) -> None:
        self._metadata = bearer(key)

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        metadata = (*(client_call_details.metadata or ()), *self._metadata)
        return await continuation(client_call_details._replace(metadata=metadata), request)


def _channel(address: str, ca_file: Path | None) -> grpc.Channel:
    if ca_file is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, client_credentials(ca_file))


def listed_nodes(
    admin_address: str, key: str, ca_file: Path | None = None
) -> dict[str, mesh_admin_service_pb2.NodeView]:
    """The nodes the mesh lists as connected, by id, asked on a scheduler's admin port with
    operator key ``key``; empty while the scheduler does not answer yet. TLS verified
    against ``ca_file``; plaintext without one."""
    with _channel(admin_address, ca_file) as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        try:
            reply = stub.ListNodes(
                mesh_admin_service_pb2.ListNodesRequest(), timeout=5, metadata=bearer(key)
            )
        except grpc.RpcError:
            return {}
    return {node.node_id: node for node in reply.nodes}


def connected_since(
    admin_address: str, key: str, node_id: str, ca_file: Path | None = None
) -> float:
    """When the node's current stream was welcomed (Unix seconds); 0 when it is not
    listed. A reconnect makes it larger."""
    node = listed_nodes(admin_address, key, ca_file).get(node_id)
    return node.connected_at.ToMicroseconds() / 1e6 if node is not None else 0.0
