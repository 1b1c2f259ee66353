"""The jobs table as its own outbox: the SQL of publishing a written job exactly once.

A job is written with a *publish claim* (a token of whoever is publishing it) and a time
after which the claim lapses (``publish_due_at``). The writer publishes the message and then
marks the row published (both columns NULL). Should the writer die in between, the claim
lapses and any bridge's outbox relay claims the row and publishes it; a retry of the same
client request id takes the row over at once. Ownership decides the one thing that is not
idempotent: only the current claimant may withdraw (delete) an unpublished row, so a row
that a retry has answered as accepted is never removed behind its back. Publishing twice
is harmless: the scheduler runs a job once, whichever of its messages comes first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from fleetwire.store.db import translating


@dataclass(frozen=True, slots=True)
class UnpublishedJob:
    """What a job's AMQP message is made of, read back from its row."""

    job_id: uuid.UUID
    spec: bytes
    route_key: str
    expires_at: datetime
    trace_id: str


_RETURNING = "RETURNING j.job_id, j.spec, j.route_key, j.expires_at, j.trace_id"


def _unpublished(rows: Sequence[asyncpg.Record]) -> list[UnpublishedJob]:
    return [
        UnpublishedJob(
            job_id=r["job_id"],
            spec=bytes(r["spec"]),
            route_key=r["route_key"],
            expires_at=r["expires_at"],
            trace_id=r["trace_id"],
        )
        for r in rows
    ]


class OutboxStore:
    """Claims, publication marks and withdrawals of unpublished job rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def claim_lapsed(
        self,
        claim: uuid.UUID,
        lease: timedelta,
        *,
        limit: int,
        skip: Sequence[uuid.UUID] = (),
    ) -> list[UnpublishedJob]:
        """Claims up to ``limit`` unpublished live jobs whose claim has lapsed, oldest
        first, for ``lease``; rows another relay is claiming at this moment are skipped
        (SKIP LOCKED), and so are ``skip`` (rows this process is withdrawing). Jobs past
        their deadline are left to the scheduler's deadline reaper."""
        return _unpublished(
            await self._pool.fetch(
                "UPDATE jobs j SET publish_claim = $1, publish_due_at = now() + $2::interval"
                # The IS NOT NULL repeats the partial index's predicate, so that a generic
                # plan scans jobs_unpublished_idx rather than every live job.
                " FROM (SELECT job_id FROM jobs WHERE publish_due_at IS NOT NULL"
                "  AND publish_due_at < now()"
                "  AND state = 'QUEUED' AND expires_at > now()"
                "  AND NOT (job_id = ANY($4::uuid[]))"
                "  ORDER BY publish_due_at LIMIT $3 FOR UPDATE SKIP LOCKED) due"
                " WHERE j.job_id = due.job_id " + _RETURNING,
                claim,
                lease,
                limit,
                list(skip),
            )
        )

    @translating
    async def take_over(
        self, job_ids: Sequence[uuid.UUID], claim: uuid.UUID, lease: timedelta
    ) -> list[UnpublishedJob]:
        """Claims those of ``job_ids`` that are still unpublished, whoever holds them: a
        retry of the request that wrote them publishes them now rather than wait for the
        claim to lapse. Returns what was taken (nothing for published jobs)."""
        return _unpublished(
            await self._pool.fetch(
                "UPDATE jobs j SET publish_claim = $2, publish_due_at = now() + $3::interval"
                " WHERE j.job_id = ANY($1::uuid[]) AND j.publish_due_at IS NOT NULL"
                " AND j.state = 'QUEUED' " + _RETURNING,
                list(job_ids),
                claim,
                lease,
            )
        )

    @translating
    async def mark_published(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Records that the jobs' messages were confirmed by RabbitMQ (by anyone)."""
        await self._pool.execute(
            "UPDATE jobs SET publish_claim = NULL, publish_due_at = NULL"
            " WHERE job_id = ANY($1::uuid[]) AND publish_due_at IS NOT NULL",
            list(job_ids),
        )

    @translating
    async def withdraw(self, job_id: uuid.UUID, claim: uuid.UUID) -> bool:
        """Deletes an unpublished job that ``claim`` still holds (its publish failed, or
        whether it was written at all is unknown), so nothing half-written can run. False
        when the job exists and goes on: a scheduler took its message although the confirm
        was lost, or another claimant (a retry, a relay) publishes it now."""
        deleted = await self._pool.fetchval(
            "DELETE FROM jobs WHERE job_id = $1 AND publish_claim = $2"
            " AND state = 'QUEUED' AND attempts = 0 RETURNING true",
            job_id,
            claim,
        )
        return (
            bool(deleted)
            or await self._pool.fetchval("SELECT true FROM jobs WHERE job_id = $1", job_id) is None
        )
