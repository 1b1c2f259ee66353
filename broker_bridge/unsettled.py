"""Rows a failed Submit may have left behind, removed once PostgreSQL answers again.

When the connection drops while an INSERT commits (PostgreSQL restarting, a network cut),
the bridge cannot tell whether the row was written: the server may have committed and lost
only the reply. The client is told UNAVAILABLE, so such a row must not stay: it was never
published, so it would sit QUEUED forever, or worse, be returned to an idempotent retry as
if it had been accepted. The same holds for a withdrawal that PostgreSQL could not take
after a failed publish. These rows are remembered here and removed in the background as
soon as the database is reachable; a retry with the same request id settles them first.
The withdrawal is the claimant's (see ``fleetwire.store.outbox``): should this bridge die
first, the row's publish claim lapses and an outbox relay publishes it — a job that an
UNAVAILABLE answer did not create after all, found again by a retry with the same request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.process.background import BackgroundTask

log = structlog.get_logger(__name__)

RETRY_EVERY = 1.0
GIVE_UP_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class _Cleanup:
    what: str
    undo: Callable[[], Awaitable[object]]
    since: float
    covers: frozenset[uuid.UUID]


class UnsettledRows:
    """Owns the retrying removal of possibly-written rows; ``start``/``stop``; ``stop``
    makes one last attempt (drain) before giving up on what is left, which it logs."""

    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, _Cleanup] = {}
        self._wake = asyncio.Event()
        self._loop = BackgroundTask("unsettled-rows", self._sweep_forever)

    def remember(
        self,
        key: uuid.UUID,
        what: str,
        undo: Callable[[], Awaitable[object]],
        *,
        covers: Iterable[uuid.UUID] = (),
    ) -> None:
        """``undo`` must be idempotent: it runs until it once returns without raising.
        ``covers`` are the job rows ``undo`` removes (``key`` itself for a single job)."""
        self._pending[key] = _Cleanup(what, undo, time.monotonic(), frozenset([key, *covers]))
        log.warning("row may be half-written; removing it when the database is back", row=what)
        self._wake.set()

    def holds(self, key: uuid.UUID) -> bool:
        return key in self._pending

    def covered_jobs(self) -> set[uuid.UUID]:
        """Every job row this process means to withdraw: the outbox relay leaves them."""
        return {job_id for cleanup in self._pending.values() for job_id in cleanup.covers}

    async def settle(self, key: uuid.UUID) -> None:
        """Removes the row for ``key`` now (raises BackendUnavailable if it cannot)."""
        cleanup = self._pending.get(key)
        if cleanup is not None:
            await cleanup.undo()
            self._pending.pop(key, None)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        with contextlib.suppress(BackendUnavailable):
            await self._sweep()
        for cleanup in self._pending.values():
            log.error("row left unsettled at shutdown", row=cleanup.what)

    async def _sweep_forever(self) -> None:
        while not self._loop.stopping:
            with contextlib.suppress(TimeoutError):  # not wait_for: see QueueConsumers
                async with asyncio.timeout(RETRY_EVERY):
                    await self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(BackendUnavailable):
                await self._sweep()

    async def _sweep(self) -> None:
        for key, cleanup in list(self._pending.items()):
            if time.monotonic() - cleanup.since > GIVE_UP_AFTER:
                log.error("gave up removing a half-written row", row=cleanup.what)
                self._pending.pop(key, None)
                continue
            await cleanup.undo()
            self._pending.pop(key, None)
            log.info("half-written row removed", row=cleanup.what)
