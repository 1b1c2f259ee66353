"""Who may use the admin surface: an operator key (``fwo_…``) whose role the method needs.

The policy is this one table: reading the mesh needs ``viewer``, acting on it ``admin``; a
method missing from it needs ``admin``. Lookups are cached for a few seconds (unknown keys
too), so a revoked key stops working within that time and a flood of bad keys costs
PostgreSQL one query per key and TTL. The gate also writes the audit log of the actions
it allowed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TypeAlias

from fleetwire.domain.errors import PermissionDenied, Unauthenticated
from fleetwire.rpc.bearer import bearer_key
from fleetwire.store.operators import Operator, OperatorStore, Role, operator_key_id_of
from fleetwire.store.tenants import key_id_of

POLICY: dict[str, Role] = {
    "ListNodes": Role.VIEWER,
    "QueueDepths": Role.VIEWER,
    "ListDeadLetters": Role.VIEWER,
    "JobTrail": Role.VIEWER,
    "GetBalance": Role.VIEWER,
    "ReplayDeadLetter": Role.ADMIN,
    "ListPendingNodes": Role.VIEWER,
    "ApproveNode": Role.ADMIN,
    "RevokeNode": Role.ADMIN,
    "ValidateNode": Role.ADMIN,
    "RegisterNode": Role.ADMIN,
    "ListRegisteredNodes": Role.VIEWER,
    "GrantNode": Role.ADMIN,
    "CreateApiKey": Role.ADMIN,
    "ListApiKeys": Role.VIEWER,
    "RevokeApiKey": Role.ADMIN,
    "GetTenantPolicy": Role.VIEWER,
    "UpdateTenantPolicy": Role.ADMIN,
    "CreateOperatorKey": Role.ADMIN,
    "ListOperatorKeys": Role.VIEWER,
    "RevokeOperatorKey": Role.ADMIN,
    "ListAuditEntries": Role.VIEWER,
    "WhoAmI": Role.VIEWER,
    "ListJobs": Role.VIEWER,
    "JobThroughput": Role.VIEWER,
    "ListNodeKeyHistory": Role.VIEWER,
    "ListTenants": Role.VIEWER,
    "ListLedgerAccounts": Role.VIEWER,
}
_MAX_CACHED = 10_000

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs


def actor_of(operator: Operator) -> str:
    """How the audit log names an operator."""
    return f"operator:{operator.name} ({operator.key_id})"


class AdminGate:
    """Resolves the operator of a call and checks its role against ``POLICY``."""

    def __init__(self, store: OperatorStore, *, cache_ttl: float) -> None:
        self._store = store
        self._ttl = cache_ttl
        self._keys: dict[str, tuple[float, Operator | None]] = {}

    async def authorize(self, context: Context, method: str) -> Operator:
        """The operator calling ``method`` on ``context`` (a servicer context), if allowed."""
        return await self.operator(context.invocation_metadata() or (), method)

    async def audit(
        self, operator: Operator, action: str, target: str, detail: dict[str, Any]
    ) -> None:
        """Writes ``operator``'s action to the audit log."""
        await self._store.audit(actor_of(operator), action, target, detail)

    async def operator(self, metadata: Iterable[tuple[str, str | bytes]], method: str) -> Operator:
        key = bearer_key(metadata, reason="OPERATOR_KEY_INVALID")
        if key is None:
            raise Unauthenticated(
                "the admin surface needs an operator key: send 'authorization: Bearer fwo_…' "
                "(`fleetwire admin operators create`; the first one: `… operators bootstrap`)",
                reason="OPERATOR_KEY_MISSING",
            )
        if operator_key_id_of(key) is None and key_id_of(key) is not None:
            raise PermissionDenied(
                "a tenant's API key cannot use the admin surface", reason="NOT_AN_OPERATOR_KEY"
            )
        operator = await self._lookup(key)
        if operator is None:
            raise Unauthenticated("unknown or revoked operator key", reason="OPERATOR_KEY_INVALID")
        needed = POLICY.get(method, Role.ADMIN)
        if operator.role < needed:
            raise PermissionDenied(
                f"{method} needs the {needed.label} role; "
                f"{operator.name} has {operator.role.label}",
                reason="ROLE_TOO_LOW",
            )
        return operator

    async def _lookup(self, key: str) -> Operator | None:
        now = time.monotonic()
        cached = self._keys.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        operator = await self._store.operator_of_key(key)
        if len(self._keys) >= _MAX_CACHED:
            self._keys.clear()
        self._keys[key] = (now, operator)
        return operator
