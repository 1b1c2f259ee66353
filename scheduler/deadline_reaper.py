"""Every job reaches a terminal state by its deadline, whatever went wrong.

A lost message, a process that died holding a job, a node that went silent without its
stream breaking: whichever way a job was dropped, once it is ``FLEETWIRE_SCHEDULER_REAP_GRACE``
past its ``expires_at`` and still live, the reaper makes it EXPIRED (``DEADLINE_PASSED``,
with the state it was found in) and tells followers and the node that may still run it.
Every scheduler replica runs one; a PostgreSQL advisory lock lets one sweep at a time, and
each sweep closes jobs in bounded batches found through a partial index of live deadlines,
so a sweep costs the overdue jobs, not the table. Nothing is billed for an expired job; a
result that arrives afterwards finds it terminal and changes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import JobEvents, StateEvent
from fleetwire.process.background import BackgroundTask
from scheduler.deadline_store import DeadlineStore, ReapedJob

log = structlog.get_logger(__name__)


class DeadlineReaper:
    """``start``/``stop``; ``sweep`` closes every overdue job now (also used by tests)."""

    def __init__(
        self,
        store: DeadlineStore,
        events: JobEvents,
        *,
        interval: timedelta,
        grace: timedelta,
        batch: int,
    ) -> None:
        self._store = store
        self._events = events
        self._interval = interval.total_seconds()
        self._grace = grace
        self._batch = batch
        self._loop = BackgroundTask("deadline-reaper", self._run)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sweep(self) -> int:
        """Closes overdue jobs batch by batch until none is left (or another replica holds
        the reaper's lock); returns how many this call closed."""
        closed = 0
        while True:
            reaped = await self._store.expire_overdue(self._grace, self._batch)
            if not reaped:
                return closed
            closed += len(reaped)
            await self._announce(reaped)
            if len(reaped) < self._batch:
                return closed

    async def _announce(self, reaped: list[ReapedJob]) -> None:
        for job in reaped:
            log.warning(
                "job expired by the deadline reaper",
                job_id=str(job.job_id),
                was=job.was.value,
                node_id=job.node_id,
            )
        try:
            await self._events.publish_events(
                [(str(job.job_id), StateEvent(JobState.EXPIRED)) for job in reaped]
            )
            for job in reaped:
                if job.was in (JobState.DISPATCHED, JobState.RUNNING):
                    await self._events.request_cancel(str(job.job_id))  # free the node's slot
        except BackendUnavailable as err:
            log.warning("reaped jobs not announced", error=err.message, jobs=len(reaped))

    async def _run(self) -> None:
        while not self._loop.stopping:
            try:
                await self.sweep()
            except BackendUnavailable as err:
                log.warning("deadline sweep failed; retrying", error=err.message)
            except Exception:  # a bug must not end the reaping for good
                log.exception("deadline sweep crashed; retrying")
            await asyncio.sleep(self._interval)
