"""All SQL on batches: a batch row and its jobs, written, read and withdrawn together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from fleetwire.domain.states import JobState, predecessor_names
from fleetwire.store.db import translating
from fleetwire.store.jobs import NewJob, insert_queued_jobs


@dataclass(frozen=True, slots=True)
class NewBatch:
    batch_id: uuid.UUID
    tenant_id: str
    client_request_id: str | None
    request_digest: bytes
    trace_id: str
    jobs: list[NewJob]


class BatchStore:
    """Batches over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def insert_batch(self, batch: NewBatch) -> bool:
        """Writes the batch and all its jobs in one transaction. False (nothing written)
        when the tenant already has a batch with the same client request id."""
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO batches (batch_id, tenant_id, client_request_id, request_digest,"
                " job_count, trace_id) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT ON CONSTRAINT batches_tenant_request_key DO NOTHING"
                " RETURNING true",
                batch.batch_id,
                batch.tenant_id,
                batch.client_request_id,
                batch.request_digest,
                len(batch.jobs),
                batch.trace_id,
            )
            if not inserted:
                return False
            await insert_queued_jobs(conn, batch.jobs)
            return True

    @translating
    async def batch_of_tenant(self, batch_id: uuid.UUID, tenant_id: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(
            "SELECT * FROM batches WHERE batch_id = $1 AND tenant_id = $2", batch_id, tenant_id
        )

    @translating
    async def batch_by_request_id(
        self, tenant_id: str, client_request_id: str
    ) -> asyncpg.Record | None:
        return await self._pool.fetchrow(
            "SELECT * FROM batches WHERE tenant_id = $1 AND client_request_id = $2",
            tenant_id,
            client_request_id,
        )

    @translating
    async def batch_jobs(self, batch_id: uuid.UUID) -> list[asyncpg.Record]:
        """The batch's jobs (id, state), in submission order."""
        return list(
            await self._pool.fetch(
                "SELECT job_id, state FROM jobs WHERE batch_id = $1 ORDER BY batch_index, job_id",
                batch_id,
            )
        )

    @translating
    async def withdraw_batch(self, batch_id: uuid.UUID) -> None:
        """Undoes a batch whose publishing failed: every live job is cancelled (so no
        message that did reach the broker can run), never-dispatched jobs are deleted, and
        the batch row too when no job is left."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE jobs SET state = 'CANCELLED', updated_at = now(),"
                " error_reason = 'BATCH_ABORTED', error_message = 'the batch was not accepted'"
                " WHERE batch_id = $1 AND state = ANY($2)",
                batch_id,
                predecessor_names(JobState.CANCELLED),
            )
            await conn.execute("DELETE FROM jobs WHERE batch_id = $1 AND attempts = 0", batch_id)
            await conn.execute(
                "DELETE FROM batches b WHERE batch_id = $1"
                " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.batch_id)",
                batch_id,
            )
