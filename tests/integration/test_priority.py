"""Priority under backlog: with one busy single-slot node and a backlog of bulk jobs, an
urgent job submitted after them (and after a normal one) starts before them — on classic
queues (AMQP priorities) and on quorum queues (a queue per priority class, consumed in
priority order)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.quorum_mesh import quorum_mesh
from tests.support.scripted_node import ScriptedNode, running


@pytest.fixture
async def quorum(
    settings: Settings, run_id: str
) -> AsyncIterator[tuple[job_service_pb2_grpc.JobServiceStub, SchedulerServer]]:
    async with quorum_mesh(settings, run_id) as mesh:
        yield mesh


def spec(priority: int, prompt: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted",
        prompt=prompt,
        priority=priority,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )


async def test_urgent_job_overtakes_a_bulk_backlog(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    await urgent_overtakes_bulk(jobs, scheduler, "busy-node")


async def test_urgent_job_overtakes_a_bulk_backlog_on_quorum_queues(
    quorum: tuple[job_service_pb2_grpc.JobServiceStub, SchedulerServer],
) -> None:
    await urgent_overtakes_bulk(*quorum, "busy-quorum-node")


async def urgent_overtakes_bulk(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, node_id: str
) -> None:
    busy = ScriptedNode(
        address=f"127.0.0.1:{scheduler.port}",
        node_id=node_id,
        model="scripted",
        script=lambda _n: "ok",
        work_time=1.0,  # the normal and urgent jobs arrive while the first bulk one runs
    )
    async with running(busy):
        bulk = [
            (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(
                        job=spec(job_pb2.PRIORITY_CLASS_BULK, f"bulk {i}")
                    )
                )
            ).job.job_id
            for i in range(5)
        ]

        async def states(ids: list[str]) -> list[int]:
            return [
                (await jobs.Status(job_service_pb2.StatusRequest(job_id=i))).job.state for i in ids
            ]

        async def one_bulk_running() -> bool:
            return job_pb2.JOB_STATE_RUNNING in await states(bulk)

        # The first bulk job is running (its state in PostgreSQL); the rest wait.
        await eventually(one_bulk_running, within=20, what="a bulk job to be RUNNING")
        # A normal job, then an urgent one: the urgent one starts first although the normal
        # one waited longer (on quorum queues both wait in their class queue's prefetch).
        normal = (
            await jobs.Submit(
                job_service_pb2.SubmitRequest(job=spec(job_pb2.PRIORITY_CLASS_NORMAL, "normal"))
            )
        ).job.job_id
        urgent = (
            await jobs.Submit(
                job_service_pb2.SubmitRequest(job=spec(job_pb2.PRIORITY_CLASS_URGENT, "urgent"))
            )
        ).job.job_id

        async def all_succeeded() -> bool:
            return set(await states([*bulk, normal, urgent])) == {job_pb2.JOB_STATE_SUCCEEDED}

        # Leave no job behind for the next test.
        await eventually(all_succeeded, within=40, what="every job to succeed")
    order = [d.job_id for d in busy.dispatches]
    assert sorted(order) == sorted([*bulk, normal, urgent])
    started_before_urgent = order.index(urgent)
    assert started_before_urgent <= 1, (
        f"urgent started after {started_before_urgent} bulk jobs of the backlog: {order}"
    )
    assert order.index(urgent) < order.index(normal) < order.index(bulk[-1]), order
