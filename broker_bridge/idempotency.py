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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.events import REDIS_ERRORS

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
                if await self._redis.set(key, token, nx=True, px=self._lease_ms):
                    break
                await asyncio.sleep(_POLL)
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err) or type(err).__name__) from err
        renewal = asyncio.create_task(self._keep(key, token), name="request-lock-renewal")
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)
            with contextlib.suppress(*REDIS_ERRORS):  # else the lease runs out by itself
                await asyncio.shield(self._release(keys=[key], args=[token]))

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
