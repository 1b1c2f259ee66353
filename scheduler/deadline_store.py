"""The SQL of the deadline reaper: live jobs past their deadline, closed in batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from fleetwire.domain.states import JobState
from fleetwire.store.db import translating

_REAPER_LOCK = 0x0F1EE8  # advisory lock key: one reaper at a time across replicas
# Written into the statement, not passed as a parameter: only a literal list lets a generic
# plan match the partial index ``jobs_live_deadline_idx`` (a parameter makes it a full scan).
LIVE_STATES = [s.value for s in JobState if not s.is_terminal]
LIVE_STATES_SQL = ", ".join(f"'{state}'" for state in LIVE_STATES)


@dataclass(frozen=True, slots=True)
class ReapedJob:
    job_id: uuid.UUID
    was: JobState  # the state it was found in
    node_id: str | None  # the node of its last attempt, if it had one


class DeadlineStore:
    """Finds and closes overdue jobs; see ``DeadlineReaper``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def expire_overdue(self, grace: timedelta, limit: int) -> list[ReapedJob] | None:
        """Makes up to ``limit`` live jobs whose ``expires_at`` is more than ``grace`` ago
        EXPIRED (reason ``DEADLINE_PASSED``), closing their open attempts as LOST, in one
        transaction; oldest deadline first, through the partial index of live deadlines.
        None when another replica's reaper holds the lock (it does the work)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _REAPER_LOCK):
                return None
            rows = await conn.fetch(
                "WITH due AS ("
                "  SELECT job_id, state, node_id FROM jobs"
                f"  WHERE state IN ({LIVE_STATES_SQL}) AND expires_at < now() - $1::interval"
                "  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
                "), ended AS ("
                "  UPDATE jobs j SET state = 'EXPIRED', updated_at = now(),"
                "  error_reason = 'DEADLINE_PASSED',"
                "  error_message = format('deadline passed while %s%s; nothing finished it"
                " by expires_at plus %s', due.state,"
                "   CASE WHEN due.state IN ('DISPATCHED', 'RUNNING')"
                "    THEN ' on node ' || due.node_id ELSE '' END, $1::interval),"
                "  publish_claim = NULL, publish_due_at = NULL"
                "  FROM due WHERE j.job_id = due.job_id"
                "  RETURNING j.job_id, due.state AS was, due.node_id"
                "), closed AS ("
                "  UPDATE attempts a SET outcome = 'LOST', ended_at = now(),"
                "  error_reason = 'DEADLINE_PASSED', error_message = 'the job passed its deadline'"
                "  FROM ended WHERE a.job_id = ended.job_id"
                "  AND a.outcome IN ('DISPATCHED', 'RUNNING')"
                ") SELECT job_id, was, node_id FROM ended",
                grace,
                limit,
            )
        return [ReapedJob(r["job_id"], JobState(r["was"]), r["node_id"]) for r in rows]
