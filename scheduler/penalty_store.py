"""Records penalties in PostgreSQL (``node_penalties``), the durable per-node history."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from fleetwire.store.db import translating


class PenaltyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def record(
        self,
        *,
        node_id: str,
        offence: str,
        points: float,
        job_id: uuid.UUID | None,
        attempt: int | None,
        excluded_until: datetime | None,
        scheduler_id: str,
        count: int = 1,
    ) -> None:
        """One row: one offence (with its job and attempt), or ``count`` of the same kind
        summed (``points`` is their total)."""
        await self._pool.execute(
            "INSERT INTO node_penalties (node_id, offence, points, job_id, attempt,"
            " excluded_until, scheduler_id, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            node_id,
            offence,
            points,
            job_id,
            attempt,
            excluded_until,
            scheduler_id,
            count,
        )
