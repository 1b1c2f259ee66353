"""The access half of MeshAdminService: tenants' API keys and policies, operators' keys and
the audit log. Secrets appear once, in the answer that creates them; the stores keep
hashes. Every action is audited with the operator who did it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fleetwire.domain.errors import FieldViolation, InvalidArgument, NotFound
from fleetwire.messaging.topology import NETWORK_NAMES, SUBCLOUD_NAME
from fleetwire.store.operators import OperatorStore, Role
from fleetwire.store.tenants import TENANT_PATTERN, TenantLimits, TenantStore
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2
from scheduler.admin_gate import AdminGate, Context, actor_of
from scheduler.admin_nodes import network_value
from scheduler.validation_store import VALIDATION_TENANT

_ROLES = {
    mesh_admin_service_pb2.OPERATOR_ROLE_VIEWER: Role.VIEWER,
    mesh_admin_service_pb2.OPERATOR_ROLE_ADMIN: Role.ADMIN,
}
_ROLE_VALUES = {role.label: value for value, role in _ROLES.items()}
POLICY_FIELDS = ("priorities", "networks", "subclouds", "credit_limit_micro_credits")


def _stamp(target: Any, when: datetime | None) -> None:
    if when is not None:
        target.FromDatetime(when)


def _tenant(tenant: str, field: str = "tenant") -> str:
    if not TENANT_PATTERN.match(tenant):
        raise InvalidArgument([FieldViolation(field, f"must match {TENANT_PATTERN.pattern}")])
    return tenant


def _priority_names(classes: Iterable[int]) -> list[str]:
    names = []
    for value in classes:
        if (
            value == job_pb2.PRIORITY_CLASS_UNSPECIFIED
            or value not in job_pb2.PriorityClass.values()
        ):
            raise InvalidArgument([FieldViolation("policy.priorities", "a named priority class")])
        names.append(job_pb2.PriorityClass.Name(value).removeprefix("PRIORITY_CLASS_").lower())
    return sorted(set(names))


def _network_names(networks: Iterable[int]) -> list[str]:
    names = [NETWORK_NAMES.get(n, "") for n in networks]
    if "" in names:
        raise InvalidArgument(
            [FieldViolation("policy.networks", "NETWORK_MAINNET or NETWORK_TESTNET")]
        )
    return sorted(set(names))


def _subcloud_names(names: Iterable[str]) -> list[str]:
    chosen = sorted(set(names))
    if not all(SUBCLOUD_NAME.fullmatch(n) for n in chosen):
        raise InvalidArgument(
            [FieldViolation("policy.subclouds", f"each must match {SUBCLOUD_NAME.pattern}")]
        )
    return chosen


def policy_message(tenant: str, limits: TenantLimits) -> mesh_admin_service_pb2.TenantPolicy:
    """A stored policy as the API shows it (unset: the mesh's default)."""
    policy = mesh_admin_service_pb2.TenantPolicy(tenant=tenant)
    if limits.priorities is not None:
        policy.priorities.CopyFrom(
            mesh_admin_service_pb2.PriorityClasses(
                classes=sorted(
                    job_pb2.PriorityClass.Value(f"PRIORITY_CLASS_{p.upper()}")
                    for p in limits.priorities
                )
            )
        )
    if limits.networks is not None:
        policy.networks.CopyFrom(
            mesh_admin_service_pb2.Networks(
                networks=sorted(network_value(n) for n in limits.networks)
            )
        )
    if limits.subclouds is not None:
        policy.subclouds.CopyFrom(mesh_admin_service_pb2.Subclouds(names=sorted(limits.subclouds)))
    if limits.credit_limit is not None:
        policy.credit_limit_micro_credits = limits.credit_limit
    return policy


def updated_policy(
    current: TenantLimits, request: mesh_admin_service_pb2.UpdateTenantPolicyRequest
) -> dict[str, Any]:
    """The policy after ``request``: the fields of its mask (every set field when the mask
    is empty) from its policy, unset ones back to None, the rest as ``current`` has them."""
    given = request.policy
    paths = list(request.update_mask.paths) or [f for f in POLICY_FIELDS if given.HasField(f)]
    unknown = sorted(set(paths) - set(POLICY_FIELDS))
    if unknown:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"unknown fields {', '.join(unknown)}")]
        )

    def now(names: frozenset[str] | None) -> list[str] | None:
        return None if names is None else sorted(names)

    chosen: dict[str, Any] = {
        "priorities": now(current.priorities),
        "networks": now(current.networks),
        "subclouds": now(current.subclouds),
        "credit_limit": current.credit_limit,
    }
    if "priorities" in paths:
        chosen["priorities"] = (
            _priority_names(given.priorities.classes) if given.HasField("priorities") else None
        )
    if "networks" in paths:
        chosen["networks"] = (
            _network_names(given.networks.networks) if given.HasField("networks") else None
        )
    if "subclouds" in paths:
        chosen["subclouds"] = (
            _subcloud_names(given.subclouds.names) if given.HasField("subclouds") else None
        )
    if "credit_limit_micro_credits" in paths:
        limit = (
            given.credit_limit_micro_credits
            if given.HasField("credit_limit_micro_credits")
            else None
        )
        if limit is not None and limit < 0:
            raise InvalidArgument(
                [FieldViolation("policy.credit_limit_micro_credits", "must not be negative")]
            )
        chosen["credit_limit"] = limit
    return chosen


