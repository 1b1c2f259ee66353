"""Batches: many jobs accepted in one call under one id, followed as an aggregate."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from broker_bridge.admission import Admission
from broker_bridge.auth import Caller
from broker_bridge.desk import JobDesk, new_job, parse_id, submit_digest
from broker_bridge.idempotency import RequestLocks
from broker_bridge.outbox import Outbox
from broker_bridge.unsettled import UnsettledRows
from fleetwire.domain.errors import (
    BackendUnavailable,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from fleetwire.domain.job_view import job_from_row
from fleetwire.domain.states import JobState
from fleetwire.domain.validation import MAX_REQUEST_ID_BYTES
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.process.tracing import tracer
from fleetwire.store.batches import BatchStore, NewBatch
from fleetwire.store.jobs import JobStore, NewJob
from fleetwire.v1 import job_pb2, job_service_pb2

log = structlog.get_logger(__name__)

BATCH_POLL = timedelta(seconds=1)

_COUNTER_OF_STATE: dict[str, str] = {
    "QUEUED": "queued",
    "RETRYING": "queued",
    "DISPATCHED": "running",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "DEAD_LETTERED": "failed",
    "EXPIRED": "expired",
    "CANCELLED": "cancelled",
}


def batch_view(batch: Mapping[str, Any], jobs: list[Mapping[str, Any]]) -> Any:
    """The aggregate ``fleetwire.v1.Batch`` of a batch row and its jobs' (id, state)."""
    counts = Counter(_COUNTER_OF_STATE[row["state"]] for row in jobs)
    view = job_service_pb2.Batch(
        batch_id=str(batch["batch_id"]),
        total=len(jobs),
        job_ids=[str(row["job_id"]) for row in jobs],
        done=all(JobState(row["state"]).is_terminal for row in jobs),
        **counts,
    )
    view.created_at.FromDatetime(batch["created_at"])
    return view


