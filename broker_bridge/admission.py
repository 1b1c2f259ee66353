"""Admission control: a token bucket per tenant (in Redis, shared by every replica) and a
queue-depth guard per route (RabbitMQ's own count, cached briefly).

Fair share: the depth guard refuses bulk and test jobs first (at ``max_queue_depth``),
normal jobs at twice and urgent jobs at four times that depth, so a flood of low classes
cannot fill a queue past the point where higher classes are still admitted; the per-tenant
bucket keeps one tenant from taking every admission slot, and the per-tenant backlog cap
keeps one tenant from filling a queue within a class; AMQP priorities deliver the higher
classes first from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import aiormq
import aiormq.abc
import redis.asyncio as aioredis
import structlog

from broker_bridge.auth import Caller
from broker_bridge.tenant_policy import check_credit, check_policy
from fleetwire.domain.errors import (
    BackendUnavailable,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
)
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.messaging.events import REDIS_ERRORS
from fleetwire.messaging.topology import Topology
from fleetwire.process.coalescer import Coalescer
from fleetwire.process.settings import BridgeSettings
from fleetwire.v1 import job_pb2

log = structlog.get_logger(__name__)

# KEYS[1] bucket; ARGV: rate (tokens/s), burst, cost. Returns {admitted, retry_after_ms}.
# The clock is Redis's own (TIME), so replicas with skewed clocks share one bucket fairly.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local admitted = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  admitted = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {admitted, wait}
"""

DEPTH_FACTOR: dict[int, int] = {
    job_pb2.PRIORITY_CLASS_URGENT: 4,
    job_pb2.PRIORITY_CLASS_NORMAL: 2,
    job_pb2.PRIORITY_CLASS_BULK: 1,
    job_pb2.PRIORITY_CLASS_TEST: 1,
}


class TenantRateLimiter:
    """One token bucket per tenant at ``<ns>:rate:<tenant>``."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._script: Any = redis.register_script(_TOKEN_BUCKET)
        # Takes arriving together go in one pipeline: one round trip, applied in order.
        self._takes: Coalescer[tuple[str, float, int, int], Sequence[Any]] = Coalescer(
            self._take_all, name="rate-takes"
        )

    async def _take_all(self, takes: Sequence[tuple[str, float, int, int]]) -> list[Any]:
        if len(takes) == 1:
            tenant_id, rate, burst, cost = takes[0]
            return [await self._script(keys=[self._key(tenant_id)], args=[rate, burst, cost])]
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant_id, rate, burst, cost in takes:
                await self._script(
                    keys=[self._key(tenant_id)], args=[rate, burst, cost], client=pipe
                )
            answers: list[Any] = await pipe.execute()
        return answers

    def _key(self, tenant_id: str) -> str:
        return f"{self._namespace}:rate:{tenant_id}"

    async def take(self, tenant_id: str, *, rate: float, burst: int, cost: int = 1) -> None:
        """Takes ``cost`` tokens or raises ResourceExhausted (with the wait until enough
        tokens are back). A cost above the burst can never succeed: INVALID_ARGUMENT."""
        if cost > burst:
            raise InvalidArgument(
                [FieldViolation("jobs", f"{cost} jobs exceed the tenant's burst of {burst}")]
            )
        try:
            admitted, wait_ms = await self._takes((tenant_id, rate, burst, cost))
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err) or type(err).__name__) from err
        if not admitted:
            raise ResourceExhausted(
                f"tenant {tenant_id} exceeds its rate of {rate:g} jobs/s (burst {burst})",
                retry_delay=timedelta(milliseconds=int(wait_ms)),
                reason="TENANT_RATE_LIMITED",
                quota_subject=f"tenant:{tenant_id}",
            )


class QueueDepthGauge:
    """Message counts of route queues by passive declare, each reused for ``max_age``."""

    def __init__(self, link: AmqpLink, topology: Topology, *, max_age: timedelta) -> None:
        self._link = link
        self._topology = topology
        self._max_age = max_age.total_seconds()
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._depths: dict[str, tuple[float, int]] = {}
        self._lock = asyncio.Lock()

    async def depth(self, route_key: str) -> int:
        cached = self._depths.get(route_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._lock:
            depth = await self._measure(route_key)
        self._depths[route_key] = (time.monotonic() + self._max_age, depth)
        return depth

    async def _measure(self, route_key: str) -> int:
        """Ready messages of the route's queues (one per priority class on quorum)."""
        return sum([await self._measure_queue(q) for q in self._topology.route_queues(route_key)])

    async def _measure_queue(self, queue: str) -> int:
        try:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._link.channel(publisher_confirms=False)
            ok = await self._channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None  # the broker closed the channel; the queue is not there yet
            return 0
        except BackendUnavailable:
            raise
        except AMQP_ERRORS as err:
            self._channel = None
            raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err
        return int(ok.message_count or 0)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*AMQP_ERRORS):
                await self._channel.close()
        self._channel = None


