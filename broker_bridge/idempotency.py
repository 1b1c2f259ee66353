"""Idempotency: one submit at a time per (tenant, client request id), across replicas.

A Redis ``SET NX PX`` lock at ``<ns>:idem:<tenant>:<sha256(request id)>`` serialises
submits that carry the same request id: the holder looks the id up in PostgreSQL, and
writes and publishes the job only when it is new; a second bridge waits for the lock and
then finds the job. The lock expires by itself (a crashed holder blocks the id for at most
``ttl``), and PostgreSQL's UNIQUE (tenant_id, client_request_id) stays the last word
should two holders ever overlap.
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

from fleetwire.errors import BackendUnavailable
from fleetwire.events import REDIS_ERRORS

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_POLL = 0.02


class RequestLocks:
    """Per-request-id locks in Redis."""

    def __init__(self, redis: aioredis.Redis, namespace: str, *, ttl: timedelta) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        self._release: Any = redis.register_script(_RELEASE)

    def key(self, scope: str, tenant_id: str, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
        return f"{self._namespace}:idem:{scope}:{tenant_id}:{digest}"

    @asynccontextmanager
    async def held(self, scope: str, tenant_id: str, request_id: str) -> AsyncIterator[None]:
        """Waits (polling) until this caller holds the lock, then yields; the caller's own
        deadline bounds the wait. Raises BackendUnavailable when Redis is down."""
        key = self.key(scope, tenant_id, request_id)
        token = secrets.token_hex(16)
        try:
            while True:
                if await self._redis.set(key, token, nx=True, px=self._ttl_ms):
                    break
                await asyncio.sleep(_POLL)
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err) or type(err).__name__) from err
        try:
            yield
        finally:
            with contextlib.suppress(*REDIS_ERRORS):  # else the lock expires by itself
                await asyncio.shield(self._release(keys=[key], args=[token]))
