"""What the bridge does with a job: accept, look up, follow, cancel. No gRPC here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import structlog

from broker_bridge.publisher import JobMessage, JobPublisher
from fleetwire.errors import (
    BackendUnavailable,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from fleetwire.events import ChunkEvent, JobEvents, StateEvent
from fleetwire.job_store import JobStore, NewJob
from fleetwire.job_view import job_from_row
from fleetwire.settings import Settings
from fleetwire.signing import request_digest
from fleetwire.states import JobState
from fleetwire.topology import NETWORK_NAMES, PRIORITY_OF_CLASS, Topology
from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire.validation import request_facts, validate_spec

log = structlog.get_logger(__name__)

WATCH_POLL = timedelta(seconds=2)


def parse_job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as err:
        raise InvalidArgument([FieldViolation("job_id", "not a job id (UUID)")]) from err


class JobDesk:
    """Submit, Status, Watch and Cancel over the store, the publisher and the event streams."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        publisher: JobPublisher,
        events: JobEvents,
    ) -> None:
        self._settings = settings
        self._store = store
        self._publisher = publisher
        self._events = events
        self._topology = Topology(settings.mesh.namespace)

    async def submit(self, spec: job_pb2.JobSpec, *, trace_id: str) -> job_pb2.Job:
        """Accepts a job: row written, message confirmed, then the id is returned. If the
        publish fails the row is removed again, so an error to the client means no job."""
        spec = validate_spec(spec, models=self._settings.mesh.models, limits=self._settings.bridge)
        job_id = uuid.uuid4()
        network = NETWORK_NAMES[spec.network]
        route_key = self._topology.route_key(network, spec.model)
        ttl = spec.ttl.ToTimedelta()
        now = datetime.now(UTC)
        expires_at = now + ttl
        spec_bytes = spec.SerializeToString(deterministic=True)
        await self._store.insert_job(
            NewJob(
                job_id=job_id,
                spec=spec_bytes,
                model=spec.model,
                network=network,
                priority=job_pb2.PriorityClass.Name(spec.priority),
                route_key=route_key,
                request_digest=request_digest(request_facts(str(job_id), spec)),
                trace_id=trace_id,
                expires_at=expires_at,
            )
        )
        envelope = job_pb2.Job(job_id=str(job_id), spec=spec)
        envelope.expires_at.FromDatetime(expires_at)
        try:
            await self._publisher.publish(
                JobMessage(
                    job_id=str(job_id),
                    route_key=route_key,
                    body=envelope.SerializeToString(),
                    priority=PRIORITY_OF_CLASS[spec.priority],
                    ttl=ttl,
                    expires_at_ms=int(expires_at.timestamp() * 1000),
                    trace_id=trace_id,
                )
            )
        except BaseException:
            # Not confirmed (or the call was cancelled): leave nothing that could run later.
            await asyncio.shield(self._store.delete_unpublished(job_id))
            raise
        log.info("job accepted", job_id=str(job_id), route=route_key, trace_id=trace_id)
        await self._publish_state(str(job_id), JobState.QUEUED)
        accepted = job_pb2.Job(job_id=str(job_id), state=job_pb2.JOB_STATE_QUEUED, spec=spec)
        accepted.created_at.FromDatetime(now)
        accepted.updated_at.FromDatetime(now)
        accepted.expires_at.FromDatetime(expires_at)
        return accepted

    async def status(self, raw_job_id: str) -> job_pb2.Job:
        row = await self._store.get_job(parse_job_id(raw_job_id))
        if row is None:
            raise NotFound(f"job {raw_job_id} not found")
        return job_from_row(row)

    async def wait_terminal(self, raw_job_id: str) -> job_pb2.Job:
        """Follows the job until it is terminal (the caller bounds the wait)."""
        async for event in self.watch(raw_job_id, after_sequence=0, tokens=False):
            if event.HasField("job") and _is_terminal(event.job):
                return event.job
        return await self.status(raw_job_id)

    async def watch(
        self, raw_job_id: str, *, after_sequence: int, tokens: bool = True
    ) -> AsyncIterator[job_service_pb2.WatchResponse]:
        """The current state first, then chunks and state changes until terminal. The state
        is always read from PostgreSQL; Redis only wakes the loop and carries tokens, so a
        lost stream degrades to polling instead of hanging."""
        job = await self.status(raw_job_id)
        yield job_service_pb2.WatchResponse(job=job)
        if _is_terminal(job):
            return
        last_id = "0"
        last_state = job.state
        while True:
            try:
                events = await self._events.read(raw_job_id, last_id, block=WATCH_POLL)
            except BackendUnavailable:
                log.warning("watch: redis unavailable, polling", job_id=raw_job_id)
                await asyncio.sleep(WATCH_POLL.total_seconds())
                events = []
            state_changed = not events
            for entry_id, event in events:
                last_id = entry_id
                if isinstance(event, ChunkEvent):
                    if tokens and event.sequence > after_sequence:
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
            if state_changed:
                job = await self.status(raw_job_id)
                if job.state != last_state:
                    last_state = job.state
                    yield job_service_pb2.WatchResponse(job=job)
                if _is_terminal(job):
                    return

    async def cancel(self, raw_job_id: str, reason: str) -> job_pb2.Job:
        """Cancels a live job; a terminal job is returned unchanged."""
        job_id = parse_job_id(raw_job_id)
        row = await self._store.end_job(
            job_id,
            JobState.CANCELLED,
            reason="CANCELLED_BY_CLIENT",
            message=reason[:256] or "cancelled by the client",
        )
        if row is None:
            raise NotFound(f"job {raw_job_id} not found")
        if row["state"] == JobState.CANCELLED:
            await self._publish_state(raw_job_id, JobState.CANCELLED)
            try:
                await self._events.request_cancel(raw_job_id)
            except BackendUnavailable:
                log.warning("cancel not relayed to schedulers", job_id=raw_job_id)
        return job_from_row(row)

    async def _publish_state(self, job_id: str, state: JobState) -> None:
        try:
            await self._events.publish_state(job_id, state)
        except BackendUnavailable:
            log.warning("state event not published", job_id=job_id, state=state.value)


def _is_terminal(job: job_pb2.Job) -> bool:
    return JobState.from_proto(job.state).is_terminal
