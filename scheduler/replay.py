"""Dead-letter replay: a DEAD_LETTERED job runs again as a new job. No gRPC here.

The original is never touched (terminal states stay terminal): the replacement is a new
row with a new id, the original's tenant and spec, a fresh TTL and ``replay_of`` naming the
original, published exactly as the bridge publishes a submitted job. Order of effects:
row written (once per dead letter, see ``ReplayStore``) → message confirmed → parked message
removed. A publish that fails removes the row again, so an error means nothing was
replayed and the operator may simply retry.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from fleetwire.domain.errors import BackendUnavailable, FailedPrecondition, NotFound
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import JobEvents
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.process.tracing import current_trace_id
from fleetwire.protocol.facts import request_facts
from fleetwire.protocol.signing import request_digest
from fleetwire.store.jobs import JobStore, NewJob
from fleetwire.store.outbox import OutboxStore
from fleetwire.v1 import job_pb2
from scheduler.dead_letter_shelf import DeadLetterShelf
from scheduler.replay_store import ReplayStore

log = structlog.get_logger(__name__)

PUBLISH_LEASE = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Replayed:
    job: asyncpg.Record  # the new job's row
    parked_message_removed: bool


def replacement_row(
    original: asyncpg.Record,
    *,
    trace_id: str,
    now: datetime,
    publish_lease: timedelta = PUBLISH_LEASE,
) -> NewJob:
    """The row of a job replaying ``original``: new id (and so a new request digest, which
    covers the id), same tenant, spec and route, TTL counted from ``now``. No client request
    id: that names the original for the tenant's idempotency. Written with a publish claim
    (the outbox): should this scheduler die before publishing, a bridge's relay does."""
    spec = job_pb2.JobSpec()
    spec.ParseFromString(bytes(original["spec"]))
    job_id = uuid.uuid4()
    return NewJob(
        job_id=job_id,
        spec=bytes(original["spec"]),
        model=original["model"],
        network=original["network"],
        priority=original["priority"],
        route_key=original["route_key"],
        request_digest=request_digest(request_facts(str(job_id), spec)),
        trace_id=trace_id,
        expires_at=now + spec.ttl.ToTimedelta(),
        tenant_id=original["tenant_id"],
        submit_digest=original["submit_digest"],
        replay_of=original["job_id"],
        publish_claim=uuid.uuid4(),
        publish_lease=publish_lease,
    )


class DeadLetterReplay:
    """Replays dead-lettered jobs; see the module docstring for the guarantees."""

    def __init__(
        self,
        replays: ReplayStore,
        jobs: JobStore,
        publisher: JobPublisher,
        shelf: DeadLetterShelf,
        events: JobEvents,
        outbox: OutboxStore,
    ) -> None:
        self._outbox = outbox
        self._replays = replays
        self._jobs = jobs
        self._publisher = publisher
        self._shelf = shelf
        self._events = events

    async def replay(self, job_id: uuid.UUID, *, trace_id: str) -> Replayed:
        """Replays ``job_id`` and returns the new job. NotFound for an unknown job;
        FailedPrecondition (JOB_NOT_DEAD_LETTERED) for a job in another state and
        (ALREADY_REPLAYED, naming the replacement) for one replayed before; BackendUnavailable
        or RouteUnavailable when the new job could not be published (nothing replayed).
        The new job belongs to the current trace (the admin call's server span) when there
        is one, else to ``trace_id``."""
        trace_id = current_trace_id() or trace_id
        now = datetime.now(UTC)
        record = await self._replays.replay(
            job_id, lambda original: replacement_row(original, trace_id=trace_id, now=now)
        )
        if record.original is None:
            raise NotFound(f"job {job_id} not found")
        if record.replacement is None:
            raise FailedPrecondition(
                f"job {job_id} is {record.original['state']}; only DEAD_LETTERED jobs replay",
                reason="JOB_NOT_DEAD_LETTERED",
            )
        replacement = record.replacement
        if not record.created:
            raise FailedPrecondition(
                f"job {job_id} was already replayed as {replacement['job_id']}",
                reason="ALREADY_REPLAYED",
            )
        new_id = str(replacement["job_id"])
        spec = job_pb2.JobSpec()
        spec.ParseFromString(bytes(replacement["spec"]))
        message = JobMessage.of(
            new_id,
            spec,
            route_key=replacement["route_key"],
            expires_at=replacement["expires_at"],
            trace_id=trace_id,
        )
        try:
            await self._publisher.publish(message)
        except BaseException as err:
            # As Submit does: leave nothing that could run later, unless a scheduler already
            # took the message (its confirm was lost), in which case the replay is real.
            gone = await asyncio.shield(
                self._outbox.withdraw(replacement["job_id"], replacement["publish_claim"])
            )
            if gone or not isinstance(err, Exception):
                raise
            log.warning("replay publish unconfirmed but the job was dispatched", job_id=new_id)
        else:
            try:
                await self._outbox.mark_published([replacement["job_id"]])
            except BackendUnavailable:
                log.warning("replay publication not recorded; a relay publishes it again")
        log.info("dead letter replayed", job_id=str(job_id), replayed_as=new_id)
        await self._publish_state(new_id)
        try:
            removed = await self._shelf.remove(str(job_id))
        except BackendUnavailable as err:
            log.warning("parked message not removed", job_id=str(job_id), error=err.message)
            removed = False
        return Replayed(job=replacement, parked_message_removed=removed)

    async def replacement_of(self, job_id: uuid.UUID) -> uuid.UUID | None:
        """The job that replays ``job_id``, if it was replayed."""
        return await self._replays.replacement_of(job_id)

    async def _publish_state(self, job_id: str) -> None:
        try:
            await self._events.publish_state(job_id, JobState.QUEUED)
        except BackendUnavailable:
            log.warning("state event not published", job_id=job_id)
