"""Node registration and admission: the SQL behind ``fleetwire admin nodes …`` and the
scheduler's handshake.

One row per node id in ``nodes`` (migration 0001): the public key the scheduler accepts for
that id at the handshake, and whether it is revoked. A node that proves a key nobody
admitted is a *request* (``node_requests``, migration 0009) until an operator approves it.
The scheduler reads these rows only after the node proved its key, and checks the keys of
its live sessions every few seconds (``keys_of``), so a revocation ends a session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    async def keys_of(self, node_ids: list[str]) -> dict[str, tuple[bytes, bool]]:
        """(public key, revoked) of each registered node among ``node_ids``."""
        rows = await self._pool.fetch(
            "SELECT node_id, public_key, revoked FROM nodes WHERE node_id = ANY($1::text[])",
            node_ids,
        )
        return {r["node_id"]: (bytes(r["public_key"]), bool(r["revoked"])) for r in rows}

    @translating
    async def request_admission(
        self,
        node_id: str,
        public_key: bytes,
        *,
        region: str,
        models: str,
        max_pending: int,
        ttl: timedelta,
    ) -> bool:
        """Records (or refreshes) the request of a node that proved ``public_key`` for an id
        no key is registered for. False, writing nothing, when ``max_pending`` requests are
        waiting and this one is new. A request not renewed for ``ttl`` is dropped (a waiting
        node asks again every few seconds), so strangers cannot fill the queue for good."""
        kid = key_id(public_key)
        await self._pool.execute(
            "DELETE FROM node_requests WHERE last_seen_at < now() - $1::interval", ttl
        )
        stored = await self._pool.fetchval(
            "WITH waiting AS (SELECT count(*) AS n FROM node_requests)"
            " INSERT INTO node_requests (node_id, key_id, public_key, region, models)"
            " SELECT $1, $2, $3, $4, $5 FROM waiting WHERE waiting.n < $6"
            " OR EXISTS (SELECT 1 FROM node_requests WHERE node_id = $1 AND key_id = $2)"
            " ON CONFLICT (node_id, key_id) DO UPDATE SET last_seen_at = now(),"
            " region = excluded.region, models = excluded.models"
            " RETURNING true",
            node_id,
            kid,
            public_key,
            region[:64],
            models[:512],
            max_pending,
        )
        return bool(stored)

    @translating
    async def requests(self) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT node_id, key_id, region, models, first_seen_at, last_seen_at"
                " FROM node_requests ORDER BY first_seen_at"
            )
        )

    @translating
    async def approve(self, node_id: str, kid: str) -> Registration | None:
        """Registers the key of the request (``node_id``, ``kid``) and drops every request
        for the id; None when there is no such request. An id registered with another key
        stays as it is (CONFLICT): an approval never takes an id from its key."""
        async with self._pool.acquire() as conn, conn.transaction():
            key = await conn.fetchval(
                "SELECT public_key FROM node_requests WHERE node_id = $1 AND key_id = $2",
                node_id,
                kid,
            )
            if key is None:
                return None
            inserted = await conn.fetchval(
                "INSERT INTO nodes (node_id, public_key, key_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (node_id) DO NOTHING RETURNING true",
                node_id,
                bytes(key),
                kid,
            )
            if not inserted:
                return Registration.CONFLICT
            await conn.execute("DELETE FROM node_requests WHERE node_id = $1", node_id)
            return Registration.CREATED

    @translating
    async def granted_subclouds(self, node_id: str) -> frozenset[str]:
        rows = await self._pool.fetch(
            "SELECT subcloud FROM node_grants WHERE node_id = $1", node_id
        )
        return frozenset(str(r["subcloud"]) for r in rows)

    @translating
    async def granted_networks(self, node_id: str) -> frozenset[str]:
        rows = await self._pool.fetch(
            "SELECT network FROM node_network_grants WHERE node_id = $1", node_id
        )
        return frozenset(str(r["network"]) for r in rows)

    @translating
    async def grant_network(self, node_id: str, network: str, *, withdraw: bool = False) -> bool:
        """Grants (or withdraws) ``network``; True when something changed."""
        if withdraw:
            sql = "DELETE FROM node_network_grants WHERE node_id = $1 AND network = $2"
        else:
            sql = "INSERT INTO node_network_grants (node_id, network) VALUES ($1, $2)"
            sql += " ON CONFLICT DO NOTHING"
        return bool(await self._pool.fetchval(sql + " RETURNING true", node_id, network))

    @translating
    async def grant_subcloud(self, node_id: str, subcloud: str) -> bool:
        """True when the grant is new."""
        return bool(
            await self._pool.fetchval(
                "INSERT INTO node_grants (node_id, subcloud) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                node_id,
                subcloud,
            )
        )

    @translating
    async def withdraw_subcloud(self, node_id: str, subcloud: str) -> bool:
        """True when there was such a grant; the node's next session goes without it."""
        return bool(
            await self._pool.fetchval(
                "DELETE FROM node_grants WHERE node_id = $1 AND subcloud = $2 RETURNING true",
                node_id,
                subcloud,
            )
        )

    @translating
    async def key_history(self, node_id: str) -> list[asyncpg.Record]:
        """Every key ``node_id`` has had, newest first (``node_keys``, migration 0014)."""
        return list(
            await self._pool.fetch(
                "SELECT key_id, public_key, valid_from, valid_until, revoked_at FROM node_keys"
                " WHERE node_id = $1 ORDER BY valid_from DESC, key_id",
                node_id,
            )
        )

    @translating
    async def all_grants(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        """Every node's granted (networks, subclouds), by node id."""
        grants: dict[str, tuple[set[str], set[str]]] = {}
        for table, column, slot in (
            ("node_network_grants", "network", 0),
            ("node_grants", "subcloud", 1),
        ):
            for row in await self._pool.fetch(f"SELECT node_id, {column} FROM {table}"):
                grants.setdefault(row["node_id"], (set(), set()))[slot].add(str(row[column]))
        return {node: (frozenset(n), frozenset(s)) for node, (n, s) in grants.items()}

    @translating
    async def touch_node(self, node_id: str) -> None:
        await self._pool.execute(
            "UPDATE nodes SET last_seen_at = now() WHERE node_id = $1", node_id
        )
