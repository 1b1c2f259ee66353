"""Node presence in Redis: which node is connected to which scheduler, and its load.

Each connected node has a hash ``<ns>:node:<node_id>`` written by the scheduler holding its
stream, refreshed on every heartbeat and expiring after twice the lease, so a scheduler
that dies leaves no ghost for long. Any replica can list the whole mesh from it. Presence
is advisory: a Redis outage is logged and never breaks a node's stream.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis.asyncio as aioredis
import structlog

from fleetwire.messaging.events import REDIS_ERRORS
from scheduler.registry import NodeSession

log = structlog.get_logger(__name__)


class NodePresence:
    def __init__(
        self, redis: aioredis.Redis, namespace: str, scheduler_id: str, ttl_seconds: float
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._scheduler_id = scheduler_id
        self._ttl = max(1, int(ttl_seconds))

    def _key(self, node_id: str) -> str:
        return f"{self._namespace}:node:{node_id}"

    async def _write(self, node_id: str, fields: dict[str, str | int | float]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._key(node_id), mapping=cast(Any, fields))
                pipe.expire(self._key(node_id), self._ttl)
                await pipe.execute()
        except REDIS_ERRORS as err:
            log.warning("presence not written", node_id=node_id, error=str(err))

    async def announce(self, session: NodeSession) -> None:
        now = time.time()
        profile = session.profile
        fields: dict[str, str | int | float]
        fields = {
            "scheduler_id": self._scheduler_id,
            "session_id": session.session_id,
            "models": ",".join(sorted(profile.models)),
            "region": profile.region,
            "subclouds": ",".join(sorted(profile.subclouds)),
            "slots": session.slots,
            "free_slots": session.free_slots,
            "running_jobs": len(session.runs),
            "draining": int(session.draining),
            "connected_at": now,
            "last_seen": now,
        }
        await self._write(session.node_id, fields)

    async def heartbeat(self, session: NodeSession, free_slots: int, running_jobs: int) -> None:
        await self._write(
            session.node_id,
            {
                "session_id": session.session_id,
                "free_slots": free_slots,
                "running_jobs": running_jobs,
                "draining": int(session.draining),
                "last_seen": time.time(),
            },
        )

    async def forget(self, session: NodeSession) -> None:
        """Removes the node's entry unless a newer session has already replaced it."""
        key = self._key(session.node_id)
        try:
            current: Any = await self._redis.hget(key, "session_id")
            if current is None or bytes(current).decode() == session.session_id:
                await self._redis.delete(key)
        except REDIS_ERRORS as err:
            log.warning("presence not removed", node_id=session.node_id, error=str(err))

    async def all_nodes(self) -> list[dict[str, str]]:
        """Every present node's fields (decoded), in node id order."""
        prefix = f"{self._namespace}:node:"
        keys = sorted([k async for k in self._redis.scan_iter(match=f"{prefix}*", count=500)])
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            replies = await pipe.execute()
        nodes = []
        for key, fields in zip(keys, replies, strict=True):
            if fields:
                entry = {k.decode(): v.decode() for k, v in fields.items()}
                entry["node_id"] = key.decode().removeprefix(prefix)
                nodes.append(entry)
        return nodes
