"""Idempotency: one submit at a time per (tenant, client request id), across replicas.

A Redis ``SET NX PX`` lock at ``<ns>:idem:<scope>:<tenant>:<sha256(request id)>``
serialises submits that carry the same request id: the holder looks the id up in
PostgreSQL, and writes and publishes the job only when it is new; a second bridge waits for
the lock and then finds the job. The lock is a short lease that its holder renews while it
works, so a holder that dies (SIGKILL, a lost host) blocks the id for at most one lease
(``FLEETWIRE_BRIDGE_REQUEST_LOCK_LEASE``), not for as long as an accept may take.
PostgreSQL's UNIQUE (tenant_id, client_request_id) stays the last word should two holders
ever overlap (a holder stalled past its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.events import REDIS_ERRORS
from fleetwire.process.coalescer import Coalescer

log = structlog.get_logger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_POLL = 0.02


class RequestLocks:
    """Per-request-id locks in Redis, leased and renewed while held."""

    def __init__(self, redis: aioredis.Redis, namespace: str, *, lease: timedelta) -> None:
        self._redis = redis
        self._namespace = namespace
        self._lease_ms = max(1, int(lease.total_seconds() * 1000))
        self._release: Any = redis.register_script(_RELEASE)
        self._renew: Any = redis.register_script(_RENEW)
        # Concurrent Submits take and give back their locks in one pipeline each way.
        self._takes: Coalescer[tuple[str, str], bool] = Coalescer(
            self._take_all, name="request-lock-takes"
        )
        self._gives: Coalescer[tuple[str, str], Any] = Coalescer(
            self._give_all, name="request-lock-releases"
        )

    async def _take_all(self, locks: Sequence[tuple[str, str]]) -> list[bool]:
        if len(locks) == 1:
            key, token = locks[0]
            return [bool(await self._redis.set(key, token, nx=True, px=self._lease_ms))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, token in locks:
                pipe.set(key, token, nx=True, px=self._lease_ms)
            replies: list[Any] = await pipe.execute()
        return [bool(reply) for reply in replies]

    async def _give_all(self, locks: Sequence[tuple[str, str]]) -> list[Any]:
        if len(locks) == 1:
            key, token = locks[0]
            return [await self._release(keys=[key], args=[token])]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, token in locks:
                await self._release(keys=[key], args=[token], client=pipe)
            replies: list[Any] = await pipe.execute()
        return replies

    def key(self, scope: str, tenant_id: str, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
        return f"{self._namespace}:idem:{scope}:{tenant_id}:{digest}"

    @asynccontextmanager
    async def held(self, scope: str, tenant_id: str, request_id: str) -> AsyncIterator[None]:
        """Waits (polling) until this caller holds the lock, then yields while a task of
        its own renews the lease every third of it; the caller's own deadline bounds the
        wait. Raises BackendUnavailable when Redis is down."""
        key = self.key(scope, tenant_id, request_id)
        token = secrets.token_hex(16)
        try:
            while True:
                if await self._takes((key, token)):
                    break
                await asyncio.sleep(_POLL)
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err) or type(err).__name__) from err
        except asyncio.CancelledError:
            # A take in flight goes through even though its caller stops waiting (it is in
            # a shared pipeline): give the lock back rather than block the id for a lease.
            # The token is this caller's alone, so the release frees nothing of another's.
            self._gives.enqueue((key, token)).add_done_callback(_quiet)
            raise
        renewal = asyncio.create_task(self._keep(key, token), name="request-lock-renewal")
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)
            with contextlib.suppress(*REDIS_ERRORS):  # else the lease runs out by itself
                await asyncio.shield(self._gives((key, token)))

    async def _keep(self, key: str, token: str) -> None:
        """Renews the lease until cancelled. A renewal that Redis refuses or cannot take
        is logged and retried: the job's UNIQUE constraint still guards the id."""
        every = self._lease_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                if not await self._renew(keys=[key], args=[token, self._lease_ms]):
                    log.warning("request lock lapsed while held", key=key)
                    return
            except REDIS_ERRORS as err:
                log.warning("request lock not renewed", key=key, error=str(err))


def _quiet(future: asyncio.Future[Any]) -> None:
    """Retrieves a background release's outcome: the lease ends a lock Redis did not free."""
    if not future.cancelled():
        future.exception()
