"""A Redis pub/sub subscription that outlives Redis outages.

Pub/sub delivers only to those subscribed at the moment of publishing: a message published
while a listener is reconnecting is gone. Listeners therefore treat messages as hints (a
cancel to forward, a job to re-read) and never as the only record of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog

from fleetwire.messaging.events import REDIS_ERRORS

log = structlog.get_logger(__name__)

RESUBSCRIBE_DELAY_S = 1.0


class ChannelListener:
    """Calls ``on_message`` with each message (decoded) published on ``channel``.

    Lifecycle: ``start`` (subscribes in the background; waits briefly for the first
    subscription so that a process serving right after start hears what is published),
    ``stop`` (cancels the listener; idempotent). A handler error is logged, never fatal.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        *,
        name: str,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_message = on_message
        self._name = name
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 2.0) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._listen_forever(), name=self._name)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._subscribed.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"].decode()
                        try:
                            await self._on_message(data)
                        except Exception:
                            log.exception("channel message not handled", channel=self._channel)
            except REDIS_ERRORS as err:
                self._subscribed.clear()
                log.warning("channel lost; resubscribing", channel=self._channel, error=str(err))
                await asyncio.sleep(RESUBSCRIBE_DELAY_S)
