"""Every written job reaches RabbitMQ, whichever bridge wrote it and whenever it died.

The bridge writes a job with a publish claim (``fleetwire.store.outbox``), publishes it,
answers the client once RabbitMQ confirmed, and records the publication in the background
(one statement for all the jobs confirmed meanwhile). Should the bridge die anywhere in
between, the row is the record: its claim lapses after ``FLEETWIRE_BRIDGE_OUTBOX_LEASE`` and
the relay of any bridge publishes it, or a retry of the same request takes it over at once.
A job may thus be published twice (its writer died after the confirm but before the mark);
the scheduler runs it once. The invariant, stated in docs/operations.md: a job that a client
was, or may later be, told is accepted is in RabbitMQ or in a row that some bridge will
publish; nothing else is ever answered as accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from fleetwire.domain.errors import BackendUnavailable, FleetwireError
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.process.background import BackgroundTask
from fleetwire.store.outbox import OutboxStore, UnpublishedJob
from fleetwire.v1 import job_pb2

log = structlog.get_logger(__name__)

RELAY_BATCH = 200


def message_of(job: UnpublishedJob, *, now: datetime) -> JobMessage:
    """The job's message as its writer would have published it, with what is left of its
    TTL."""
    spec = job_pb2.JobSpec()
    spec.ParseFromString(job.spec)
    return JobMessage.of(
        str(job.job_id),
        spec,
        route_key=job.route_key,
        expires_at=job.expires_at,
        trace_id=job.trace_id,
        ttl=max(job.expires_at - now, timedelta(milliseconds=1)),
    )


class Outbox:
    """Publication marks, take-overs and the relay of lapsed rows; ``start``/``stop``
    (``stop`` flushes the marks still waiting: a drain)."""

    def __init__(
        self,
        store: OutboxStore,
        publisher: JobPublisher,
        *,
        lease: timedelta,
        sweep: timedelta,
        withdrawing: Callable[[], Collection[uuid.UUID]] = frozenset,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self.lease = lease
        self._sweep_every = sweep.total_seconds()
        self._withdrawing = withdrawing
        self._marks: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._loop = BackgroundTask("outbox", self._run)

    def published(self, job_ids: Collection[uuid.UUID]) -> None:
        """Notes jobs whose messages RabbitMQ confirmed; recorded in the background."""
        self._marks.update(job_ids)
        self._wake.set()

    async def take_over(self, job_ids: Sequence[uuid.UUID]) -> int:
        """Publishes those of ``job_ids`` that are not yet known to be published, now, and
        returns how many it published. Raises BackendUnavailable or RouteUnavailable when
        it could not; the rows stay for the relay, never withdrawn (a client may already
        have been told they were accepted)."""
        taken = await self._store.take_over(job_ids, uuid.uuid4(), self.lease)
        if taken:
            await self._publish(taken, raise_first=True)
            log.info("unpublished jobs taken over and published", jobs=len(taken))
        return len(taken)

    async def relay_once(self) -> int:
        """Publishes lapsed rows (their writer died) until none is left; returns how many."""
        relayed = 0
        while True:
            due = await self._store.claim_lapsed(
                uuid.uuid4(), self.lease, limit=RELAY_BATCH, skip=list(self._withdrawing())
            )
            if not due:
                return relayed
            relayed += await self._publish(due, raise_first=False)
            log.warning("outbox relay published lapsed jobs", jobs=len(due))
            if len(due) < RELAY_BATCH:
                return relayed

    async def _publish(self, jobs: Sequence[UnpublishedJob], *, raise_first: bool) -> int:
        now = datetime.now(UTC)
        results = await asyncio.gather(
            *(self._publisher.publish(message_of(job, now=now)) for job in jobs),
            return_exceptions=True,
        )
        done = [job.job_id for job, r in zip(jobs, results, strict=True) if r is None]
        if done:
            await self._store.mark_published(done)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, FleetwireError):
                raise failure
        if failures and raise_first:
            raise failures[0]
        return len(done)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        with contextlib.suppress(BackendUnavailable):
            await self._flush_marks()
        if self._marks:
            log.warning(
                "publication marks left; the relay will publish these again", jobs=len(self._marks)
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not self._loop.stopping:
            with contextlib.suppress(TimeoutError):  # not wait_for: see QueueConsumers
                async with asyncio.timeout(max(0.0, next_sweep - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_marks()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._sweep_every
                    await self.relay_once()
            except FleetwireError as err:
                log.warning("outbox pass failed; retrying", error=err.message)
                next_sweep = loop.time() + self._sweep_every
                await asyncio.sleep(min(self._sweep_every, 1.0))
            except Exception:  # a bug must not end the relay for good
                log.exception("outbox pass crashed; retrying")
                next_sweep = loop.time() + self._sweep_every
                await asyncio.sleep(min(self._sweep_every, 1.0))

    async def _flush_marks(self) -> None:
        if not self._marks:
            return
        batch = list(self._marks)
        await self._store.mark_published(batch)
        self._marks.difference_update(batch)
