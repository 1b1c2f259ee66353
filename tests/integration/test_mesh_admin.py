"""MeshAdminService on a real scheduler: nodes (from Redis presence), queue depths per route
and priority, dead letters and a job's full trail."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def spec(network: int = job_pb2.NETWORK_MAINNET, priority: int = 0) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        network=network,
        priority=priority,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )


async def test_list_nodes_shows_connected_nodes_with_their_scheduler(
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, scheduler: SchedulerServer
) -> None:
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", "visible-node", "scripted", lambda _n: "ok", region="eu"
    )

    async def listed() -> dict[str, mesh_admin_service_pb2.NodeView]:
        reply = await admin.ListNodes(mesh_admin_service_pb2.ListNodesRequest())
        return {n.node_id: n for n in reply.nodes}

    async def heartbeat_seen() -> mesh_admin_service_pb2.NodeView | None:
        view = (await listed()).get("visible-node")
        seen = (
            view is not None
            and view.last_seen.ToMicroseconds() > view.connected_at.ToMicroseconds()
        )
        return view if seen else None

    async with running(node):
        view = await eventually(
            heartbeat_seen, within=15, what="visible-node listed with a heartbeat after its Hello"
        )
        assert view.scheduler_id == scheduler.scheduler_id
        assert list(view.models) == ["scripted"]
        assert view.region == "eu"
        assert view.slots == 1
        assert not view.excluded
        assert view.last_seen.seconds >= view.connected_at.seconds > 0

    async def gone() -> bool:
        return "visible-node" not in await listed()

    # Well inside the presence entry's TTL (twice the lease): the disconnect removes it.
    await eventually(gone, within=5, what="visible-node gone from ListNodes once it disconnects")


async def test_queue_depths_per_route_and_priority(
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub,
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    # No node serves testnet.scripted, so these wait.
    for priority in (
        job_pb2.PRIORITY_CLASS_URGENT,
        job_pb2.PRIORITY_CLASS_BULK,
        job_pb2.PRIORITY_CLASS_BULK,
    ):
        await jobs.Submit(
            job_service_pb2.SubmitRequest(job=spec(job_pb2.NETWORK_TESTNET, priority))
        )
    depths = (await admin.QueueDepths(mesh_admin_service_pb2.QueueDepthsRequest())).depths
    ours = {
        d.priority: (d.waiting_jobs, d.queue_messages)
        for d in depths
        if d.route == "testnet.scripted"
    }
    assert ours[job_pb2.PRIORITY_CLASS_URGENT][0] == 1
    assert ours[job_pb2.PRIORITY_CLASS_BULK][0] == 2
    assert ours[job_pb2.PRIORITY_CLASS_BULK][1] >= 3  # the broker holds all three


async def test_dead_letters_and_job_trail(
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub,
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
) -> None:
    failing = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", "trail-node", "scripted", lambda _n: "fail-retryable"
    )
    async with running(failing):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id

        async def dead_lettered() -> bool:
            job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
            return job.state == job_pb2.JOB_STATE_DEAD_LETTERED

        await eventually(dead_lettered, within=30, what=f"job {job_id} to be dead-lettered")
    dead = (await admin.ListDeadLetters(mesh_admin_service_pb2.ListDeadLettersRequest())).jobs
    assert job_id in [j.job_id for j in dead]
    trail = await admin.JobTrail(mesh_admin_service_pb2.JobTrailRequest(job_id=job_id))
    assert trail.job.state == job_pb2.JOB_STATE_DEAD_LETTERED
    assert [a.attempt for a in trail.attempts] == [1, 2, 3, 4]
    assert {a.node_id for a in trail.attempts} == {"trail-node"}
    assert all(a.error.reason == "SCRIPTED_FAILURE" for a in trail.attempts[:-1])
    assert trail.attempts[-1].error.reason == "ATTEMPTS_EXHAUSTED"
    assert "SCRIPTED_FAILURE" in trail.attempts[-1].error.message
    assert all(a.ended_at.seconds >= a.dispatched_at.seconds for a in trail.attempts)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.JobTrail(mesh_admin_service_pb2.JobTrailRequest(job_id="nope"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_admin_cli_speaks_to_the_scheduler(
    scheduler: SchedulerServer, operator_key: str
) -> None:
    """`fleetwire admin mesh nodes` on the admin port, with the key of FLEETWIRE_ADMIN_KEY."""
    import json
    import os
    import sys

    node = ScriptedNode(f"127.0.0.1:{scheduler.port}", "cli-node", "scripted", lambda _n: "ok")
    async with running(node):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetwire_tools.cli",
            "admin",
            "mesh",
            "nodes",
            "--json",
            "--address",
            f"127.0.0.1:{scheduler.admin_port}",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "FLEETWIRE_ADMIN_KEY": operator_key},
        )
        out, _ = await process.communicate()
    assert process.returncode == 0
    listed = json.loads(out)["nodes"]
    assert "cli-node" in [n["node_id"] for n in listed]
