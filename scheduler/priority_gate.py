"""Strict priority across a route's quorum queues (one per priority class).

RabbitMQ 3.10's quorum queues carry no priorities, so a route has one queue per class and
the scheduler consumes them all, each with a prefetch of the route's slots. Deliveries of
every class therefore arrive side by side; the gate lets at most ``capacity`` of them (the
route's slots) go on to the dispatcher at once, the highest priority first and, within a
priority, in arrival order. What waits at the gate stays unacked: at most ``capacity``
deliveries per class queue, and a crash hands them back to the broker.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    """Admits at most ``capacity`` holders at once, highest ``priority`` first.

    ``admitted(priority)`` is an async context manager; a waiter cancelled before it is
    admitted leaves the queue, one cancelled after gives its place back."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._held = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    def resize(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self._held < self._capacity:
            _, _, future = heapq.heappop(self._waiting)
            if future.done():  # cancelled while waiting
                continue
            self._held += 1
            future.set_result(None)

    @asynccontextmanager
    async def admitted(self, priority: int) -> AsyncIterator[None]:
        if self._held < self._capacity and not self._waiting:
            self._held += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (-priority, next(self._order), future))
            self._admit()
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # admitted, then cancelled before entering
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._held -= 1
        self._admit()
