"""RabbitMQ stopped and restarted during a stream of submits, with a scheduler and a node
working: every Submit either returned a job that later SUCCEEDED exactly once, or
returned UNAVAILABLE and left nothing behind. The broker is left running."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc

from fleetwire.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.faults.conftest import SchedulerProcess
from tests.support.scripted_node import ScriptedNode, running

ROOT = Path(__file__).resolve().parents[2]


def spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def restart_rabbitmq() -> None:
    """Stops the broker, then brings it back with the project's own start-up script."""
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "stop"], check=True, capture_output=True, timeout=120
    )
    await asyncio.sleep(1.0)
    await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "scripts" / "ensure-services.sh")],
        check=True,
        capture_output=True,
        timeout=300,
    )


async def test_broker_restart_during_submits_loses_and_duplicates_nothing(
    jobs: job_service_pb2_grpc.JobServiceStub,
    start_scheduler: Callable[[str], SchedulerProcess],
    settings: Settings,
) -> None:
    replica = await asyncio.to_thread(start_scheduler, "sched-restart")
    node = ScriptedNode(f"127.0.0.1:{replica.port}", "steady", "scripted", lambda _n: "ok")
    accepted: list[str] = []
    refused = 0
    unexpected: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def submit_stream() -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                reply = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), timeout=15)
                accepted.append(reply.job.job_id)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    unexpected.append(err.code())
                refused += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)

    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    started_at = await conn.fetchval("SELECT now()")
    await conn.close()
    async with running(node):
        submitter = asyncio.create_task(submit_stream())
        await asyncio.sleep(1.5)
        before = len(accepted)
        await restart_rabbitmq()
        await asyncio.sleep(3.0)  # the bridge and the scheduler reconnect by themselves
        stop.set()
        await submitter
        after_restart = len(accepted) - before

        conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
        try:
            for _ in range(600):
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[])"
                    " AND state <> 'SUCCEEDED'",
                    [uuid.UUID(j) for j in accepted],
                )
                if waiting == 0:
                    break
                await asyncio.sleep(0.2)
            states = await conn.fetch(
                "SELECT state, count(*) AS n FROM jobs WHERE job_id = ANY($1::uuid[])"
                " GROUP BY state",
                [uuid.UUID(j) for j in accepted],
            )
            finalised_twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT job_id FROM attempts WHERE job_id = ANY($1::uuid[])"
                " AND outcome = 'SUCCEEDED' GROUP BY job_id HAVING count(*) > 1) AS doubled",
                [uuid.UUID(j) for j in accepted],
            )
            stray = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE created_at >= $2"
                " AND NOT (job_id = ANY($1::uuid[]))",
                [uuid.UUID(j) for j in accepted],
                started_at,
            )
        finally:
            await conn.close()
    assert not unexpected, f"only UNAVAILABLE may refuse a submit: {unexpected}"
    assert before > 0
    assert after_restart > 0, "submits succeed again once the broker is back"
    assert {r["state"]: r["n"] for r in states} == {"SUCCEEDED": len(accepted)}
    assert finalised_twice == 0
    assert stray == 0, "a refused Submit left a job behind"
    print(f"accepted {len(accepted)}, refused {refused} (UNAVAILABLE)")
