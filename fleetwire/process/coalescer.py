"""Concurrent calls run as one batch (group commit), without a timer.

The first call starts a batch at once, so an idle service pays no wait; calls that arrive
while a batch is in flight gather and go together in the next one. Under load one round
trip then serves many callers — the cost per call of a database statement falls with the
concurrency — and at low load nothing changes but one indirection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256


class Coalescer(Generic[T, R]):
    """``await coalescer(item)`` returns ``run_batch([..., item, ...])``'s answer for it.

    ``run_batch`` gets the items of one batch in arrival order and returns one answer per
    item, in the same order; if it raises, every caller of that batch gets the error. A
    caller that is cancelled leaves its item in the batch (as a query already sent would
    be). ``drain`` waits until no batch is in flight or waiting; the batch task is the
    coalescer's own and ends by itself when nothing waits.
    """

    def __init__(
        self, run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, name: str
    ) -> None:
        self._run_batch = run_batch
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=self._name)
        return await future

    async def drain(self) -> None:
        while self._runner is not None:
            await asyncio.wait([self._runner])

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                try:
                    answers = await self._run_batch([item for item, _ in batch])
                except BaseException as err:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                    if not isinstance(err, Exception):
                        raise
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._runner = None
            for _, future in self._waiting:  # only when cancelled: nobody hangs
                future.cancel()
            self._waiting.clear()
