"""All SQL on attempts: a job's runs on nodes, from dispatch to their end.

Each statement moves the job and its attempt together, guarded (see
``fleetwire.domain.states``): an attempt is begun only for a live job, finalised only for
the job's current attempt on the node it was dispatched to, and ended only while open — so
a duplicated, late or replayed event changes nothing, which is what makes finalisation
exactly-once however often a result or an AMQP message is redelivered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from fleetwire.domain.states import JobState, predecessor_names
from fleetwire.store.db import translating
from fleetwire.store.jobs import clean_text
from fleetwire.store.ledger import Bill, Prices

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OpenedAttempt:
    number: int
    request_digest: bytes
    rejected: int = 0  # earlier attempts a node rejected (they do not count as tries)

    @property
    def tries(self) -> int:
        """This attempt's number among those that were not rejected."""
        return self.number - self.rejected


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
    stream_check: str | None = None  # MATCHED / MISMATCHED; None: not compared


class AttemptStore:
    """Attempts, and the job state each of their steps implies, over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
            "  RETURNING j.job_id, j.attempts, j.request_digest, j.node_id, (SELECT count(*)"
            "  FROM attempts r WHERE r.job_id = j.job_id AND r.outcome = 'REJECTED') AS rejected"
            "), superseded AS ("
            "  UPDATE attempts a SET outcome = 'LOST', ended_at = now(),"
            "  error_reason = 'SUPERSEDED', error_message = 'redelivered to a new attempt'"
            "  FROM job WHERE a.job_id = job.job_id AND a.outcome IN ('DISPATCHED', 'RUNNING')"
            "), opened AS ("
            "  INSERT INTO attempts (job_id, attempt, node_id, scheduler_id, outcome)"
            "  SELECT job_id, attempts, node_id, $4, 'DISPATCHED' FROM job"
            ") SELECT job_id, attempts, request_digest, rejected FROM job",
            [items[index][0] for index in first.values()],
            [items[index][1] for index in first.values()],
            predecessor_names(JobState.DISPATCHED),
            scheduler_id,
        )
        begun = {
            row["job_id"]: OpenedAttempt(
                row["attempts"], bytes(row["request_digest"]), int(row["rejected"])
            )
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

    @translating
    async def mark_running_many(self, runs: Sequence[tuple[uuid.UUID, int]]) -> list[bool]:
        """``mark_running`` for many (job id, attempt) pairs in one statement and one
        commit (the scheduler's concurrent Accepts, coalesced): per pair, whether its job
        moved."""
        if len(runs) == 1:
            return [await self.mark_running(*runs[0])]
        moved = {
            row["job_id"]
            for row in await self._pool.fetch(
                "WITH input AS ("
                "  SELECT * FROM unnest($1::uuid[], $2::integer[]) AS i(job_id, attempt)"
                "), job AS ("
                "  UPDATE jobs j SET state = 'RUNNING', updated_at = now() FROM input i"
                "  WHERE j.job_id = i.job_id AND j.attempts = i.attempt"
                "  AND j.state = 'DISPATCHED' RETURNING j.job_id"
                "), started AS ("
                "  UPDATE attempts a SET outcome = 'RUNNING', started_at = now() FROM input i"
                "  WHERE a.job_id = i.job_id AND a.attempt = i.attempt"
                "  AND a.outcome = 'DISPATCHED'"
                ") SELECT job_id FROM job",
                [job_id for job_id, _ in runs],
                [attempt for _, attempt in runs],
            )
        }
        return [job_id in moved for job_id, _ in runs]

    async def finalise_success(
        self, job_id: uuid.UUID, outcome: SignedOutcome, prices: Prices | None = None
    ) -> bool:
        """Stores a verified result, makes the job SUCCEEDED and (with ``prices``) bills it
        (see ``fleetwire.store.ledger``), atomically. True only for the call that finalised it; a
        duplicate, a result of a superseded attempt, or one from a node the attempt was not
        dispatched to returns False and bills nothing."""
        bill = (
            Bill.of(prices, outcome.prompt_tokens, outcome.completion_tokens) if prices else Bill(0)
        )
        (done,) = await self.finalise_successes([(job_id, outcome, bill)])
        return bool(done)

    async def finalise_successes(
        self, items: Sequence[tuple[uuid.UUID, SignedOutcome, Bill]]
    ) -> list[bool | None]:
        """``finalise_success`` for many (job id, outcome, bill) at once: one statement
        (data-modifying CTEs over the unnested results: the jobs, their attempts, the
        ledger), one round trip instead of a six-step transaction per job. A job named twice
        is finalised at most once (the second finds it SUCCEEDED).

        One item PostgreSQL refuses as data (a value out of range, a byte sequence it cannot
        store) does not fail the others: the batch is finalised again item by item, and the
        refused item's answer is None (results are checked before they get here; this is
        the second line)."""
        try:
            return list(await self._finalise_batch(items))
        except asyncpg.DataError:
            if len(items) == 1:
                log.warning("result refused by the database", job_id=str(items[0][0]))
                return [None]
        answers: list[bool | None] = []
        for item in items:
            answers.extend(await self.finalise_successes([item]))
        return answers

    @translating
    async def _finalise_batch(
        self, items: Sequence[tuple[uuid.UUID, SignedOutcome, Bill]]
    ) -> list[bool]:
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
            "  $11::bigint[], $12::text[], $13::bigint[], $15::bigint[], $16::bigint[],"
            "  $17::text[], $18::text[]) AS i(job_id, attempt, output, finish_reason,"
            "  prompt_tokens, completion_tokens, timings, signature, public_key, key_id,"
            "  finished_at_ms, node_id, amount, billed_prompt, billed_completion, usage_source,"
            "  stream_check)"
            "), job AS ("
            "  UPDATE jobs j SET state = 'SUCCEEDED', updated_at = now(), output = i.output,"
            "  finish_reason = i.finish_reason, prompt_tokens = i.prompt_tokens,"
            "  completion_tokens = i.completion_tokens, timings = i.timings::jsonb,"
            "  signature = i.signature, public_key = i.public_key, key_id = i.key_id,"
            "  signed_attempt = i.attempt, finished_at_ms = i.finished_at_ms,"
            "  stream_check = i.stream_check"
            "  FROM input i"
            # node_id: the attempt's node (begin_attempts), so a node cannot finalise an
            # attempt dispatched to another, even with a valid signature of its own.
            "  WHERE j.job_id = i.job_id AND j.attempts = i.attempt AND j.node_id = i.node_id"
            "  AND j.state = ANY($14)"
            # A node whose key was revoked has no say any more, even on a result it signed
            # before the revocation reached its session.
            "  AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = i.node_id AND n.revoked)"
            "  RETURNING j.job_id, j.tenant_id, j.network, j.node_id, i.attempt, i.amount,"
            "  i.billed_prompt, i.billed_completion, i.usage_source"
            "), closed AS ("
            "  UPDATE attempts a SET outcome = 'SUCCEEDED', ended_at = now()"
            "  FROM job WHERE a.job_id = job.job_id AND a.attempt = job.attempt"
            "), billed AS ("
            "  INSERT INTO ledger_entries (job_id, account, kind, amount, prompt_tokens,"
            "  completion_tokens, usage_source)"
            "  SELECT job.job_id, e.account, e.kind, e.amount, job.billed_prompt,"
            "  job.billed_completion, job.usage_source FROM job"
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
            [bill.amount for _, _, bill in chosen],
            predecessor_names(JobState.SUCCEEDED),
            [bill.prompt_tokens for _, _, bill in chosen],
            [bill.completion_tokens for _, _, bill in chosen],
            [bill.usage_source for _, _, bill in chosen],
            [o.stream_check for _, o, _ in chosen],
        )
        finalised = {row["job_id"] for row in rows}
        answers = [
            first[job_id] == index and job_id in finalised
            for index, (job_id, _, _) in enumerate(items)
        ]
        for index in again:
            (answers[index],) = await self._finalise_batch([items[index]])
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
                clean_text(message),
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
                clean_text(message),
                predecessor_names(job_state),
            )
            return bool(moved)
