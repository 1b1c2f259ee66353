"""Tenants and their API keys: the key format, its hashing, and all SQL on both.

A key reads ``fwk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is stored in clear for
lookup, the whole key only as its SHA-256. The secret has 256 bits of entropy, so a plain
hash is enough (no slow KDF: nothing to brute-force); comparison is constant-time. The
full key is shown once, by the CLI that creates it, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fleetwire.store.db import translating

KEY_PREFIX = "fwk"
ANONYMOUS_TENANT = "anonymous"
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: ``secret`` is the only copy of the full key."""

    key_id: str
    tenant_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's own rate limits (None: the bridge's defaults) and policy: the priority
    classes, networks and subclouds it may use (None: any) and how much it may owe on
    mainnet (None: no credit check)."""

    rate_per_second: float | None
    burst: int | None
    priorities: frozenset[str] | None = None
    networks: frozenset[str] | None = None
    subclouds: frozenset[str] | None = None
    credit_limit: int | None = None


def new_key(prefix: str = KEY_PREFIX) -> tuple[str, str]:
    """(key_id, full key) of a fresh random key: ``<prefix>_<12 hex>_<43 url-safe>``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{prefix}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, None for anything else."""
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_matches(key: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


class TenantStore:
    """Tenants and API keys over one asyncpg pool (used by the bridge and the CLI)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def create_key(self, tenant_id: str, *, name: str = "") -> IssuedKey:
        """Creates the tenant if it is new, and a key for it."""
        if not TENANT_PATTERN.match(tenant_id):
            raise ValueError(f"tenant id must match {TENANT_PATTERN.pattern}")
        key_id, key = new_key()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id
            )
            await conn.execute(
                "INSERT INTO api_keys (key_id, tenant_id, secret_hash, name)"
                " VALUES ($1, $2, $3, $4)",
                key_id,
                tenant_id,
                hash_key(key),
                name,
            )
        return IssuedKey(key_id=key_id, tenant_id=tenant_id, secret=key)

    @translating
    async def list_keys(self, tenant_id: str | None = None) -> list[KeyRecord]:
        rows = await self._pool.fetch(
            "SELECT key_id, tenant_id, name, created_at, revoked_at FROM api_keys"
            " WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY created_at, key_id",
            tenant_id,
        )
        return [KeyRecord(**dict(row.items())) for row in rows]

    @translating
    async def revoke_key(self, key_id: str) -> bool:
        """True when the key existed and was live."""
        revoked = await self._pool.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL"
            " RETURNING true",
            key_id,
        )
        return bool(revoked)

    @translating
    async def tenant_of_key(self, key: str) -> str | None:
        """The tenant a live, matching key belongs to; None for unknown, wrong or revoked
        keys (the caller cannot tell which)."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        row = await self._pool.fetchrow(
            "SELECT tenant_id, secret_hash FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
            key_id,
        )
        if row is None or not key_matches(key, bytes(row["secret_hash"])):
            return None
        return str(row["tenant_id"])

    @translating
    async def limits_of(self, tenant_id: str) -> TenantLimits:
        row = await self._pool.fetchrow(
            "SELECT rate_per_second, burst, allowed_priorities, allowed_networks,"
            " allowed_subclouds, credit_limit FROM tenants WHERE tenant_id = $1",
            tenant_id,
        )
        if row is None:
            return TenantLimits(None, None)

        def names(column: str) -> frozenset[str] | None:
            return None if row[column] is None else frozenset(row[column])

        return TenantLimits(
            row["rate_per_second"],
            row["burst"],
            priorities=names("allowed_priorities"),
            networks=names("allowed_networks"),
            subclouds=names("allowed_subclouds"),
            credit_limit=row["credit_limit"],
        )

    @translating
    async def set_policy(
        self,
        tenant_id: str,
        *,
        priorities: list[str] | None,
        networks: list[str] | None,
        subclouds: list[str] | None,
        credit_limit: int | None,
    ) -> None:
        """Replaces the tenant's policy (None: unrestricted), creating the tenant if new."""
        await self._pool.execute(
            "INSERT INTO tenants (tenant_id, allowed_priorities, allowed_networks,"
            " allowed_subclouds, credit_limit) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (tenant_id) DO UPDATE SET allowed_priorities = $2,"
            " allowed_networks = $3, allowed_subclouds = $4, credit_limit = $5",
            tenant_id,
            priorities,
            networks,
            subclouds,
            credit_limit,
        )

    @translating
    async def balance_of(self, tenant_id: str) -> int:
        """The tenant's ledger balance in micro-credits (charges are negative)."""
        balance = await self._pool.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account = $1",
            f"tenant:{tenant_id}",
        )
        return int(balance)

    @translating
    async def set_limits(
        self, tenant_id: str, *, rate_per_second: float | None, burst: int | None
    ) -> None:
        await self._pool.execute(
            "INSERT INTO tenants (tenant_id, rate_per_second, burst) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id) DO UPDATE SET rate_per_second = $2, burst = $3",
            tenant_id,
            rate_per_second,
            burst,
        )
