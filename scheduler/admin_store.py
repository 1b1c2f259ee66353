"""SQL behind the operator views (MeshAdminService)."""

from __future__ import annotations

import uuid

import asyncpg

from fleetwire.store.db import translating


class AdminStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def waiting_jobs(self) -> list[asyncpg.Record]:
        """(route_key, priority, count) of jobs QUEUED or RETRYING."""
        return list(
            await self._pool.fetch(
                "SELECT route_key, priority, count(*) AS waiting FROM jobs"
                " WHERE state IN ('QUEUED', 'RETRYING') GROUP BY route_key, priority"
                " ORDER BY route_key, priority"
            )
        )

    @translating
    async def dead_letters(self, limit: int) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT * FROM jobs WHERE state = 'DEAD_LETTERED'"
                " ORDER BY updated_at DESC LIMIT $1",
                limit,
            )
        )

    @translating
    async def penalties_24h(self) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT node_id, sum(count) AS n FROM node_penalties"
            " WHERE created_at > now() - interval '24 hours' GROUP BY node_id"
        )
        return {r["node_id"]: int(r["n"]) for r in rows}

    @translating
    async def balance(self, account: str) -> tuple[int, int]:
        """(balance in micro-credits, entry count) of ``account``."""
        row = await self._pool.fetchrow(
            "SELECT coalesce(sum(amount), 0) AS balance, count(*) AS entries"
            " FROM ledger_entries WHERE account = $1",
            account,
        )
        return int(row["balance"]), int(row["entries"])

    @translating
    async def job_and_attempts(
        self, job_id: uuid.UUID
    ) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
        async with self._pool.acquire() as conn:
            job = await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
            attempts = await conn.fetch(
                "SELECT * FROM attempts WHERE job_id = $1 ORDER BY attempt", job_id
            )
        return job, list(attempts)
