"""A node that forges signatures is penalised, excluded from matching, and the job finishes
on an honest node; every penalty is recorded."""

from __future__ import annotations

import uuid

import asyncpg

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


async def test_forger_is_excluded_and_the_job_finishes_elsewhere(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    forger = ScriptedNode(address, "forger-2", "scripted", script=lambda _n: "bad-signature")
    honest = ScriptedNode(address, "honest-2", "scripted", script=lambda _n: "ok")
    spec = job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )
    async with running(forger):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id
        # Forged results earn 5 points each; the threshold is 10.
        await eventually(
            lambda: scheduler.penalties.is_excluded("forger-2"),
            within=10,
            what="forger-2 to be excluded",
        )
        dispatches_when_excluded = len(forger.dispatches)
        async with running(honest):

            async def succeeded() -> job_pb2.Job | None:
                job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
                return job if job.state == job_pb2.JOB_STATE_SUCCEEDED else None

            job = await eventually(succeeded, within=10, what="the job to succeed")
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.signature.node_id == "honest-2"
    assert len(forger.dispatches) == dispatches_when_excluded, "no work while excluded"

    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT offence, excluded_until FROM node_penalties"
            " WHERE node_id = 'forger-2' AND job_id = $1 ORDER BY id",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    # 5 points per forged result against a threshold of 10 that decays a little meanwhile:
    # excluded at the second or third forgery, recorded with every one of them.
    assert [r["offence"] for r in rows] == ["BAD_SIGNATURE"] * len(rows)
    assert 2 <= len(rows) <= 3
    assert all(r["excluded_until"] is None for r in rows[:-1])
    assert rows[-1]["excluded_until"] is not None
