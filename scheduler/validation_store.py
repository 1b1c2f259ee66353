"""Validation challenges, the answers nodes gave, and what a node's reputation is made of
(migration 0018). The rules that judge answers are ``scheduler.validation_rules``; this
module only keeps what they decide, under a row lock per challenge so two schedulers
judging answers of one challenge at once cannot both settle it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.protocol.facts import request_facts
from fleetwire.protocol.signing import request_digest
from fleetwire.store.db import translating
from fleetwire.store.jobs import NewJob, insert_queued_job
from fleetwire.v1 import job_pb2
from scheduler.validation_rules import Answer, Judgement, Record, Status, Verdict, judge

VALIDATION_TENANT = "mesh-validation"


@dataclass(frozen=True, slots=True)
class Asked:
    """A validation job written for one node: the challenge it asks and the job itself."""

    challenge_id: uuid.UUID
    job_id: uuid.UUID
    spec: job_pb2.JobSpec
    expires_at: datetime
    fresh: bool  # a new challenge: nobody answered it yet
    trace_id: str = ""  # the job's W3C trace id (its row's)

    def envelope(self) -> job_pb2.Job:
        """The job as a delivery would carry it."""
        job = job_pb2.Job(job_id=str(self.job_id), spec=self.spec)
        job.expires_at.FromDatetime(self.expires_at)
        return job


@dataclass(frozen=True, slots=True)
class Standing:
    record: Record
    passed: int = 0  # answers of the node judged PASS, ever (not decayed)
    wrong: int = 0  # and WRONG

    @property
    def judged(self) -> int:
        return self.passed + self.wrong


class ValidationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def ask(
        self,
        node_id: str,
        *,
        model: str,
        network: int,
        subcloud: str,
        route_key: str,
        trace_id: str,
        max_answers: int,
        new_spec: Callable[[], job_pb2.JobSpec],
        challenge_id: uuid.UUID | None = None,
        settled_first: bool = False,
    ) -> Asked | None:
        """Writes a validation job for ``node_id``: of ``challenge_id`` when given (None if
        the node was asked it before), else of a challenge of the model the node has not
        been asked — open ones first, since they need answers to settle, or settled ones
        first (``settled_first``: a newcomer is checked against what is known) — else of a
        new one."""
        async with self._pool.acquire() as conn, conn.transaction():
            if challenge_id is not None:
                row = await conn.fetchrow(
                    "SELECT challenge_id, spec, false AS fresh FROM validation_challenges c"
                    " WHERE challenge_id = $1 AND status <> 'UNRESOLVED' AND NOT EXISTS ("
                    "  SELECT 1 FROM validation_answers a"
                    "  WHERE a.challenge_id = c.challenge_id AND a.node_id = $2)"
                    " FOR UPDATE",
                    challenge_id,
                    node_id,
                )
                if row is None:
                    return None
            else:
                row = await conn.fetchrow(
                    "SELECT challenge_id, spec, false AS fresh FROM validation_challenges c"
                    " WHERE model = $1 AND status IN ('OPEN', 'SETTLED')"
                    " AND NOT EXISTS (SELECT 1 FROM validation_answers a"
                    "  WHERE a.challenge_id = c.challenge_id AND a.node_id = $2)"
                    " AND (SELECT count(*) FROM validation_answers a"
                    "  WHERE a.challenge_id = c.challenge_id) < $3"
                    " ORDER BY (status = 'SETTLED') = $4 DESC, created_at LIMIT 1"
                    " FOR UPDATE SKIP LOCKED",
                    model,
                    node_id,
                    max_answers,
                    settled_first,
                )
            if row is None:
                template = new_spec()
                row = await conn.fetchrow(
                    "INSERT INTO validation_challenges (challenge_id, model, spec)"
                    " VALUES ($1, $2, $3) RETURNING challenge_id, spec, true AS fresh",
                    uuid.uuid4(),
                    model,
                    template.SerializeToString(deterministic=True),
                )
                assert row is not None
            spec = job_pb2.JobSpec()
            spec.ParseFromString(row["spec"])
            spec.network = network  # type: ignore[assignment]
            spec.constraints.subcloud = subcloud  # a subcloud's node takes only its jobs
            job_id = uuid.uuid4()
            expires_at = datetime.now(UTC) + spec.ttl.ToTimedelta()
            await insert_queued_job(
                conn,
                NewJob(
                    job_id=job_id,
                    spec=spec.SerializeToString(deterministic=True),
                    model=spec.model,
                    network=NETWORK_NAMES[network],
                    priority=job_pb2.PriorityClass.Name(spec.priority),
                    route_key=route_key,
                    request_digest=request_digest(request_facts(str(job_id), spec)),
                    trace_id=trace_id,
                    expires_at=expires_at,
                    tenant_id=VALIDATION_TENANT,
                ),
            )
            await conn.execute(
                "UPDATE jobs SET validation_challenge = $2 WHERE job_id = $1",
                job_id,
                row["challenge_id"],
            )
            await conn.execute(
                "INSERT INTO validation_answers (challenge_id, node_id, job_id)"
                " VALUES ($1, $2, $3)",
                row["challenge_id"],
                node_id,
                job_id,
            )
        return Asked(row["challenge_id"], job_id, spec, expires_at, bool(row["fresh"]), trace_id)

    @translating
    async def answer(
        self, asked: Asked, node_id: str, *, agreement: float, max_answers: int
    ) -> Judgement | None:
        """Takes the node's answer from its finalised validation job (the output it signed)
        and judges what the challenge's answers now decide. None when the job did not
        succeed on that node: there is no answer to judge."""
        async with self._pool.acquire() as conn, conn.transaction():
            challenge = await conn.fetchrow(
                "SELECT status, answer FROM validation_challenges WHERE challenge_id = $1"
                " FOR UPDATE",
                asked.challenge_id,
            )
            answered = await conn.fetchval(
                "UPDATE validation_answers a SET output = j.output, answered_at = now()"
                " FROM jobs j WHERE a.challenge_id = $1 AND a.node_id = $2 AND a.job_id = $3"
                " AND j.job_id = a.job_id AND j.state = 'SUCCEEDED' AND j.node_id = $2"
                " AND a.output IS NULL RETURNING true",
                asked.challenge_id,
                node_id,
                asked.job_id,
            )
            if not answered or challenge is None or challenge["status"] == Status.UNRESOLVED:
                return None
            rows = await conn.fetch(
                "SELECT node_id, output, verdict FROM validation_answers"
                " WHERE challenge_id = $1 AND output IS NOT NULL ORDER BY answered_at, node_id",
                asked.challenge_id,
            )
            answers = [
                Answer(
                    r["node_id"],
                    bytes(r["output"]),
                    Verdict(r["verdict"]) if r["verdict"] else None,
                )
                for r in rows
            ]
            settled = bytes(challenge["answer"]) if challenge["answer"] is not None else None
            judgement = judge(answers, settled, agreement=agreement, max_answers=max_answers)
            if judgement.status != challenge["status"]:
                await conn.execute(
                    "UPDATE validation_challenges SET status = $2, answer = $3,"
                    " settled_at = CASE WHEN $2 = 'SETTLED' THEN now() END"
                    " WHERE challenge_id = $1",
                    asked.challenge_id,
                    judgement.status.value,
                    judgement.answer,
                )
            if judgement.verdicts:
                await conn.execute(
                    "UPDATE validation_answers a SET verdict = v.verdict, judged_at = now()"
                    " FROM unnest($2::text[], $3::text[]) AS v(node_id, verdict)"
                    " WHERE a.challenge_id = $1 AND a.node_id = v.node_id AND a.verdict IS NULL",
                    asked.challenge_id,
                    list(judgement.verdicts),
                    [v.value for v in judgement.verdicts.values()],
                )
            return judgement

    @translating
    async def standings(
        self, node_ids: list[str] | None, half_life: timedelta
    ) -> dict[str, Standing]:
        """Each node's decayed passes, wrong answers and offence points (None: every node
        with any). Offences older than ten half-lives weigh nothing and are not read."""
        rows = await self._pool.fetch(
            "WITH v AS ("
            "  SELECT node_id,"
            "  coalesce(sum(w) FILTER (WHERE verdict = 'PASS'), 0) AS passes,"
            "  coalesce(sum(w) FILTER (WHERE verdict = 'WRONG'), 0) AS wrongs,"
            "  count(*) FILTER (WHERE verdict = 'PASS') AS passed,"
            "  count(*) FILTER (WHERE verdict = 'WRONG') AS wrong FROM ("
            "    SELECT node_id, verdict,"
            "    power(0.5, extract(epoch FROM now() - judged_at) / $2) AS w"
            "    FROM validation_answers WHERE verdict IS NOT NULL"
            "    AND ($1::text[] IS NULL OR node_id = ANY($1))) judged"
            "  GROUP BY node_id"
            "), p AS ("
            "  SELECT node_id,"
            "  sum(points * power(0.5, extract(epoch FROM now() - created_at) / $2)) AS points"
            "  FROM node_penalties WHERE ($1::text[] IS NULL OR node_id = ANY($1))"
            "  AND created_at > now() - make_interval(secs => $2 * 10)"
            "  GROUP BY node_id"
            ") SELECT node_id, coalesce(v.passes, 0) AS passes, coalesce(v.wrongs, 0) AS wrongs,"
            " coalesce(v.passed, 0) AS passed, coalesce(v.wrong, 0) AS wrong,"
            " coalesce(p.points, 0) AS points"
            " FROM v FULL JOIN p USING (node_id)",
            node_ids,
            half_life.total_seconds(),
        )
        return {
            r["node_id"]: Standing(
                Record(float(r["passes"]), float(r["wrongs"]), float(r["points"])),
                int(r["passed"]),
                int(r["wrong"]),
            )
            for r in rows
        }
