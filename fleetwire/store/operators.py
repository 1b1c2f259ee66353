"""Operators' keys for the admin surface, and the audit log of admin actions.

A key reads ``fwo_<key_id>_<secret>``, stored like tenants' keys (``store.tenants``: the
id in clear, the whole key only as its SHA-256), with a role: ``viewer`` reads the mesh,
``admin`` also acts on it. A tenant's ``fwk_`` key is never an operator's.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fleetwire.store.db import translating
from fleetwire.store.tenants import hash_key, key_matches, new_key

OPERATOR_KEY_PREFIX = "fwo"
_KEY_PATTERN = re.compile(rf"^{OPERATOR_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$")


class Role(enum.IntEnum):
    """What an operator may do; a higher role may do all a lower one may."""

    VIEWER = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Role:
        return cls[label.upper()]


@dataclass(frozen=True, slots=True)
class Operator:
    key_id: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedOperatorKey:
    """A newly created key: ``secret`` is the only copy of the full key."""

    operator: Operator
    secret: str


@dataclass(frozen=True, slots=True)
class OperatorKeyRecord:
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def operator_key_id_of(key: str) -> str | None:
    """The key id of a well-formed operator key, None for anything else."""
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


class OperatorStore:
    """Operator keys and the audit log over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def create_key(self, name: str, role: Role, *, actor: str) -> IssuedOperatorKey:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"operator name must match {NAME_PATTERN.pattern}")
        key_id, key = new_key(OPERATOR_KEY_PREFIX)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO operator_keys (key_id, name, role, secret_hash)"
                " VALUES ($1, $2, $3, $4)",
                key_id,
                name,
                role.label,
                hash_key(key),
            )
            await _audit(
                conn, actor, "operator-key.create", key_id, {"name": name, "role": role.label}
            )
        return IssuedOperatorKey(Operator(key_id, name, role), key)

    @translating
    async def revoke_key(self, key_id: str, *, actor: str) -> bool:
        """True when the key existed and was live."""
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await conn.fetchval(
                "UPDATE operator_keys SET revoked_at = now()"
                " WHERE key_id = $1 AND revoked_at IS NULL RETURNING true",
                key_id,
            )
            if revoked:
                await _audit(conn, actor, "operator-key.revoke", key_id, {})
        return bool(revoked)

    @translating
    async def list_keys(self) -> list[OperatorKeyRecord]:
        rows = await self._pool.fetch(
            "SELECT key_id, name, role, created_at, revoked_at FROM operator_keys"
            " ORDER BY created_at, key_id"
        )
        return [OperatorKeyRecord(**dict(row.items())) for row in rows]

    @translating
    async def operator_of_key(self, key: str) -> Operator | None:
        """The operator a live, matching key belongs to; None for unknown, wrong or revoked
        keys (the caller cannot tell which)."""
        key_id = operator_key_id_of(key)
        if key_id is None:
            return None
        row = await self._pool.fetchrow(
            "SELECT name, role, secret_hash FROM operator_keys"
            " WHERE key_id = $1 AND revoked_at IS NULL",
            key_id,
        )
        if row is None or not key_matches(key, bytes(row["secret_hash"])):
            return None
        return Operator(key_id, str(row["name"]), Role.of(str(row["role"])))

    @translating
    async def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        async with self._pool.acquire() as conn:
            await _audit(conn, actor, action, target, detail)

    @translating
    async def audit_entries(
        self, limit: int = 100, target: str | None = None
    ) -> list[asyncpg.Record]:
        """The newest ``limit`` entries (about ``target`` only, when given)."""
        return list(
            await self._pool.fetch(
                "SELECT at, actor, action, target, detail FROM audit_log"
                " WHERE $2::text IS NULL OR target = $2 ORDER BY entry_id DESC LIMIT $1",
                limit,
                target,
            )
        )


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target,
        json.dumps(detail),
    )
