"""SQL behind the operator views (MeshAdminService)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from fleetwire.store.db import translating
from scheduler.job_pages import JobFilter, PageStart


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

    @translating
    async def jobs_page(
        self, jobs: JobFilter, start: PageStart | None, limit: int
    ) -> list[asyncpg.Record]:
        """Up to ``limit`` jobs of ``jobs``, newest first by (created_at, job_id), older
        than ``start``. Only the filters given become conditions, so each shape of query
        gets a plan that uses its index (``jobs_created_idx``, ``jobs_tenant_created_idx``)."""
        conditions: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if jobs.tenant is not None:
            conditions.append(f"tenant_id = {arg(jobs.tenant)}")
        if len(jobs.states) == 1:  # an equality keeps jobs_state_created_idx's order
            conditions.append(f"state = {arg(jobs.states[0].value)}")
        elif jobs.states:
            conditions.append(f"state = ANY({arg([s.value for s in jobs.states])}::text[])")
        if jobs.node_id is not None:
            conditions.append(f"node_id = {arg(jobs.node_id)}")
        if jobs.created_after is not None:
            conditions.append(f"created_at >= {arg(jobs.created_after)}")
        if jobs.created_before is not None:
            conditions.append(f"created_at < {arg(jobs.created_before)}")
        if start is not None:
            after = f"({arg(start.created_at)}, {arg(start.job_id)})"
            conditions.append(f"(created_at, job_id) < {after}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return list(
            await self._pool.fetch(
                "SELECT job_id, tenant_id, state, model, network, priority, route_key, attempts,"
                " node_id, created_at, updated_at, error_reason, error_message, replay_of,"
                " validation_challenge IS NOT NULL AS validation, signature IS NOT NULL AS signed"
                f" FROM jobs{where} ORDER BY created_at DESC, job_id DESC LIMIT {arg(limit)}",
                *args,
            )
        )

    @translating
    async def finished_per_minute(self, minutes: int) -> list[asyncpg.Record]:
        """(start, succeeded, failed, expired, cancelled, dead_lettered) for each of the last
        ``minutes`` whole minutes, the current one included, oldest first, zeros included."""
        return list(
            await self._pool.fetch(
                "WITH window_start AS ("
                "  SELECT date_trunc('minute', now()) - ($1::int - 1) * interval '1 minute' AS t"
                "), finished AS ("
                "  SELECT date_trunc('minute', updated_at) AS minute, state, count(*) AS n"
                "  FROM jobs, window_start WHERE updated_at >= window_start.t AND state IN"
                "  ('SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED', 'DEAD_LETTERED')"
                "  GROUP BY 1, 2"
                ") SELECT m.start,"
                " coalesce(sum(n) FILTER (WHERE state = 'SUCCEEDED'), 0)::bigint AS succeeded,"
                " coalesce(sum(n) FILTER (WHERE state = 'FAILED'), 0)::bigint AS failed,"
                " coalesce(sum(n) FILTER (WHERE state = 'EXPIRED'), 0)::bigint AS expired,"
                " coalesce(sum(n) FILTER (WHERE state = 'CANCELLED'), 0)::bigint AS cancelled,"
                " coalesce(sum(n) FILTER (WHERE state = 'DEAD_LETTERED'), 0)::bigint"
                "   AS dead_lettered"
                " FROM window_start, generate_series(window_start.t,"
                "   date_trunc('minute', now()), interval '1 minute') AS m(start)"
                " LEFT JOIN finished f ON f.minute = m.start GROUP BY m.start ORDER BY m.start",
                minutes,
            )
        )

    @translating
    async def offences_24h(self) -> dict[str, list[tuple[str, int]]]:
        """Each node's offences of the last 24 hours: (offence, count), most frequent first."""
        rows = await self._pool.fetch(
            "SELECT node_id, offence, sum(count) AS n FROM node_penalties"
            " WHERE created_at > now() - interval '24 hours' GROUP BY node_id, offence"
            " ORDER BY node_id, n DESC, offence"
        )
        offences: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            offences.setdefault(row["node_id"], []).append((row["offence"], int(row["n"])))
        return offences

    @translating
    async def exclusions(self) -> dict[str, datetime]:
        """When the exclusion of each node some replica excluded ends, for those still
        excluded (``node_penalties.excluded_until``)."""
        rows = await self._pool.fetch(
            "SELECT node_id, max(excluded_until) AS until FROM node_penalties"
            " WHERE excluded_until > now() GROUP BY node_id"
        )
        return {r["node_id"]: r["until"] for r in rows}

    @translating
    async def tenants(self, limit: int) -> list[asyncpg.Record]:
        """Tenants by id with their policy, live keys, ledger balance and waiting jobs."""
        return list(
            await self._pool.fetch(
                "SELECT t.tenant_id, t.created_at, t.allowed_priorities, t.allowed_networks,"
                " t.allowed_subclouds, t.credit_limit,"
                " (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.tenant_id"
                "   AND k.revoked_at IS NULL) AS live_keys,"
                " (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.tenant_id"
                "   AND j.state IN ('QUEUED', 'RETRYING')) AS waiting,"
                " l.balance, l.entries"
                " FROM tenants t, LATERAL (SELECT coalesce(sum(amount), 0) AS balance,"
                "   count(*) AS entries FROM ledger_entries"
                "   WHERE account = 'tenant:' || t.tenant_id) l"
                " ORDER BY t.tenant_id LIMIT $1",
                limit,
            )
        )

    @translating
    async def ledger_accounts(self, limit: int) -> tuple[list[asyncpg.Record], asyncpg.Record]:
        """(accounts by name with balance, entries and latest entry; the ledger's totals:
        charged as a positive number, earned, entries)."""
        async with self._pool.acquire() as conn:
            accounts = await conn.fetch(
                "SELECT account, sum(amount) AS balance, count(*) AS entries,"
                " max(created_at) AS last_entry_at FROM ledger_entries"
                " GROUP BY account ORDER BY account LIMIT $1",
                limit,
            )
            totals = await conn.fetchrow(
                "SELECT coalesce(-sum(amount) FILTER (WHERE kind = 'JOB_CHARGE'), 0) AS charged,"
                " coalesce(sum(amount) FILTER (WHERE kind = 'NODE_EARNING'), 0) AS earned,"
                " count(*) AS entries FROM ledger_entries"
            )
        return list(accounts), totals