class Admission:
    """Decides whether a tenant may add jobs to a route now."""

    def __init__(
        self,
        limiter: TenantRateLimiter,
        gauge: QueueDepthGauge,
        settings: BridgeSettings,
        *,
        waiting_of: Callable[[str], Awaitable[int]],
        balance_of: Callable[[str], Awaitable[int]],
    ) -> None:
        self._balance_of = balance_of
        self._limiter = limiter
        self._gauge = gauge
        self._settings = settings
        self._waiting_of = waiting_of
        self._backlogs: dict[str, tuple[float, int]] = {}

    async def check_tenant(self, specs: Sequence[job_pb2.JobSpec], caller: Caller) -> None:
        """The tenant's policy allows every spec (PermissionDenied) and, for mainnet, its
        credit covers them (FailedPrecondition; one balance read per call, however many
        jobs): ``tenant_policy``."""
        for spec in specs:
            check_policy(spec, caller.tenant_id, caller.policy)
        await check_credit(specs, caller.tenant_id, caller.policy, self._balance_of)

    async def check_backlog(self, tenant_id: str, *, adding: int = 1) -> None:
        """Raises ResourceExhausted (reason TENANT_BACKLOG_FULL) when the tenant already has
        ``max_waiting_per_tenant`` jobs waiting.

        The count is a query, reused for ``queue_depth_cache`` (plus what this replica
        admitted meanwhile) only while it is at most half the limit: far from the cap a
        little staleness cannot matter, near it every Submit counts afresh."""
        limit = self._settings.max_waiting_per_tenant
        now = time.monotonic()
        cached = self._backlogs.get(tenant_id)
        if cached is not None and cached[0] > now and 2 * (cached[1] + adding) <= limit:
            waiting, expires = cached[1], cached[0]
        else:
            waiting = await self._waiting_of(tenant_id)
            expires = now + self._settings.queue_depth_cache.total_seconds()
        self._backlogs[tenant_id] = (expires, waiting + adding)
        if waiting + adding > limit:
            raise ResourceExhausted(
                f"tenant {tenant_id} has {waiting} jobs waiting; at most {limit}",
                retry_delay=self._settings.queue_full_retry,
                reason="TENANT_BACKLOG_FULL",
                quota_subject=f"tenant-backlog:{tenant_id}",
            )

    async def check_queue(self, route_key: str, priority: int, *, adding: int = 1) -> None:
        """Raises ResourceExhausted (reason QUEUE_FULL) when the route's queue is too deep
        for the priority class."""
        limit = self._settings.max_queue_depth * DEPTH_FACTOR.get(priority, 1)
        depth = await self._gauge.depth(route_key)
        if depth + adding > limit:
            name = job_pb2.PriorityClass.Name(priority).removeprefix("PRIORITY_CLASS_").lower()
            raise ResourceExhausted(
                f"queue {route_key} holds {depth} jobs; {name} jobs are admitted up to {limit}",
                retry_delay=self._settings.queue_full_retry,
                reason="QUEUE_FULL",
                quota_subject=f"queue:{route_key}",
            )

    async def take(self, tenant_id: str, *, rate: float, burst: int, cost: int = 1) -> None:
        await self._limiter.take(tenant_id, rate=rate, burst=burst, cost=cost)
