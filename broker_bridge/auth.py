"""Who is calling: the API key of ``authorization: Bearer <key>`` metadata → a tenant.

Lookups are cached per replica for ``auth_cache_ttl`` (a few seconds), unknown keys too, so
a flood of bad keys costs PostgreSQL one query per key and TTL; a revoked key stops working
on every replica within that TTL. No gRPC here: the servicer passes the metadata in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from broker_bridge.tenant_policy import with_defaults
from fleetwire.domain.errors import Unauthenticated
from fleetwire.process.settings import BridgeSettings
from fleetwire.rpc.bearer import bearer_key
from fleetwire.store.tenants import ANONYMOUS_TENANT, TenantLimits, TenantStore, hash_key

_MAX_CACHED = 10_000


UNRESTRICTED = TenantLimits(None, None)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated tenant, its effective rate limits and its policy."""

    tenant_id: str
    rate_per_second: float
    burst: int
    policy: TenantLimits = UNRESTRICTED


class Authenticator:
    """Resolves callers; raises Unauthenticated for missing (when required), malformed,
    unknown or revoked keys, and BackendUnavailable when PostgreSQL cannot be asked."""

    def __init__(self, tenants: TenantStore, settings: BridgeSettings) -> None:
        self._tenants = tenants
        self._settings = settings
        self._ttl = settings.auth_cache_ttl.total_seconds()
        self._keys: dict[bytes, tuple[float, str | None]] = {}
        self._limits: dict[str, tuple[float, TenantLimits]] = {}

    async def caller(self, metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
        key = bearer_key(metadata, reason="API_KEY_INVALID")
        if key is None:
            if self._settings.require_api_key:
                raise Unauthenticated(
                    "missing API key: send 'authorization: Bearer <key>' metadata",
                    reason="API_KEY_MISSING",
                )
            tenant_id = ANONYMOUS_TENANT
        else:
            tenant_id = await self._tenant_of(key)
        limits = await self._limits_of(tenant_id)
        return Caller(
            tenant_id=tenant_id,
            rate_per_second=limits.rate_per_second or self._settings.tenant_rate,
            burst=limits.burst or self._settings.tenant_burst,
            policy=limits,
        )

    async def _tenant_of(self, key: str) -> str:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > now:
            tenant_id = cached[1]
        else:
            tenant_id = await self._tenants.tenant_of_key(key)
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            self._keys[digest] = (now + self._ttl, tenant_id)
        if tenant_id is None:
            raise Unauthenticated("unknown or revoked API key", reason="API_KEY_INVALID")
        return tenant_id

    async def _limits_of(self, tenant_id: str) -> TenantLimits:
        now = time.monotonic()
        cached = self._limits.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        limits = with_defaults(await self._tenants.limits_of(tenant_id), self._settings)
        if len(self._limits) >= _MAX_CACHED:
            self._limits.clear()
        self._limits[tenant_id] = (now + self._ttl, limits)
        return limits
