"""The node half of MeshAdminService: who may serve. Admission of waiting nodes, keys the
operator registers, grants of networks and subclouds, revocation. Every action is audited
with the operator who did it; the NodeStore holds the SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from fleetwire.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from fleetwire.domain.validation import NODE_ID
from fleetwire.messaging.topology import NETWORK_NAMES, SUBCLOUD_NAME
from fleetwire.protocol.signing import acceptable_public_key, key_id
from fleetwire.store.nodes import NodeStore, Registration
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2
from scheduler.admin_gate import AdminGate, Context
from scheduler.admin_store import AdminStore
from scheduler.validation import ValidationIssuer

MAX_VALIDATIONS_ASKED = 100

_REGISTRATION = {
    Registration.CREATED: mesh_admin_service_pb2.REGISTRATION_CREATED,
    Registration.UNCHANGED: mesh_admin_service_pb2.REGISTRATION_UNCHANGED,
    Registration.REPLACED: mesh_admin_service_pb2.REGISTRATION_REPLACED,
    Registration.REINSTATED: mesh_admin_service_pb2.REGISTRATION_REINSTATED,
}


def network_value(name: str) -> job_pb2.Network:
    """The Network value of a network's name (``mainnet``, ``testnet``)."""
    return cast("job_pb2.Network", job_pb2.Network.Value(f"NETWORK_{name.upper()}"))


def network_names(field: str, networks: Sequence[int]) -> list[str]:
    """The names of ``networks``; testnet alone when none (mainnet earns credits, so it is
    granted on purpose)."""
    names = [NETWORK_NAMES.get(n, "") for n in networks] or ["testnet"]
    if "" in names:
        raise InvalidArgument([FieldViolation(field, "NETWORK_MAINNET or NETWORK_TESTNET")])
    return sorted(set(names))


def _node_id(node_id: str) -> str:
    if not NODE_ID.match(node_id):
        raise InvalidArgument([FieldViolation("node_id", f"must match {NODE_ID.pattern}")])
    return node_id


