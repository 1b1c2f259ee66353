"""What the bridge does with a job: accept, look up, follow, cancel. No gRPC here."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from asyncpg import Record

from broker_bridge.admission import Admission
from broker_bridge.auth import Caller
from broker_bridge.final_notices import FinalNotices
from broker_bridge.idempotency import RequestLocks
from broker_bridge.outbox import Outbox
from broker_bridge.unsettled import UnsettledRows
from broker_bridge.watch_output import FROM_START, WatchCursor, final_attempt, output_chunk
from fleetwire.domain.errors import (
    BackendUnavailable,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from fleetwire.domain.job_view import job_from_row
from fleetwire.domain.states import JobState
from fleetwire.domain.validation import validate_spec
from fleetwire.messaging.events import ChunkEvent, Event, JobEvents, StateEvent
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.messaging.topology import NETWORK_NAMES, Topology
from fleetwire.process.coalescer import Coalescer
from fleetwire.process.settings import Settings
from fleetwire.process.tracing import tracer
from fleetwire.protocol.facts import request_facts
from fleetwire.protocol.signing import request_digest
from fleetwire.store.jobs import JobStore, NewJob
from fleetwire.store.outbox import OutboxStore
from fleetwire.v1 import job_pb2, job_service_pb2

log = structlog.get_logger(__name__)

WATCH_POLL = timedelta(seconds=2)


def parse_id(raw: str, field: str = "job_id") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as err:
        raise InvalidArgument([FieldViolation(field, "not an id (UUID)")]) from err


def submit_digest(spec: job_pb2.JobSpec) -> bytes:
    """SHA-256 of a validated spec: two submits with one request id must have equal ones."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).digest()


def new_job(
    spec: job_pb2.JobSpec,
    *,
    topology: Topology,
    tenant_id: str,
    trace_id: str,
    now: datetime,
    publish_lease: timedelta,
    batch_id: uuid.UUID | None = None,
    batch_index: int | None = None,
) -> tuple[NewJob, JobMessage]:
    """The row and the AMQP message of a validated spec; the row is written with a publish
    claim of its own (the outbox), held for ``publish_lease``."""
    job_id = uuid.uuid4()
    network = NETWORK_NAMES[spec.network]
    # A subcloud's jobs have a queue of their own, consumed only where its members are.
    route_key = topology.route_key(network, spec.model, spec.constraints.subcloud)
    ttl = spec.ttl.ToTimedelta()
    expires_at = now + ttl
    row = NewJob(
        job_id=job_id,
        spec=spec.SerializeToString(deterministic=True),
        model=spec.model,
        network=network,
        priority=job_pb2.PriorityClass.Name(spec.priority),
        route_key=route_key,
        request_digest=request_digest(request_facts(str(job_id), spec)),
        trace_id=trace_id,
        expires_at=expires_at,
        tenant_id=tenant_id,
        client_request_id=spec.client_request_id or None,
        submit_digest=submit_digest(spec),
        batch_id=batch_id,
        batch_index=batch_index,
        publish_claim=uuid.uuid4(),
        publish_lease=publish_lease,
    )
    message = JobMessage.of(
        str(job_id), spec, route_key=route_key, expires_at=expires_at, trace_id=trace_id
    )
    return row, message


def job_attributes(row: NewJob) -> dict[str, str]:
    """Span attributes naming the job a span is about (its id; the rest bounded)."""
    return {
        "fleetwire.job_id": str(row.job_id),
        "fleetwire.route": row.route_key,
        "fleetwire.model": row.model,
        "fleetwire.priority": row.priority,
        "fleetwire.network": row.network,
    }


def queued_job(row: NewJob, spec: job_pb2.JobSpec, now: datetime) -> job_pb2.Job:
    """The accepted job as Submit answers it (built from what was written)."""
    accepted = job_pb2.Job(
        job_id=str(row.job_id), state=job_pb2.JOB_STATE_QUEUED, spec=spec, trace_id=row.trace_id
    )
    accepted.created_at.FromDatetime(now)
    accepted.updated_at.FromDatetime(now)
    accepted.expires_at.FromDatetime(row.expires_at)
    return accepted


