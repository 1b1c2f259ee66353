"""Results a node was never asked for, and replayed results: rejected, the node penalised,
nothing billed twice, the job finalised at most once. Scripted nodes send correctly signed
results (their own key and id), so only the scheduler's bookkeeping can tell them apart
from honest ones; in-process scheduler, real RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg

from fleetwire.process.settings import Settings
from fleetwire.protocol.facts import verify_job
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def status(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    return (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job


async def wait_state(
    jobs: job_service_pb2_grpc.JobServiceStub, job_id: str, state: int
) -> job_pb2.Job:
    async def reached() -> job_pb2.Job | None:
        job = await status(jobs, job_id)
        return job if job.state == state else None

    # 30 s: the machine may be loaded.
    return await eventually(reached, within=30, what=f"job {job_id} in {state}")


class Ledger:
    """Read-only views of the run's database."""

    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.postgres.dsn.get_secret_value()

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self._dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def entries(self, job_id: str) -> list[tuple[str, str]]:
        rows = await self._fetch(
            "SELECT kind, account FROM ledger_entries WHERE job_id = $1 ORDER BY kind",
            uuid.UUID(job_id),
        )
        return [(r["kind"], r["account"]) for r in rows]

    async def penalties(self, node_id: str) -> list[tuple[str, str | None, int | None]]:
        rows = await self._fetch(
            "SELECT offence, job_id, attempt FROM node_penalties WHERE node_id = $1 ORDER BY id",
            node_id,
        )
        return [
            (r["offence"], str(r["job_id"]) if r["job_id"] else None, r["attempt"]) for r in rows
        ]

    async def wait_penalties(
        self, node_id: str, count: int
    ) -> list[tuple[str, str | None, int | None]]:
        async def enough() -> list[tuple[str, str | None, int | None]] | None:
            found = await self.penalties(node_id)
            return found if len(found) >= count else None

        # 30 s: the machine may be loaded.
        return await eventually(enough, within=30, what=f"{count} penalties of {node_id}")

    async def outcomes(self, job_id: str) -> list[tuple[int, str, str]]:
        rows = await self._fetch(
            "SELECT attempt, node_id, outcome FROM attempts WHERE job_id = $1 ORDER BY attempt",
            uuid.UUID(job_id),
        )
        return [(r["attempt"], r["node_id"], r["outcome"]) for r in rows]


async def start_held_job(
    jobs: job_service_pb2_grpc.JobServiceStub, honest: ScriptedNode
) -> tuple[str, nodes_pb2.Dispatch]:
    """Submits a job that ``honest`` (holding its results) runs and keeps RUNNING."""
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
    await eventually(
        lambda: honest.held, within=30, what="the honest node to finish (and hold) the job"
    )
    await wait_state(jobs, job_id, job_pb2.JOB_STATE_RUNNING)
    dispatch = next(d for d in honest.dispatches if d.job_id == job_id)
    return job_id, dispatch


async def finish_honestly(
    jobs: job_service_pb2_grpc.JobServiceStub, honest: ScriptedNode, job_id: str
) -> job_pb2.Job:
    for held in honest.held:
        await honest.send(held)
    job = await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    assert verify_job(job, bytes(honest.key.verify_key))
    return job


async def test_signed_result_for_a_job_or_attempt_never_given_is_rejected_and_penalised(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    ledger = Ledger(settings)
    honest = ScriptedNode(address, "honest-3", "scripted", lambda _n: "ok", hold_results=True)
    thief = ScriptedNode(address, "thief-3", "scripted", lambda _n: "ok")
    async with running(honest):
        job_id, dispatch = await start_held_job(jobs, honest)
        async with running(thief):
            # Another node's job, signed by the thief with the job's real request digest.
            await thief.send(nodes_pb2.NodeStreamRequest(result=thief.signed_result(dispatch)))
            # Its own job, but an attempt it was never given.
            await honest.send(
                nodes_pb2.NodeStreamRequest(result=honest.signed_result(dispatch, attempt=2))
            )
            assert await ledger.wait_penalties("thief-3", 1) == [("UNEXPECTED_RESULT", job_id, 1)]
            assert await ledger.wait_penalties("honest-3", 1) == [("UNEXPECTED_RESULT", job_id, 2)]
            assert scheduler.penalties.points("thief-3") > 4
            job = await status(jobs, job_id)
            assert job.state == job_pb2.JOB_STATE_RUNNING, "neither result finalised the job"
            assert await ledger.entries(job_id) == [], "nothing billed"
            job = await finish_honestly(jobs, honest, job_id)
    assert job.signature.node_id == "honest-3"
    assert job.signature.attempt == 1
    assert await ledger.outcomes(job_id) == [(1, "honest-3", "SUCCEEDED")]
    assert await ledger.entries(job_id) == [
        ("JOB_CHARGE", "tenant:anonymous"),
        ("NODE_EARNING", "owner:honest-3"),
    ]
    assert await ledger.penalties("honest-3") == [("UNEXPECTED_RESULT", job_id, 2)]


async def test_announcing_another_nodes_job_does_not_make_its_result_final(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    """Hello.running_jobs re-attaches a node's own jobs after a reconnect; a node that
    announces a job dispatched to another node must not be able to finalise it."""
    address = f"127.0.0.1:{scheduler.port}"
    ledger = Ledger(settings)
    honest = ScriptedNode(address, "honest-4", "scripted", lambda _n: "ok", hold_results=True)
    async with running(honest):
        job_id, dispatch = await start_held_job(jobs, honest)
        thief = ScriptedNode(address, "thief-4", "scripted", lambda _n: "ok")
        forged = thief.signed_result(dispatch)  # valid: the thief's key, id and the job's facts
        thief.announce = [(job_id, 1)]
        thief.deliver_after_welcome = [nodes_pb2.NodeStreamRequest(result=forged)]
        async with running(thief):
            assert await ledger.wait_penalties("thief-4", 1) == [("UNEXPECTED_RESULT", job_id, 1)]
            assert (await status(jobs, job_id)).state == job_pb2.JOB_STATE_RUNNING
            assert await ledger.entries(job_id) == []
            job = await finish_honestly(jobs, honest, job_id)
    assert job.signature.node_id == "honest-4"
    assert await ledger.outcomes(job_id) == [(1, "honest-4", "SUCCEEDED")]
    assert await ledger.entries(job_id) == [
        ("JOB_CHARGE", "tenant:anonymous"),
        ("NODE_EARNING", "owner:honest-4"),
    ]


async def test_replayed_result_of_a_final_job_changes_nothing_and_is_penalised(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    ledger = Ledger(settings)
    node = ScriptedNode(address, "replayer-5", "scripted", lambda _n: "ok")
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        final = await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
        (result,) = node.results
        for _ in range(2):
            await node.send(nodes_pb2.NodeStreamRequest(result=result))
        assert await ledger.wait_penalties("replayer-5", 2) == [
            ("UNEXPECTED_RESULT", job_id, 1),
            ("UNEXPECTED_RESULT", job_id, 1),
        ]
    after = await status(jobs, job_id)
    assert after == final, "the job is exactly as it was finalised"
    assert verify_job(after, bytes(node.key.verify_key))
    assert await ledger.outcomes(job_id) == [(1, "replayer-5", "SUCCEEDED")]
    assert await ledger.entries(job_id) == [
        ("JOB_CHARGE", "tenant:anonymous"),
        ("NODE_EARNING", "owner:replayer-5"),
    ]
