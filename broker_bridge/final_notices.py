"""Wakes the bridge's SYNC waiters when their jobs become terminal.

Schedulers (and the bridge's own Cancel) announce every terminal state on the namespace's
``final`` channel after committing it. One subscription per bridge process replaces a
blocking stream read per waiting job, and a waiter reads PostgreSQL only once it has been
woken. A notice is a hint, never the answer: the waiter re-reads the job, and without a
notice (Redis away, a message lost while resubscribing) it wakes after its poll interval
anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis

from fleetwire.messaging.channels import ChannelListener

REMEMBER_S = 10.0
"""How long a notice nobody waited for is kept: a SYNC Submit subscribes only after its
job is accepted, and a fast job can be final before that."""


class FinalNotices:
    """``start``/``stop``; ``wait(job_id, within)`` from any number of waiters."""

    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        self._listener = ChannelListener(redis, channel, self._notice, name="final-notices")
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._recent: dict[str, float] = {}  # job id -> when noticed, oldest first

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
        for events in self._waiters.values():
            for event in events:
                event.set()  # let waiters re-read and finish (or time out) on their own

    async def wait(self, job_id: str, within: float) -> bool:
        """True once woken: a notice for ``job_id`` came (also if it came in the last
        ``REMEMBER_S`` seconds), or ``stop`` was called; False after ``within`` seconds
        without either. Either way the caller re-reads the job."""
        if job_id in self._recent:
            return True
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await event.wait()
            return event.is_set()
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    async def _notice(self, job_id: str) -> None:
        now = time.monotonic()
        self._recent.pop(job_id, None)
        self._recent[job_id] = now
        while self._recent:
            oldest, at = next(iter(self._recent.items()))
            if now - at <= REMEMBER_S:
                break
            del self._recent[oldest]
        for event in self._waiters.get(job_id, ()):
            event.set()