class JobDesk:
    """Submit, Status, Watch and Cancel over the store, the publisher and the event
    streams, always on behalf of one tenant."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        publisher: JobPublisher,
        events: JobEvents,
        admission: Admission,
        locks: RequestLocks,
        unsettled: UnsettledRows,
        finals: FinalNotices,
        outbox: Outbox,
        outbox_store: OutboxStore,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._outbox_store = outbox_store
        self._finals = finals
        self._store = store
        self._publisher = publisher
        self._events = events
        self._admission = admission
        self._locks = locks
        self._unsettled = unsettled
        self._topology = Topology(settings.mesh.namespace)
        # Reads arriving together (SYNC waiters woken by final notices, Status calls)
        # go as one statement.
        self._read: Coalescer[tuple[uuid.UUID, str], Record | None] = Coalescer(
            store.jobs_of_tenants, name="job-reads"
        )
        # Submits arriving together write their rows in one statement and one commit.
        self._insert: Coalescer[NewJob, bool] = Coalescer(store.insert_jobs, name="job-inserts")

    def validate(self, spec: job_pb2.JobSpec) -> job_pb2.JobSpec:
        return validate_spec(spec, models=self._settings.mesh.models, limits=self._settings.bridge)

    async def submit(self, spec: job_pb2.JobSpec, *, caller: Caller, trace_id: str) -> job_pb2.Job:
        """Accepts a job: admitted, row written, message confirmed, then the job is
        returned. If the publish fails the row is removed again, so an error to the client
        means no job (but see ``UnsettledRows`` for a bridge that dies first). With a
        client request id, returns the existing job when the tenant used the id before
        (same spec; FAILED_PRECONDITION otherwise), also when another replica is accepting
        it at this moment; a job found unpublished (its writer died) is published first.
        Spans of the call's trace: ``validate``, ``admit``, ``insert`` and the publisher's
        ``publish``."""
        with tracer().start_as_current_span("validate"):
            spec = self.validate(spec)
        request_id = spec.client_request_id
        if not request_id:
            accepted = await self._admit_and_accept(spec, caller, trace_id)
            if accepted is None:  # only a request id can conflict
                raise RuntimeError("a submit without a request id wrote no job")
            return accepted
        async with self._locks.held("job", caller.tenant_id, request_id):
            existing = await self._store.job_by_request_id(caller.tenant_id, request_id)
            if existing is not None and self._unsettled.holds(existing["job_id"]):
                # Left by this request's earlier, failed attempt: never published.
                await self._unsettled.settle(existing["job_id"])
                existing = None
            if existing is None:
                accepted = await self._admit_and_accept(spec, caller, trace_id)
                if accepted is not None:
                    return accepted
                existing = await self._store.job_by_request_id(caller.tenant_id, request_id)
                if existing is None:  # pragma: no cover - inserted and deleted meanwhile
                    raise BackendUnavailable("postgresql", "concurrent submit; retry")
            answer = self._replayed(existing, spec, request_id)
            if existing["publish_due_at"] is not None:
                # Written by a call that may have died before publishing: never answer
                # "accepted" for a job that is not on its way.
                await self._outbox.take_over([existing["job_id"]])
        return answer

    def _replayed(
        self, row: Mapping[str, Any], spec: job_pb2.JobSpec, request_id: str
    ) -> job_pb2.Job:
        if row["submit_digest"] is not None and bytes(row["submit_digest"]) != submit_digest(spec):
            raise FailedPrecondition(
                # Never the other job's id: under one tenant (anonymous callers share one)
                # an error must not hand out a job its caller was not told about.
                f"client_request_id {request_id!r} was used for a different job; "
                "use a new id for a new job",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        log.info("duplicate submit answered with the original job", job_id=str(row["job_id"]))
        return job_from_row(row)

    async def _admit_and_accept(
        self, spec: job_pb2.JobSpec, caller: Caller, trace_id: str
    ) -> job_pb2.Job | None:
        now = datetime.now(UTC)
        row, message = new_job(
            spec,
            topology=self._topology,
            tenant_id=caller.tenant_id,
            trace_id=trace_id,
            now=now,
            publish_lease=self._outbox.lease,
        )
        with tracer().start_as_current_span("admit", attributes={"fleetwire.route": row.route_key}):
            await self._admission.check_tenant([spec], caller)
            await self._admission.check_queue(row.route_key, spec.priority)
            await self._admission.check_backlog(caller.tenant_id)
            await self._admission.take(
                caller.tenant_id, rate=caller.rate_per_second, burst=caller.burst
            )
        try:
            with tracer().start_as_current_span("insert", attributes=job_attributes(row)):
                if not await self._insert(row):
                    return None
        except BackendUnavailable:
            # The row may have been committed with only the reply lost.
            self._forget_unpublished(row)
            raise
        try:
            await self._publisher.publish(message)
        except BaseException as err:
            # Not confirmed (or the call was cancelled): leave nothing that could run later.
            try:
                gone = await asyncio.shield(self._withdraw(row))
            except BackendUnavailable:
                self._forget_unpublished(row)
                raise err from None
            if gone or not isinstance(err, Exception):
                raise
            # A scheduler already took the message (its confirm was lost): the job runs, so
            # the truthful answer is the job, not an error.
            log.warning("publish unconfirmed but the job was dispatched", job_id=str(row.job_id))
        self._outbox.published([row.job_id])
        log.debug("job accepted", job_id=str(row.job_id), route=row.route_key)
        # No QUEUED event: a follower's first read of PostgreSQL shows it, and events only
        # wake followers for later changes (a round trip per job saved).
        return queued_job(row, spec, now)

    async def _withdraw(self, row: NewJob) -> bool:
        if row.publish_claim is None:  # pragma: no cover - new_job always claims
            return False
        return await self._outbox_store.withdraw(row.job_id, row.publish_claim)

    def _forget_unpublished(self, row: NewJob) -> None:
        async def undo() -> None:
            if not await self._withdraw(row):
                log.warning("unconfirmed job goes on after all", job_id=str(row.job_id))

        self._unsettled.remember(row.job_id, f"job {row.job_id}", undo)

    async def status(self, raw_job_id: str, *, tenant_id: str) -> job_pb2.Job:
        """The job; NOT_FOUND also when it belongs to another tenant."""
        row = await self._read((parse_id(raw_job_id), tenant_id))
        if row is None:
            raise NotFound(f"job {raw_job_id} not found")
        return job_from_row(row)

    async def wait_terminal(
        self, raw_job_id: str, *, tenant_id: str, job: job_pb2.Job | None = None
    ) -> job_pb2.Job:
        """Follows the job until it is terminal (the caller bounds the wait). ``job`` is
        its state as the caller last saw it (read here when None). PostgreSQL is read again
        only when a final notice comes or a poll interval passes without one: a SYNC job
        costs one read after its accept."""
        if job is None:
            job = await self.status(raw_job_id, tenant_id=tenant_id)
        while not is_terminal(job):
            await self._finals.wait(raw_job_id, WATCH_POLL.total_seconds())
            job = await self.status(raw_job_id, tenant_id=tenant_id)
        return job

    async def watch(
        self,
        raw_job_id: str,
        *,
        tenant_id: str,
        cursor: WatchCursor = FROM_START,
        tokens: bool = True,
    ) -> AsyncIterator[job_service_pb2.WatchResponse]:
        """The current state first, then chunks after ``cursor`` and state changes until
        terminal. The state
        is always read from PostgreSQL; Redis only wakes the loop and carries tokens, so a
        lost stream degrades to polling instead of hanging. A SUCCEEDED job whose final
        attempt's chunks the stream did not hold (expired after the finished-stream
        retention, or lost) gets its output from PostgreSQL as one chunk before the final
        state (``watch_output.output_chunk``)."""
        job = await self.status(raw_job_id, tenant_id=tenant_id)
        terminal_at_start = is_terminal(job)
        if not terminal_at_start:
            yield job_service_pb2.WatchResponse(job=job)
        last_id = "0"
        last_state = job.state
        block: timedelta | None = WATCH_POLL
        # Already final: replay the final attempt's chunks (while Redis keeps them, else its
        # output from PostgreSQL) and then the final state, so a late Watch sees the same
        # stream as an early one (and a client that stops at the terminal state still gets
        # the tokens).
        replay_attempt = 0
        streamed: set[int] = set()  # attempts whose chunks the stream held
        if terminal_at_start:
            if not job.attempts:
                yield job_service_pb2.WatchResponse(job=job)
                return
            replay_attempt, block = final_attempt(job), None
        while True:
            events = await self._events_or_poll(raw_job_id, last_id, block)
            if block is None and not events:
                # Drained after the job became terminal: every chunk the node produced was
                # relayed before the result, so nothing is left to send but the final state
                # (and the output, when the stream no longer had it).
                chunk = output_chunk(job, streamed_attempts=streamed, cursor=cursor)
                if tokens and chunk is not None:
                    yield job_service_pb2.WatchResponse(chunk=chunk)
                yield job_service_pb2.WatchResponse(job=job)
                return
            state_changed = not events
            for entry_id, event in events:
                last_id = entry_id
                if isinstance(event, ChunkEvent):
                    streamed.add(event.attempt)
                    if replay_attempt and event.attempt != replay_attempt:
                        continue
                    if tokens and cursor.passes(event.attempt, event.sequence):
                        yield job_service_pb2.WatchResponse(
                            chunk=job_service_pb2.TokenChunk(
                                sequence=event.sequence,
                                text=event.text,
                                token_count=event.token_count,
                                attempt=event.attempt,
                            )
                        )
                elif isinstance(event, StateEvent):
                    state_changed = True
            if state_changed and block is not None:
                job = await self.status(raw_job_id, tenant_id=tenant_id)
                if is_terminal(job):
                    block = None  # send what is left in the stream, then the final job
                    continue
                if job.state != last_state:
                    last_state = job.state
                    yield job_service_pb2.WatchResponse(job=job)

    async def _events_or_poll(
        self, job_id: str, last_id: str, block: timedelta | None
    ) -> list[tuple[str, Event]]:
        """The job's events after ``last_id``; none after a poll interval when Redis is
        down, so followers degrade to polling PostgreSQL instead of failing."""
        try:
            return await self._events.read(job_id, last_id, block=block)
        except BackendUnavailable:
            log.warning("job events unavailable; polling", job_id=job_id)
            await asyncio.sleep(WATCH_POLL.total_seconds())
            return []

    async def cancel(self, raw_job_id: str, reason: str, *, tenant_id: str) -> job_pb2.Job:
        """Cancels a live job; a terminal job is returned unchanged."""
        await self.status(raw_job_id, tenant_id=tenant_id)  # NOT_FOUND for foreign jobs
        row = await self._store.end_job(
            parse_id(raw_job_id),
            JobState.CANCELLED,
            reason="CANCELLED_BY_CLIENT",
            message=reason[:256] or "cancelled by the client",
        )
        if row is None:
            raise NotFound(f"job {raw_job_id} not found")
        if row["state"] == JobState.CANCELLED:
            await self.publish_state(raw_job_id, JobState.CANCELLED)
            await self.relay_cancel(raw_job_id)
        return job_from_row(row)

    async def relay_cancel(self, job_id: str) -> None:
        try:
            await self._events.request_cancel(job_id)
        except BackendUnavailable:
            log.warning("cancel not relayed to schedulers", job_id=job_id)

    async def publish_state(self, job_id: str, state: JobState) -> None:
        try:
            await self._events.publish_state(job_id, state)
        except BackendUnavailable:
            log.warning("state event not published", job_id=job_id, state=state.value)


def is_terminal(job: job_pb2.Job) -> bool:
    return JobState.from_proto(job.state).is_terminal
