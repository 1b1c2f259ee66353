"""One owned background task per loop, with the stop every component needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class BackgroundTask:
    """Runs ``run`` as a task of its own from ``start`` until ``stop``.

    ``stop`` sets ``stopping`` before it cancels the task and waits for it: the loop checks
    the flag as well, since a driver (asyncpg, redis-py) may swallow a cancel that lands
    inside it. Idempotent; whatever the task raised is not raised again by ``stop``."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    def start(self) -> None:
        self.stopping = False

        async def main() -> None:
            await self._run()

        self._task = asyncio.create_task(main(), name=self._name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.stopping = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