class BatchDesk:
    """SubmitBatch, BatchStatus and WatchBatch for one tenant at a time."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        batches: BatchStore,
        publisher: JobPublisher,
        admission: Admission,
        locks: RequestLocks,
        jobs: JobDesk,
        unsettled: UnsettledRows,
        outbox: Outbox,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._unsettled = unsettled
        self._store = store
        self._batches = batches
        self._publisher = publisher
        self._admission = admission
        self._locks = locks
        self._jobs = jobs
        self._topology = Topology(settings.mesh.namespace)

    def _validated(self, specs: list[job_pb2.JobSpec]) -> list[job_pb2.JobSpec]:
        limit = self._settings.bridge.max_batch_jobs
        if not 1 <= len(specs) <= limit:
            raise InvalidArgument([FieldViolation("jobs", f"1 to {limit} jobs")])
        bad: list[FieldViolation] = []
        valid: list[job_pb2.JobSpec] = []
        for i, spec in enumerate(specs):
            if spec.client_request_id:
                bad.append(
                    FieldViolation(
                        f"jobs[{i}].client_request_id",
                        "must be empty; the batch's client_request_id covers its jobs",
                    )
                )
            item = job_pb2.JobSpec()
            item.CopyFrom(spec)
            item.mode = job_pb2.INFERENCE_MODE_BATCH
            try:
                valid.append(self._jobs.validate(item))
            except InvalidArgument as err:
                bad += [
                    FieldViolation(f"jobs[{i}].{v.field.removeprefix('job.')}", v.description)
                    for v in err.violations
                ]
        if bad:
            raise InvalidArgument(bad)
        return valid

    async def submit(
        self, specs: list[job_pb2.JobSpec], request_id: str, *, caller: Caller, trace_id: str
    ) -> Any:
        """Accepts every job or none. With a request id, the tenant's earlier batch with
        that id is returned (FAILED_PRECONDITION when its jobs differ), its jobs that are
        not yet published (their writer died) published first."""
        if len(request_id.encode()) > MAX_REQUEST_ID_BYTES or not request_id.isprintable():
            raise InvalidArgument(
                [
                    FieldViolation(
                        "client_request_id",
                        f"at most {MAX_REQUEST_ID_BYTES} bytes of printable characters",
                    )
                ]
            )
        with tracer().start_as_current_span("validate", attributes={"fleetwire.jobs": len(specs)}):
            valid = self._validated(specs)
        digest = hashlib.sha256(b"".join(submit_digest(s) for s in valid)).digest()
        if not request_id:
            return await self._accept(valid, digest, None, caller, trace_id)
        async with self._locks.held("batch", caller.tenant_id, request_id):
            existing = await self._batches.batch_by_request_id(caller.tenant_id, request_id)
            if existing is not None and self._unsettled.holds(existing["batch_id"]):
                # Left by this request's earlier, failed attempt: withdrawn first.
                await self._unsettled.settle(existing["batch_id"])
                existing = None
            if existing is None:
                accepted = await self._accept(valid, digest, request_id, caller, trace_id)
                if accepted is not None:
                    return accepted
                existing = await self._batches.batch_by_request_id(caller.tenant_id, request_id)
                if existing is None:  # pragma: no cover
                    raise BackendUnavailable("postgresql", "concurrent submit; retry")
            if bytes(existing["request_digest"]) != digest:
                raise FailedPrecondition(
                    f"client_request_id {request_id!r} was used for a different batch; "
                    "use a new id for a new batch",
                    reason="IDEMPOTENCY_KEY_REUSED",
                )
            jobs = await self._batches.batch_jobs(existing["batch_id"])
            await self._outbox.take_over([row["job_id"] for row in jobs])
        return batch_view(existing, jobs)

    async def _accept(
        self,
        specs: list[job_pb2.JobSpec],
        digest: bytes,
        request_id: str | None,
        caller: Caller,
        trace_id: str,
    ) -> Any:
        now = datetime.now(UTC)
        batch_id = uuid.uuid4()
        made = [
            new_job(
                spec,
                topology=self._topology,
                tenant_id=caller.tenant_id,
                trace_id=trace_id,
                now=now,
                publish_lease=self._outbox.lease,
                batch_id=batch_id,
                batch_index=index,
            )
            for index, spec in enumerate(specs)
        ]
        with tracer().start_as_current_span("admit"):
            await self._admission.check_tenant(specs, caller)
            per_route: Counter[tuple[str, int]] = Counter(
                (row.route_key, spec.priority) for (row, _), spec in zip(made, specs, strict=True)
            )
            for (route_key, priority), count in per_route.items():
                await self._admission.check_queue(route_key, priority, adding=count)
            await self._admission.check_backlog(caller.tenant_id, adding=len(made))
            await self._admission.take(
                caller.tenant_id, rate=caller.rate_per_second, burst=caller.burst, cost=len(made)
            )
        rows: list[NewJob] = [row for row, _ in made]
        batch = NewBatch(
            batch_id=batch_id,
            tenant_id=caller.tenant_id,
            client_request_id=request_id,
            request_digest=digest,
            trace_id=trace_id,
            jobs=rows,
        )
        try:
            with tracer().start_as_current_span(
                "insert",
                attributes={"fleetwire.batch_id": str(batch_id), "fleetwire.jobs": len(rows)},
            ):
                if not await self._batches.insert_batch(batch):
                    return None
        except BackendUnavailable:
            # The batch may have been committed with only the reply lost.
            self._forget(batch_id, [message for _, message in made])
            raise
        await self._publish_all(batch_id, [message for _, message in made])
        self._outbox.published([row.job_id for row in rows])
        log.info("batch accepted", batch_id=str(batch_id), jobs=len(made))
        return batch_view(
            {"batch_id": batch_id, "created_at": now},
            [{"job_id": row.job_id, "state": "QUEUED"} for row in rows],
        )

    async def _publish_all(self, batch_id: uuid.UUID, messages: list[JobMessage]) -> None:
        """All confirmed, or the batch is withdrawn (nothing of it can run) and the error
        raised."""
        try:
            results = await asyncio.gather(
                *(self._publisher.publish(m) for m in messages), return_exceptions=True
            )
        except BaseException:
            await asyncio.shield(self._withdraw(batch_id, messages))
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.shield(self._withdraw(batch_id, messages))
            raise failures[0]

    def _forget(self, batch_id: uuid.UUID, messages: list[JobMessage]) -> None:
        async def undo() -> None:
            await self._withdraw(batch_id, messages)

        self._unsettled.remember(
            batch_id,
            f"batch {batch_id}",
            undo,
            covers=[uuid.UUID(message.job_id) for message in messages],
        )

    async def _withdraw(self, batch_id: uuid.UUID, messages: list[JobMessage]) -> None:
        try:
            await self._batches.withdraw_batch(batch_id)
        except BackendUnavailable:
            if not self._unsettled.holds(batch_id):
                self._forget(batch_id, messages)
            raise
        for message in messages:
            await self._jobs.relay_cancel(message.job_id)
        log.warning("batch withdrawn: publishing failed", batch_id=str(batch_id))

    async def status(self, raw_batch_id: str, *, tenant_id: str) -> Any:
        batch_id = parse_id(raw_batch_id, "batch_id")
        batch = await self._batches.batch_of_tenant(batch_id, tenant_id)
        if batch is None:
            raise NotFound(f"batch {raw_batch_id} not found")
        return batch_view(batch, await self._batches.batch_jobs(batch_id))

    async def watch(
        self, raw_batch_id: str, *, tenant_id: str
    ) -> AsyncIterator[job_service_pb2.WatchBatchResponse]:
        """The aggregate first, then each job that is terminal with the aggregate of that
        moment — those already terminal at once, the others as they become so, polling
        PostgreSQL every second — until the batch is done. Every job is sent once."""
        batch_id = parse_id(raw_batch_id, "batch_id")
        batch = await self._batches.batch_of_tenant(batch_id, tenant_id)
        if batch is None:
            raise NotFound(f"batch {raw_batch_id} not found")
        jobs = await self._batches.batch_jobs(batch_id)
        view = batch_view(batch, jobs)
        yield job_service_pb2.WatchBatchResponse(batch=view)
        sent: set[str] = set()
        while True:
            for row in jobs:
                job_id = str(row["job_id"])
                if job_id in sent or not JobState(row["state"]).is_terminal:
                    continue
                sent.add(job_id)
                full = await self._store.job_of_tenant(row["job_id"], tenant_id)
                if full is not None:
                    yield job_service_pb2.WatchBatchResponse(batch=view, job=job_from_row(full))
            if view.done:
                return
            await asyncio.sleep(BATCH_POLL.total_seconds())
            jobs = await self._batches.batch_jobs(batch_id)
            view = batch_view(batch, jobs)
