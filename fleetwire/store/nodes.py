"""Node registration: the SQL behind ``fleetwire admin nodes register|revoke|list``.

One row per node id in ``nodes`` (migration 0001): the public key the scheduler accepts for
that id at the handshake, and whether it is revoked. The scheduler reads the same row on
every handshake (``NodeStore.node_key``), so a change here applies to the node's next
connection; a session already authenticated keeps its key until it ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fleetwire.protocol.signing import key_id
from fleetwire.store.db import translating


class Registration(enum.Enum):
    """What ``register`` did."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # the same key was already registered (and not revoked)
    REPLACED = "replaced"  # another key was registered; ``replace`` swapped it
    REINSTATED = "reinstated"  # the same key was revoked; registering it again un-revokes it
    CONFLICT = "conflict"  # another key is registered and ``replace`` was not given


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: str
    public_key: bytes
    key_id: str
    revoked: bool
    registered_at: datetime
    last_seen_at: datetime | None


class NodeStore:
    """Node keys over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def register(self, node_id: str, public_key: bytes, *, replace: bool) -> Registration:
        """Registers ``public_key`` for ``node_id``. Another key already registered is kept
        (CONFLICT) unless ``replace`` (a key rotation), which also clears a revocation."""
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        kid = key_id(public_key)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT public_key, revoked FROM nodes WHERE node_id = $1 FOR UPDATE", node_id
            )
            if row is None:
                await conn.execute(
                    "INSERT INTO nodes (node_id, public_key, key_id) VALUES ($1, $2, $3)",
                    node_id,
                    public_key,
                    kid,
                )
                return Registration.CREATED
            same = bytes(row["public_key"]) == public_key
            if same and not row["revoked"]:
                return Registration.UNCHANGED
            if not same and not replace:
                return Registration.CONFLICT
            await conn.execute(
                "UPDATE nodes SET public_key = $2, key_id = $3, revoked = false,"
                " registered_at = now() WHERE node_id = $1",
                node_id,
                public_key,
                kid,
            )
            return Registration.REINSTATED if same else Registration.REPLACED

    @translating
    async def revoke(self, node_id: str) -> bool:
        """Revokes the node's key: its next handshake is refused (KEY_REVOKED). False when
        the node id is unknown."""
        done = await self._pool.fetchval(
            "UPDATE nodes SET revoked = true WHERE node_id = $1 RETURNING true", node_id
        )
        return bool(done)

    @translating
    async def list_nodes(self) -> list[NodeRecord]:
        """Every registered node, by id."""
        rows = await self._pool.fetch(
            "SELECT node_id, public_key, key_id, revoked, registered_at, last_seen_at"
            " FROM nodes ORDER BY node_id"
        )
        return [
            NodeRecord(
                node_id=r["node_id"],
                public_key=bytes(r["public_key"]),
                key_id=r["key_id"],
                revoked=r["revoked"],
                registered_at=r["registered_at"],
                last_seen_at=r["last_seen_at"],
            )
            for r in rows
        ]

    @translating
    async def node_key(self, node_id: str) -> tuple[bytes, bool] | None:
        """(public key, revoked) registered for ``node_id``, or None."""
        row = await self._pool.fetchrow(
            "SELECT public_key, revoked FROM nodes WHERE node_id = $1", node_id
        )
        return None if row is None else (bytes(row["public_key"]), bool(row["revoked"]))

    @translating
    async def register_node(self, node_id: str, public_key: bytes, key_id: str) -> bool:
        """Binds ``node_id`` to ``public_key`` if the id is new. True when the stored key is
        ``public_key`` afterwards."""
        stored = await self._pool.fetchval(
            "INSERT INTO nodes (node_id, public_key, key_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (node_id) DO UPDATE SET last_seen_at = now()"
            " RETURNING public_key",
            node_id,
            public_key,
            key_id,
        )
        return bytes(stored) == public_key

    @translating
    async def touch_node(self, node_id: str) -> None:
        await self._pool.execute(
            "UPDATE nodes SET last_seen_at = now() WHERE node_id = $1", node_id
        )
