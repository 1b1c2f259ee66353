"""The keys the mesh registered for a node (``JobService.ListNodeKeys`` for tenants,
``MeshAdminService.ListNodeKeyHistory`` for operators): what a client needs to verify a
result offline with a key it did not get from the node itself. Read from the key history
PostgreSQL keeps for every node (``node_keys``, migration 0014)."""

from __future__ import annotations

from fleetwire.domain.errors import FieldViolation, InvalidArgument, NotFound
from fleetwire.domain.validation import NODE_ID
from fleetwire.store.nodes import NodeStore
from fleetwire.v1 import job_service_pb2


class NodeKeys:
    """Answers ListNodeKeys from the node store."""

    def __init__(self, nodes: NodeStore) -> None:
        self._nodes = nodes

    async def list(self, node_id: str) -> job_service_pb2.ListNodeKeysResponse:
        if not NODE_ID.match(node_id):
            raise InvalidArgument([FieldViolation("node_id", f"must match {NODE_ID.pattern}")])
        rows = await self._nodes.key_history(node_id)
        if not rows:
            raise NotFound(f"no key was ever registered for node {node_id}")
        keys = []
        for row in rows:
            key = job_service_pb2.NodeKey(key_id=row["key_id"], public_key=bytes(row["public_key"]))
            key.valid_from.FromDatetime(row["valid_from"])
            for name in ("valid_until", "revoked_at"):
                if row[name] is not None:
                    getattr(key, name).FromDatetime(row[name])
            keys.append(key)
        return job_service_pb2.ListNodeKeysResponse(node_id=node_id, keys=keys)