class AccessAdmin:
    """The API key, tenant policy, operator key and audit methods (mixed into
    MeshAdminService)."""

    _gate: AdminGate
    _tenants: TenantStore
    _operators: OperatorStore

    async def CreateApiKey(  # noqa: N802 - gRPC method name
        self, request: mesh_admin_service_pb2.CreateApiKeyRequest, context: Context
    ) -> mesh_admin_service_pb2.CreateApiKeyResponse:
        operator = await self._gate.authorize(context, "CreateApiKey")
        tenant = _tenant(request.tenant)
        if tenant == VALIDATION_TENANT:
            # Its jobs are the validation challenges: a key would let whoever holds it read
            # the prompts and their agreed answers.
            raise InvalidArgument(
                [FieldViolation("tenant", f"{VALIDATION_TENANT} is the mesh's own tenant")]
            )
        if len(request.name) > 200:
            raise InvalidArgument([FieldViolation("name", "at most 200 characters")])
        issued = await self._tenants.create_key(tenant, name=request.name)
        await self._gate.audit(
            operator, "api-key.create", issued.key_id, {"tenant": tenant, "name": request.name}
        )
        return mesh_admin_service_pb2.CreateApiKeyResponse(
            tenant=tenant, key_id=issued.key_id, key=issued.secret
        )

    async def ListApiKeys(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListApiKeysRequest, context: Context
    ) -> mesh_admin_service_pb2.ListApiKeysResponse:
        await self._gate.authorize(context, "ListApiKeys")
        views = []
        for record in await self._tenants.list_keys(request.tenant or None):
            view = mesh_admin_service_pb2.ApiKeyView(
                key_id=record.key_id, tenant=record.tenant_id, name=record.name
            )
            _stamp(view.created_at, record.created_at)
            _stamp(view.revoked_at, record.revoked_at)
            views.append(view)
        return mesh_admin_service_pb2.ListApiKeysResponse(keys=views)

    async def RevokeApiKey(  # noqa: N802
        self, request: mesh_admin_service_pb2.RevokeApiKeyRequest, context: Context
    ) -> mesh_admin_service_pb2.RevokeApiKeyResponse:
        operator = await self._gate.authorize(context, "RevokeApiKey")
        if not await self._tenants.revoke_key(request.key_id):
            raise NotFound(f"no live API key {request.key_id}")
        await self._gate.audit(operator, "api-key.revoke", request.key_id, {})
        return mesh_admin_service_pb2.RevokeApiKeyResponse(key_id=request.key_id)

    async def GetTenantPolicy(  # noqa: N802
        self, request: mesh_admin_service_pb2.GetTenantPolicyRequest, context: Context
    ) -> mesh_admin_service_pb2.GetTenantPolicyResponse:
        await self._gate.authorize(context, "GetTenantPolicy")
        tenant = _tenant(request.tenant)
        limits = await self._tenants.limits_of(tenant)
        return mesh_admin_service_pb2.GetTenantPolicyResponse(policy=policy_message(tenant, limits))

    async def UpdateTenantPolicy(  # noqa: N802
        self, request: mesh_admin_service_pb2.UpdateTenantPolicyRequest, context: Context
    ) -> mesh_admin_service_pb2.UpdateTenantPolicyResponse:
        operator = await self._gate.authorize(context, "UpdateTenantPolicy")
        tenant = _tenant(request.policy.tenant, "policy.tenant")
        chosen = updated_policy(await self._tenants.limits_of(tenant), request)
        await self._tenants.set_policy(tenant, **chosen)
        await self._gate.audit(operator, "tenant.policy", tenant, chosen)
        return mesh_admin_service_pb2.UpdateTenantPolicyResponse(
            policy=policy_message(tenant, await self._tenants.limits_of(tenant))
        )

    async def CreateOperatorKey(  # noqa: N802
        self, request: mesh_admin_service_pb2.CreateOperatorKeyRequest, context: Context
    ) -> mesh_admin_service_pb2.CreateOperatorKeyResponse:
        operator = await self._gate.authorize(context, "CreateOperatorKey")
        role = _ROLES.get(request.role)
        if role is None:
            raise InvalidArgument(
                [FieldViolation("role", "OPERATOR_ROLE_VIEWER or OPERATOR_ROLE_ADMIN")]
            )
        try:
            issued = await self._operators.create_key(request.name, role, actor=actor_of(operator))
        except ValueError as err:
            raise InvalidArgument([FieldViolation("name", str(err))]) from None
        return mesh_admin_service_pb2.CreateOperatorKeyResponse(
            name=issued.operator.name,
            role=request.role,
            key_id=issued.operator.key_id,
            key=issued.secret,
        )

    async def ListOperatorKeys(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListOperatorKeysRequest, context: Context
    ) -> mesh_admin_service_pb2.ListOperatorKeysResponse:
        await self._gate.authorize(context, "ListOperatorKeys")
        views = []
        for record in await self._operators.list_keys():
            view = mesh_admin_service_pb2.OperatorKeyView(
                key_id=record.key_id, name=record.name, role=_ROLE_VALUES[record.role]
            )
            _stamp(view.created_at, record.created_at)
            _stamp(view.revoked_at, record.revoked_at)
            views.append(view)
        return mesh_admin_service_pb2.ListOperatorKeysResponse(keys=views)

    async def RevokeOperatorKey(  # noqa: N802
        self, request: mesh_admin_service_pb2.RevokeOperatorKeyRequest, context: Context
    ) -> mesh_admin_service_pb2.RevokeOperatorKeyResponse:
        operator = await self._gate.authorize(context, "RevokeOperatorKey")
        if not await self._operators.revoke_key(request.key_id, actor=actor_of(operator)):
            raise NotFound(f"no live operator key {request.key_id}")
        return mesh_admin_service_pb2.RevokeOperatorKeyResponse(key_id=request.key_id)

    async def ListAuditEntries(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListAuditEntriesRequest, context: Context
    ) -> mesh_admin_service_pb2.ListAuditEntriesResponse:
        await self._gate.authorize(context, "ListAuditEntries")
        if request.limit > 1000:
            raise InvalidArgument([FieldViolation("limit", "at most 1000")])
        rows = await self._operators.audit_entries(request.limit or 100, request.target or None)
        entries = []
        for row in rows:
            detail = row["detail"]
            entry = mesh_admin_service_pb2.AuditEntry(
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                detail_json=detail if isinstance(detail, str) else json.dumps(detail),
            )
            entry.at.FromDatetime(row["at"])
            entries.append(entry)
        return mesh_admin_service_pb2.ListAuditEntriesResponse(entries=entries)
