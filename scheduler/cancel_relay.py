"""Listens on the Redis cancel channel and aborts cancelled jobs this replica runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog

from fleetwire.events import REDIS_ERRORS

log = structlog.get_logger(__name__)


class CancelRelay:
    """``start``/``stop``; resubscribes by itself after a Redis outage."""

    def __init__(
        self, redis: aioredis.Redis, channel: str, on_cancel: Callable[[str], Awaitable[None]]
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="cancel-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        job_id = message["data"].decode()
                        try:
                            await self._on_cancel(job_id)
                        except Exception:
                            log.exception("cancel failed", job_id=job_id)
            except REDIS_ERRORS as err:
                log.warning("cancel channel lost; resubscribing", error=str(err))
                await asyncio.sleep(1.0)
