"""All SQL on jobs and their attempts. PostgreSQL is the source of truth.

Every state change is a guarded UPDATE (see ``fleetwire.states``): a duplicated, late or
replayed event finds the guard false and changes nothing, which is what makes finalisation
exactly-once however often a result or an AMQP message is redelivered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import asyncpg

from fleetwire.db import translating
from fleetwire.ledger import Prices
from fleetwire.states import JobState, predecessor_names

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
    # The outbox (``fleetwire.outbox_store``): who publishes the job's message, and for how
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


@dataclass(frozen=True, slots=True)
class OpenedAttempt:
    number: int
    request_digest: bytes


@dataclass(frozen=True, slots=True)
class SignedOutcome:
    """A verified result, as stored with the job."""

    attempt: int
    node_id: str
    output: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float]
    signature: bytes
    public_key: bytes
    key_id: str
    finished_at_ms: int


class JobStore:
    """Jobs, attempts and node keys over one asyncpg pool."""

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
        in the order asked (for ``fleetwire.coalescer.Coalescer``)."""
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
    async def attempts_of(self, job_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT * FROM attempts WHERE job_id = $1 ORDER BY attempt", job_id
            )
        )

    @translating
    async def begin_attempts(
        self, items: Sequence[tuple[uuid.UUID, str]], scheduler_id: str
    ) -> list[OpenedAttempt | None]:
        """Marks each job DISPATCHED to its node under a new attempt number and returns the
        attempt with the job's request digest (what the dispatch carries), in the order
        asked; None for a job that is terminal (or unknown) and must not run. An attempt left
        open by a crashed scheduler is closed as LOST. One statement (data-modifying CTEs
        over the unnested pairs), so one round trip and atomic without an explicit
        transaction. A job named twice is begun once per mention, one after the other."""
        first: dict[uuid.UUID, int] = {}
        again: list[int] = []
        for index, (job_id, _) in enumerate(items):
            if job_id in first:
                again.append(index)
            else:
                first[job_id] = index
        rows = await self._pool.fetch(
            "WITH input AS ("
            "  SELECT * FROM unnest($1::uuid[], $2::text[]) AS i(job_id, node_id)"
            "), job AS ("
            "  UPDATE jobs j SET state = 'DISPATCHED', attempts = j.attempts + 1,"
            "  node_id = i.node_id, updated_at = now(), error_reason = NULL,"
            "  error_message = NULL, publish_claim = NULL, publish_due_at = NULL"
            "  FROM input i WHERE j.job_id = i.job_id AND j.state = ANY($3)"
            "  RETURNING j.job_id, j.attempts, j.request_digest, j.node_id"
            "), superseded AS ("
            "  UPDATE attempts a SET outcome = 'LOST', ended_at = now(),"
            "  error_reason = 'SUPERSEDED', error_message = 'redelivered to a new attempt'"
            "  FROM job WHERE a.job_id = job.job_id AND a.outcome IN ('DISPATCHED', 'RUNNING')"
            "), opened AS ("
            "  INSERT INTO attempts (job_id, attempt, node_id, scheduler_id, outcome)"
            "  SELECT job_id, attempts, node_id, $4, 'DISPATCHED' FROM job"
            ") SELECT job_id, attempts, request_digest FROM job",
            [items[index][0] for index in first.values()],
            [items[index][1] for index in first.values()],
            predecessor_names(JobState.DISPATCHED),
            scheduler_id,
        )
        begun = {
            row["job_id"]: OpenedAttempt(row["attempts"], bytes(row["request_digest"]))
            for row in rows
        }
        answers = [
            begun.get(job_id) if first[job_id] == i else None for i, (job_id, _) in enumerate(items)
        ]
        for index in again:
            (answers[index],) = await self.begin_attempts([items[index]], scheduler_id)
        return answers

    @translating
    async def mark_running(self, job_id: uuid.UUID, attempt: int) -> bool:
        moved: bool | None = await self._pool.fetchval(
            "WITH job AS ("
            "  UPDATE jobs SET state = 'RUNNING', updated_at = now()"
            "  WHERE job_id = $1 AND attempts = $2 AND state = 'DISPATCHED' RETURNING true AS moved"
            "), started AS ("
            "  UPDATE attempts SET outcome = 'RUNNING', started_at = now()"
            "  WHERE job_id = $1 AND attempt = $2 AND outcome = 'DISPATCHED'"
            ") SELECT moved FROM job",
            job_id,
            attempt,
        )
        return bool(moved)

    async def finalise_success(
        self, job_id: uuid.UUID, outcome: SignedOutcome, prices: Prices | None = None
    ) -> bool:
        """Stores a verified result, makes the job SUCCEEDED and (with ``prices``) bills it
        (see ``fleetwire.ledger``), atomically. True only for the call that finalised it; a
        duplicate, a result of a superseded attempt, or one from a node the attempt was not
        dispatched to returns False and bills nothing."""
        amount = prices.cost(outcome.prompt_tokens, outcome.completion_tokens) if prices else 0
        (done,) = await self.finalise_successes([(job_id, outcome, amount)])
        return done

    @translating
    async def finalise_successes(
        self, items: Sequence[tuple[uuid.UUID, SignedOutcome, int]]
    ) -> list[bool]:
        """``finalise_success`` for many (job id, outcome, amount to bill) at once: one
        statement (data-modifying CTEs over the unnested results: the jobs, their attempts,
        the ledger), one round trip instead of a six-step transaction per job. A job named
        twice is finalised at most once (the second finds it SUCCEEDED)."""
        first: dict[uuid.UUID, int] = {}
        again: list[int] = []
        for index, (job_id, _, _) in enumerate(items):
            if job_id in first:
                again.append(index)
            else:
                first[job_id] = index
        chosen = [items[index] for index in first.values()]
        rows = await self._pool.fetch(
            "WITH input AS ("
            "  SELECT * FROM unnest($1::uuid[], $2::int[], $3::bytea[], $4::text[],"
            "  $5::bigint[], $6::bigint[], $7::text[], $8::bytea[], $9::bytea[], $10::text[],"
            "  $11::bigint[], $12::text[], $13::bigint[]) AS i(job_id, attempt, output,"
            "  finish_reason, prompt_tokens, completion_tokens, timings, signature,"
            "  public_key, key_id, finished_at_ms, node_id, amount)"
            "), job AS ("
            "  UPDATE jobs j SET state = 'SUCCEEDED', updated_at = now(), output = i.output,"
            "  finish_reason = i.finish_reason, prompt_tokens = i.prompt_tokens,"
            "  completion_tokens = i.completion_tokens, timings = i.timings::jsonb,"
            "  signature = i.signature, public_key = i.public_key, key_id = i.key_id,"
            "  signed_attempt = i.attempt, finished_at_ms = i.finished_at_ms"
            "  FROM input i"
            # node_id: the attempt's node (begin_attempts), so a node cannot finalise an
            # attempt dispatched to another, even with a valid signature of its own.
            "  WHERE j.job_id = i.job_id AND j.attempts = i.attempt AND j.node_id = i.node_id"
            "  AND j.state = ANY($14)"
            "  RETURNING j.job_id, j.tenant_id, j.network, j.node_id, i.attempt, i.amount"
            "), closed AS ("
            "  UPDATE attempts a SET outcome = 'SUCCEEDED', ended_at = now()"
            "  FROM job WHERE a.job_id = job.job_id AND a.attempt = job.attempt"
            "), billed AS ("
            "  INSERT INTO ledger_entries (job_id, account, kind, amount)"
            "  SELECT job.job_id, e.account, e.kind, e.amount FROM job"
            "  LEFT JOIN nodes n ON n.node_id = job.node_id"
            "  CROSS JOIN LATERAL (VALUES"
            "    ('tenant:' || job.tenant_id, 'JOB_CHARGE', -job.amount),"
            "    ('owner:' || coalesce(n.owner, job.node_id), 'NODE_EARNING', job.amount)"
            "  ) AS e(account, kind, amount)"
            "  WHERE job.network = 'mainnet' AND job.amount > 0"
            "  ON CONFLICT (job_id, kind) DO NOTHING"
            ") SELECT job_id FROM job",
            [job_id for job_id, _, _ in chosen],
            [o.attempt for _, o, _ in chosen],
            [o.output.encode() for _, o, _ in chosen],
            [o.finish_reason for _, o, _ in chosen],
            [o.prompt_tokens for _, o, _ in chosen],
            [o.completion_tokens for _, o, _ in chosen],
            [json.dumps(o.timings) for _, o, _ in chosen],
            [o.signature for _, o, _ in chosen],
            [o.public_key for _, o, _ in chosen],
            [o.key_id for _, o, _ in chosen],
            [o.finished_at_ms for _, o, _ in chosen],
            [o.node_id for _, o, _ in chosen],
            [amount for _, _, amount in chosen],
            predecessor_names(JobState.SUCCEEDED),
        )
        finalised = {row["job_id"] for row in rows}
        answers = [
            first[job_id] == index and job_id in finalised
            for index, (job_id, _, _) in enumerate(items)
        ]
        for index in again:
            (answers[index],) = await self.finalise_successes([items[index]])
        return answers

    @translating
    async def end_attempt(
        self,
        job_id: uuid.UUID,
        attempt: int,
        *,
        attempt_outcome: str,
        job_state: JobState,
        reason: str,
        message: str,
    ) -> bool:
        """Closes an attempt (FAILED, LOST, REJECTED, CANCELLED) and moves the job to
        ``job_state`` (RETRYING to run again, or a terminal state). False when the job had
        already moved on (another attempt, or terminal)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE attempts SET outcome = $3, ended_at = now(), error_reason = $4,"
                " error_message = $5 WHERE job_id = $1 AND attempt = $2"
                " AND outcome IN ('DISPATCHED', 'RUNNING')",
                job_id,
                attempt,
                attempt_outcome,
                reason,
                _clean(message),
            )
            # A retry keeps no error on the job; a terminal failure records why.
            moved = await conn.fetchval(
                "UPDATE jobs SET state = $3, updated_at = now(),"
                " error_reason = CASE WHEN $3 = 'RETRYING' THEN error_reason ELSE $4 END,"
                " error_message = CASE WHEN $3 = 'RETRYING' THEN error_message ELSE $5 END"
                " WHERE job_id = $1 AND attempts = $2 AND state = ANY($6) RETURNING true",
                job_id,
                attempt,
                job_state.value,
                reason,
                _clean(message),
                predecessor_names(job_state),
            )
            return bool(moved)

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
            _clean(message[:1000]),
        )


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; node-supplied messages may."""
    return text.replace("\x00", "\ufffd")


def record_dict(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row.items())
