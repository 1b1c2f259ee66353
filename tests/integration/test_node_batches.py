"""Batched NodeStream messages (NodeStreamRequest.batch / NodeStreamResponse.batch), on the
real scheduler, RabbitMQ, Redis and PostgreSQL: a node that answers every job in one batch
(Accept, Progress, Result) gets each job finalised once, its chunks relayed, billed once; the
scheduler batches Dispatches to a node that takes batches, and never to one that does not."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

JOBS = 24


def spec(prompt: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt=prompt, sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def submit_all(jobs: job_service_pb2_grpc.JobServiceStub) -> list[str]:
    answers = await asyncio.gather(
        *(jobs.Submit(job_service_pb2.SubmitRequest(job=spec(f"b{i}"))) for i in range(JOBS))
    )
    return [answer.job.job_id for answer in answers]


async def all_succeeded(jobs: job_service_pb2_grpc.JobServiceStub, ids: list[str]) -> None:
    async def done() -> bool:
        states = [
            (await jobs.Status(job_service_pb2.StatusRequest(job_id=i))).job.state for i in ids
        ]
        return all(state == job_pb2.JOB_STATE_SUCCEEDED for state in states)

    await eventually(done, within=60, interval=0.2, what=f"{len(ids)} jobs to succeed")


async def books(settings: Settings, ids: list[str]) -> tuple[int, int]:
    """(succeeded attempts, ledger entries) of ``ids``."""
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        keys = [uuid.UUID(i) for i in ids]
        attempts = await conn.fetchval(
            "SELECT count(*) FROM attempts WHERE job_id = ANY($1::uuid[])"
            " AND outcome = 'SUCCEEDED'",
            keys,
        )
        entries = await conn.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE job_id = ANY($1::uuid[])", keys
        )
        return int(attempts), int(entries)
    finally:
        await conn.close()


async def test_a_node_answering_in_batches_gets_every_job_finalised_once(
    settings: Settings, scheduler: SchedulerServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    node = ScriptedNode(
        address=f"127.0.0.1:{scheduler.port}",
        node_id=f"batched-{uuid.uuid4().hex[:8]}",
        model="scripted",
        script=lambda _: "ok",
        stream=lambda d: ["scripted ", f"output {d.attempt}"],  # the signed output
        batched=True,
        slots=8,
    )
    ids = await submit_all(jobs)  # queued before the node is there: dispatches come at once
    async with running(node):
        await all_succeeded(jobs, ids)
    assert node.batches_sent == JOBS  # every answer was one batch
    assert node.batches_received >= 1  # the scheduler batched Dispatches to it
    assert await books(settings, ids) == (JOBS, 2 * JOBS)  # once each: debit and credit
    events = [e async for e in jobs.Watch(job_service_pb2.WatchRequest(job_id=ids[0]), timeout=10)]
    assert [e.chunk.text for e in events if e.HasField("chunk")] == ["scripted ", "output 1"]


async def test_a_node_that_does_not_take_batches_gets_single_messages(
    settings: Settings, scheduler: SchedulerServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    node = ScriptedNode(
        address=f"127.0.0.1:{scheduler.port}",
        node_id=f"plain-{uuid.uuid4().hex[:8]}",
        model="scripted",
        script=lambda _: "ok",
        slots=8,
    )
    ids = await submit_all(jobs)
    async with running(node):
        await all_succeeded(jobs, ids)
    assert node.batches_received == 0
    assert node.batches_sent == 0
    assert await books(settings, ids) == (JOBS, 2 * JOBS)
