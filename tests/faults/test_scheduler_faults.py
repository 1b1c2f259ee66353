"""Scheduler faults: a replica SIGKILLed mid-job, and duplicate deliveries. Real scheduler
processes, real RabbitMQ and PostgreSQL; scripted protocol-level nodes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aiormq
import asyncpg

from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.faults.conftest import SchedulerProcess
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def wait_terminal(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    async def finished() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        done = job.state in (
            job_pb2.JOB_STATE_SUCCEEDED,
            job_pb2.JOB_STATE_FAILED,
            job_pb2.JOB_STATE_DEAD_LETTERED,
            job_pb2.JOB_STATE_EXPIRED,
        )
        return job if done else None

    return await eventually(finished, within=30, interval=0.1, what=f"job {job_id} to finish")


async def attempts_of(settings: Settings, job_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        return list(
            await conn.fetch(
                "SELECT attempt, node_id, scheduler_id, outcome FROM attempts"
                " WHERE job_id = $1 ORDER BY attempt",
                uuid.UUID(job_id),
            )
        )
    finally:
        await conn.close()


async def ledger_kinds(settings: Settings, job_id: str) -> list[str]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT kind FROM ledger_entries WHERE job_id = $1 ORDER BY kind", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    return [r["kind"] for r in rows]


async def messages_on(queue: str) -> int | None:
    """Ready plus unacknowledged messages of ``queue``, as RabbitMQ counts them."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        "name",
        "messages",
        "-q",
        "--no-table-headers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    for line in out.decode().splitlines():
        name, _, count = line.partition("\t")
        if name.strip() == queue:
            return int(count)
    return None


async def test_scheduler_sigkilled_mid_job_loses_nothing(
    jobs: job_service_pb2_grpc.JobServiceStub,
    start_scheduler: Callable[[str], SchedulerProcess],
    settings: Settings,
) -> None:
    first = await asyncio.to_thread(start_scheduler, "sched-a")
    second = await asyncio.to_thread(start_scheduler, "sched-b")
    slow = ScriptedNode(
        f"127.0.0.1:{first.port}", "slow-a", "scripted", lambda _n: "ok", work_time=30
    )
    quick = ScriptedNode(f"127.0.0.1:{second.port}", "quick-b", "scripted", lambda _n: "ok")
    async with running(slow):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await eventually(
            lambda: any(d.job_id == job_id for d in slow.dispatches),
            within=10,
            what="the dispatch to A",
        )
        async with running(quick):
            first.kill()  # mid-job: the delivery is unacked, the attempt open
            job = await wait_terminal(jobs, job_id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.signature.node_id == "quick-b"
    history = await attempts_of(settings, job_id)
    assert [(r["scheduler_id"], r["node_id"], r["outcome"]) for r in history] == [
        ("sched-a", "slow-a", "LOST"),
        ("sched-b", "quick-b", "SUCCEEDED"),
    ]
    assert await ledger_kinds(settings, job_id) == ["JOB_CHARGE", "NODE_EARNING"], "billed once"


async def test_duplicate_delivery_is_finalised_once(
    jobs: job_service_pb2_grpc.JobServiceStub,
    start_scheduler: Callable[[str], SchedulerProcess],
    settings: Settings,
    amqp_channel: aiormq.abc.AbstractChannel,
) -> None:
    replica = await asyncio.to_thread(start_scheduler, "sched-dup")
    node = ScriptedNode(
        f"127.0.0.1:{replica.port}", "dup-node", "scripted", lambda _n: "ok", work_time=1
    )
    topology = Topology(settings.mesh.namespace)
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await eventually(
            lambda: any(d.job_id == job_id for d in node.dispatches),
            within=10,
            what="the dispatch",
        )
        # Publish the same job again, as a duplicate publish or a stray redelivery would.
        envelope = job_pb2.Job(job_id=job_id, spec=spec())
        envelope.expires_at.GetCurrentTime()
        envelope.expires_at.seconds += 600
        for _ in range(2):
            await amqp_channel.basic_publish(
                envelope.SerializeToString(),
                exchange=topology.jobs_exchange,
                routing_key=topology.route_key("mainnet", "scripted"),
                properties=aiormq.spec.Basic.Properties(delivery_mode=2, priority=5),
            )
        job = await wait_terminal(jobs, job_id)
        queue = topology.route_queue(topology.route_key("mainnet", "scripted"))

        async def duplicates_settled() -> bool:
            """Both duplicates delivered and acked: nothing ready, nothing unacked."""
            return await messages_on(queue) == 0

        await eventually(duplicates_settled, within=30, what="the duplicates were handled")
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert [d.attempt for d in node.dispatches if d.job_id == job_id] == [1]
    history = await attempts_of(settings, job_id)
    assert [r["outcome"] for r in history] == ["SUCCEEDED"]
    assert await ledger_kinds(settings, job_id) == ["JOB_CHARGE", "NODE_EARNING"], "billed once"
