"""All SQL on jobs: written, read by tenant and request id, ended, deferred. PostgreSQL is
the source of truth; an attempt's life (dispatched, running, ended or finalised) is
``fleetwire.store.attempts``.

Every state change is a guarded UPDATE (see ``fleetwire.domain.states``): a duplicated, late or
replayed event finds the guard false and changes nothing, which is what makes finalisation
exactly-once however often a result or an AMQP message is redelivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import asyncpg

from fleetwire.domain.states import JobState, predecessor_names
from fleetwire.store.db import translating

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: uuid.UUID
    spec: bytes
    model: str
    network: str
    priority: str
    route_key: str
    request_digest: bytes
    trace_id: str
    expires_at: datetime
    tenant_id: str = "anonymous"
    client_request_id: str | None = None  # None: no idempotency key
    submit_digest: bytes | None = None  # SHA-256 of the spec as accepted
    batch_id: uuid.UUID | None = None
    batch_index: int | None = None
    replay_of: uuid.UUID | None = None  # the DEAD_LETTERED job this one replays
    # The outbox (``fleetwire.store.outbox``): who publishes the job's message, and for how
    # long before any outbox relay may. None: written as already published.
    publish_claim: uuid.UUID | None = None
    publish_lease: timedelta = timedelta(0)


_INSERT_JOB = (
    "INSERT INTO jobs (job_id, state, spec, model, network, priority, route_key,"
    " request_digest, trace_id, expires_at, tenant_id, client_request_id, submit_digest,"
    " batch_id, batch_index, replay_of, publish_claim, publish_due_at)"
    " VALUES ($1, 'QUEUED', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
    " $16::uuid, CASE WHEN $16::uuid IS NULL THEN NULL ELSE now() + $17::interval END)"
)


_INSERT_JOBS = (
    "INSERT INTO jobs (job_id, state, spec, model, network, priority, route_key,"
    " request_digest, trace_id, expires_at, tenant_id, client_request_id, submit_digest,"
    " batch_id, batch_index, replay_of, publish_claim, publish_due_at)"
    " SELECT j, 'QUEUED', s, m, n, p, r, d, t, e, tn, c, sd, b, bi, ro, pc,"
    " CASE WHEN pc IS NULL THEN NULL ELSE now() + pl END"
    " FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::bytea[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], $12::bytea[],"
    " $13::uuid[], $14::integer[], $15::uuid[], $16::uuid[], $17::interval[])"
    " AS v(j, s, m, n, p, r, d, t, e, tn, c, sd, b, bi, ro, pc, pl)"
    " ON CONFLICT ON CONSTRAINT jobs_tenant_request_key DO NOTHING RETURNING job_id"
)
"""``_INSERT_JOB`` for many rows: one array per column, in ``_job_args``' order."""


def _job_args(job: NewJob) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.spec,
        job.model,
        job.network,
        job.priority,
        job.route_key,
        job.request_digest,
        job.trace_id,
        job.expires_at,
        job.tenant_id,
        job.client_request_id,
        job.submit_digest,
        job.batch_id,
        job.batch_index,
        job.replay_of,
        job.publish_claim,
        job.publish_lease,
    )


async def insert_queued_job(conn: asyncpg.Connection, job: NewJob) -> None:
    """Writes ``job`` as QUEUED on ``conn`` (inside the caller's transaction)."""
    await conn.execute(_INSERT_JOB, *_job_args(job))


async def insert_queued_jobs(conn: asyncpg.Connection, jobs: Sequence[NewJob]) -> None:
    """Writes every one of ``jobs`` as QUEUED on ``conn`` (inside the caller's transaction)."""
    await conn.executemany(_INSERT_JOB, [_job_args(job) for job in jobs])