class NodeAdmin:
    """ListPendingNodes, ApproveNode, RevokeNode, RegisterNode, ListRegisteredNodes,
    GrantNode and ValidateNode (mixed into MeshAdminService)."""

    _gate: AdminGate
    _nodes: NodeStore
    _store: AdminStore
    _validation: ValidationIssuer

    async def ListPendingNodes(  # noqa: N802 - gRPC method name
        self, request: mesh_admin_service_pb2.ListPendingNodesRequest, context: Context
    ) -> mesh_admin_service_pb2.ListPendingNodesResponse:
        await self._gate.authorize(context, "ListPendingNodes")
        views = []
        for row in await self._nodes.requests():
            view = mesh_admin_service_pb2.PendingNode(
                node_id=row["node_id"],
                key_id=row["key_id"],
                region=row["region"],
                models=[m for m in row["models"].split(",") if m],
            )
            view.first_seen.FromDatetime(row["first_seen_at"])
            view.last_seen.FromDatetime(row["last_seen_at"])
            views.append(view)
        return mesh_admin_service_pb2.ListPendingNodesResponse(nodes=views)

    async def ApproveNode(  # noqa: N802
        self, request: mesh_admin_service_pb2.ApproveNodeRequest, context: Context
    ) -> mesh_admin_service_pb2.ApproveNodeResponse:
        operator = await self._gate.authorize(context, "ApproveNode")
        names = network_names("networks", request.networks)
        outcome = await self._nodes.approve(request.node_id, request.key_id)
        if outcome is None:
            raise NotFound(f"no request of node {request.node_id} with key {request.key_id}")
        if outcome is Registration.CONFLICT:
            raise FailedPrecondition(
                f"node {request.node_id} is registered with another key", reason="KEY_MISMATCH"
            )
        await self._grant_networks(request.node_id, names)
        await self._gate.audit(
            operator, "node.approve", request.node_id, {"key_id": request.key_id, "networks": names}
        )
        return mesh_admin_service_pb2.ApproveNodeResponse(
            node_id=request.node_id,
            key_id=request.key_id,
            networks=[network_value(n) for n in names],
        )

    async def RegisterNode(  # noqa: N802
        self, request: mesh_admin_service_pb2.RegisterNodeRequest, context: Context
    ) -> mesh_admin_service_pb2.RegisterNodeResponse:
        operator = await self._gate.authorize(context, "RegisterNode")
        node_id = _node_id(request.node_id)
        if not acceptable_public_key(request.public_key):
            raise InvalidArgument(
                [
                    FieldViolation(
                        "public_key",
                        "a raw ed25519 public key: 32 bytes, a canonical point not of small order",
                    )
                ]
            )
        names = network_names("networks", request.networks)
        outcome = await self._nodes.register(node_id, request.public_key, replace=request.replace)
        if outcome is Registration.CONFLICT:
            raise FailedPrecondition(
                f"node {node_id} is registered with another key; to rotate keys register with "
                "replace (fleetwire admin nodes register --replace)",
                reason="KEY_MISMATCH",
            )
        await self._grant_networks(node_id, names)
        kid = key_id(request.public_key)
        await self._gate.audit(
            operator,
            "node.register",
            node_id,
            {"key_id": kid, "registration": outcome.value, "networks": names},
        )
        return mesh_admin_service_pb2.RegisterNodeResponse(
            node_id=node_id,
            key_id=kid,
            registration=_REGISTRATION[outcome],
            networks=[network_value(n) for n in names],
        )

    async def _grant_networks(self, node_id: str, names: list[str]) -> None:
        for network in names:
            await self._nodes.grant_network(node_id, network)

    async def ListRegisteredNodes(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListRegisteredNodesRequest, context: Context
    ) -> mesh_admin_service_pb2.ListRegisteredNodesResponse:
        await self._gate.authorize(context, "ListRegisteredNodes")
        grants = await self._nodes.all_grants()
        offences = await self._store.offences_24h()
        exclusions = await self._store.exclusions()
        views = []
        for record in await self._nodes.list_nodes():
            networks, subclouds = grants.get(record.node_id, (frozenset(), frozenset()))
            view = mesh_admin_service_pb2.RegisteredNode(
                node_id=record.node_id,
                key_id=record.key_id,
                public_key=record.public_key,
                revoked=record.revoked,
                networks=[network_value(n) for n in sorted(networks)],
                subclouds=sorted(subclouds),
            )
            view.registered_at.FromDatetime(record.registered_at)
            if record.last_seen_at is not None:
                view.last_seen.FromDatetime(record.last_seen_at)
            if record.node_id in exclusions:
                view.excluded_until.FromDatetime(exclusions[record.node_id])
            view.offences_24h.extend(
                mesh_admin_service_pb2.OffenceCount(offence=o, count=n)
                for o, n in offences.get(record.node_id, [])
            )
            views.append(view)
        return mesh_admin_service_pb2.ListRegisteredNodesResponse(nodes=views)

    async def GrantNode(  # noqa: N802
        self, request: mesh_admin_service_pb2.GrantNodeRequest, context: Context
    ) -> mesh_admin_service_pb2.GrantNodeResponse:
        operator = await self._gate.authorize(context, "GrantNode")
        node_id = _node_id(request.node_id)
        which = request.WhichOneof("grant")
        if which == "subcloud":
            if not SUBCLOUD_NAME.fullmatch(request.subcloud):
                raise InvalidArgument(
                    [FieldViolation("subcloud", f"must match {SUBCLOUD_NAME.pattern}")]
                )
            what = {"subcloud": request.subcloud}
            if request.withdraw:
                changed = await self._nodes.withdraw_subcloud(node_id, request.subcloud)
            else:
                changed = await self._nodes.grant_subcloud(node_id, request.subcloud)
        elif which == "network" and request.network in NETWORK_NAMES:
            what = {"network": NETWORK_NAMES[request.network]}
            changed = await self._nodes.grant_network(
                node_id, what["network"], withdraw=request.withdraw
            )
        else:
            raise InvalidArgument(
                [FieldViolation("grant", "a subcloud, or NETWORK_MAINNET or NETWORK_TESTNET")]
            )
        action = "node.withdraw" if request.withdraw else "node.grant"
        await self._gate.audit(operator, action, node_id, what)
        return mesh_admin_service_pb2.GrantNodeResponse(node_id=node_id, changed=changed)

    async def ValidateNode(  # noqa: N802
        self, request: mesh_admin_service_pb2.ValidateNodeRequest, context: Context
    ) -> mesh_admin_service_pb2.ValidateNodeResponse:
        operator = await self._gate.authorize(context, "ValidateNode")
        node_id = _node_id(request.node_id)
        if not 1 <= request.jobs <= MAX_VALIDATIONS_ASKED:
            raise InvalidArgument([FieldViolation("jobs", f"must be 1 to {MAX_VALIDATIONS_ASKED}")])
        owed = self._validation.owe(node_id, request.jobs)
        if owed is None:
            raise FailedPrecondition(
                f"node {node_id} is not connected to this scheduler", reason="NODE_NOT_CONNECTED"
            )
        await self._gate.audit(operator, "node.validate", node_id, {"jobs": request.jobs})
        return mesh_admin_service_pb2.ValidateNodeResponse(owed=owed)

    async def RevokeNode(  # noqa: N802
        self, request: mesh_admin_service_pb2.RevokeNodeRequest, context: Context
    ) -> mesh_admin_service_pb2.RevokeNodeResponse:
        operator = await self._gate.authorize(context, "RevokeNode")
        if not await self._nodes.revoke(request.node_id):
            raise NotFound(f"node {request.node_id} not found")
        await self._gate.audit(operator, "node.revoke", request.node_id, {})
        return mesh_admin_service_pb2.RevokeNodeResponse(node_id=request.node_id)
