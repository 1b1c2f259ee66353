"""Readiness from the mesh itself: which nodes a scheduler's MeshAdminService lists, and
since when, instead of reading processes' logs."""

from __future__ import annotations

from pathlib import Path

import grpc

from fleetwire.v1 import mesh_admin_service_pb2, mesh_admin_service_pb2_grpc


def _channel(address: str, ca_file: Path | None) -> grpc.Channel:
    if ca_file is None:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    return grpc.secure_channel(address, credentials)


def listed_nodes(
    scheduler_address: str, ca_file: Path | None = None
) -> dict[str, mesh_admin_service_pb2.NodeView]:
    """The nodes the mesh lists as connected, by id; empty while the scheduler does not
    answer yet. TLS verified against ``ca_file``; plaintext without one."""
    with _channel(scheduler_address, ca_file) as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        try:
            reply = stub.ListNodes(mesh_admin_service_pb2.ListNodesRequest(), timeout=5)
        except grpc.RpcError:
            return {}
    return {node.node_id: node for node in reply.nodes}


def connected_since(scheduler_address: str, node_id: str, ca_file: Path | None = None) -> float:
    """When the node's current stream was welcomed (Unix seconds); 0 when it is not
    listed. A reconnect makes it larger."""
    node = listed_nodes(scheduler_address, ca_file).get(node_id)
    return node.connected_at.ToMicroseconds() / 1e6 if node is not None else 0.0