class JobStore:
    """Jobs over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def insert_job(self, job: NewJob) -> bool:
        """Writes a QUEUED job. False (nothing written) when the tenant already has a job
        with the same client request id: the unique constraint is the last word."""
        inserted = await self._pool.fetchval(
            _INSERT_JOB + " ON CONFLICT ON CONSTRAINT jobs_tenant_request_key DO NOTHING"
            " RETURNING true",
            *_job_args(job),
        )
        return bool(inserted)

    @translating
    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[bool]:
        """``insert_job`` for many jobs in one statement and one commit (the bridge's
        concurrent Submits, coalesced): per job, whether it was written."""
        if len(jobs) == 1:
            return [await self.insert_job(jobs[0])]
        columns = list(zip(*(_job_args(job) for job in jobs), strict=True))
        written = {
            row["job_id"]
            for row in await self._pool.fetch(_INSERT_JOBS, *(list(c) for c in columns))
        }
        return [job.job_id in written for job in jobs]

    @translating
    async def waiting_jobs_of_tenant(self, tenant_id: str) -> int:
        """How many of the tenant's jobs wait for a node (QUEUED or RETRYING)."""
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state IN ('QUEUED', 'RETRYING')",
            tenant_id,
        )
        return count

    @translating
    async def job_of_tenant(self, job_id: uuid.UUID, tenant_id: str) -> asyncpg.Record | None:
        """The job if it belongs to ``tenant_id``; None for unknown and foreign jobs alike."""
        return await self._pool.fetchrow(
            "SELECT * FROM jobs WHERE job_id = $1 AND tenant_id = $2", job_id, tenant_id
        )

    @translating
    async def jobs_of_tenants(
        self, keys: Sequence[tuple[uuid.UUID, str]]
    ) -> list[asyncpg.Record | None]:
        """``job_of_tenant`` for many (job id, tenant id) pairs in one statement, answers
        in the order asked (for ``fleetwire.process.coalescer.Coalescer``)."""
        rows = await self._pool.fetch(
            "SELECT * FROM jobs WHERE job_id = ANY($1::uuid[])", [job_id for job_id, _ in keys]
        )
        by_id = {row["job_id"]: row for row in rows}
        answers: list[asyncpg.Record | None] = []
        for job_id, tenant_id in keys:
            row = by_id.get(job_id)
            answers.append(row if row is not None and row["tenant_id"] == tenant_id else None)
        return answers

    @translating
    async def job_by_request_id(
        self, tenant_id: str, client_request_id: str
    ) -> asyncpg.Record | None:
        return await self._pool.fetchrow(
            "SELECT * FROM jobs WHERE tenant_id = $1 AND client_request_id = $2",
            tenant_id,
            client_request_id,
        )

    @translating
    async def get_job(self, job_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)

    @translating
    async def end_job(
        self, job_id: uuid.UUID, state: JobState, *, reason: str, message: str
    ) -> asyncpg.Record | None:
        """Moves a live job to terminal ``state`` (CANCELLED, EXPIRED, FAILED) whatever its
        attempt, closing an open attempt. Returns the job row afterwards (None if unknown);
        a job that was already terminal keeps its state."""
        if not state.is_terminal:
            raise ValueError(f"end_job needs a terminal state, not {state}")
        async with self._pool.acquire() as conn, conn.transaction():
            # A job that expires after being deferred for want of an eligible node says so.
            moved = await conn.fetchval(
                "UPDATE jobs SET state = $2, updated_at = now(),"
                " error_message = CASE WHEN $2 = 'EXPIRED' AND error_reason = 'NO_ELIGIBLE_NODE'"
                " THEN error_message ELSE $4 END,"
                " error_reason = CASE WHEN $2 = 'EXPIRED' AND error_reason = 'NO_ELIGIBLE_NODE'"
                " THEN error_reason ELSE $3 END"
                " WHERE job_id = $1 AND state = ANY($5) RETURNING true",
                job_id,
                state.value,
                reason,
                message,
                predecessor_names(state),
            )
            if moved:
                await conn.execute(
                    "UPDATE attempts SET outcome = $2, ended_at = now(), error_reason = $3,"
                    " error_message = $4"
                    " WHERE job_id = $1 AND outcome IN ('DISPATCHED', 'RUNNING')",
                    job_id,
                    "CANCELLED" if state is JobState.CANCELLED else "FAILED",
                    reason,
                    message,
                )
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT * FROM jobs WHERE job_id = $1", job_id
            )
            return row

    @translating
    async def note_deferral(self, job_id: uuid.UUID, message: str) -> None:
        """Remembers on a waiting job why no node took it; if its TTL runs out before one
        does, it expires with reason NO_ELIGIBLE_NODE and this message."""
        await self._pool.execute(
            "UPDATE jobs SET error_reason = 'NO_ELIGIBLE_NODE', error_message = $2"
            " WHERE job_id = $1 AND state IN ('QUEUED', 'RETRYING')",
            job_id,
            clean_text(message[:1000]),
        )


def clean_text(text: str) -> str:
    """PostgreSQL text cannot hold NUL; node-supplied messages may."""
    return text.replace("\x00", "\ufffd")


def record_dict(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row.items())
