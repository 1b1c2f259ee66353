"""SQL behind dead-letter replay: the check and the insert in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from fleetwire.domain.states import JobState
from fleetwire.store.db import translating
from fleetwire.store.jobs import NewJob, insert_queued_job


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """What ``ReplayStore.replay`` found and did."""

    original: asyncpg.Record | None  # None: no such job
    replacement: asyncpg.Record | None  # the replay job, new or made earlier
    created: bool  # True only for the call that wrote ``replacement``


class ReplayStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def replay(
        self, original_id: uuid.UUID, make: Callable[[asyncpg.Record], NewJob]
    ) -> ReplayRecord:
        """Writes ``make(original)`` as a QUEUED job replaying ``original_id`` when the
        original is DEAD_LETTERED and was never replayed; otherwise writes nothing. The
        original row is locked meanwhile, and a unique index on ``replay_of`` backs the
        check, so concurrent replays of one dead letter make one job."""
        async with self._pool.acquire() as conn, conn.transaction():
            original = await conn.fetchrow(
                "SELECT * FROM jobs WHERE job_id = $1 FOR UPDATE", original_id
            )
            if original is None or original["state"] != JobState.DEAD_LETTERED:
                return ReplayRecord(original, None, created=False)
            earlier = await conn.fetchrow("SELECT * FROM jobs WHERE replay_of = $1", original_id)
            if earlier is not None:
                return ReplayRecord(original, earlier, created=False)
            job = make(original)
            await insert_queued_job(conn, job)
            replacement = await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job.job_id)
            return ReplayRecord(original, replacement, created=True)

    @translating
    async def replacement_of(self, job_id: uuid.UUID) -> uuid.UUID | None:
        """The job that replays ``job_id``, if any."""
        replacement: uuid.UUID | None = await self._pool.fetchval(
            "SELECT job_id FROM jobs WHERE replay_of = $1", job_id
        )
        return replacement
