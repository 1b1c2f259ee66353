"""Subcloud isolation: a subcloud's jobs run only on its member nodes, and nodes reserved
for a subcloud take no public jobs."""

from __future__ import annotations

import asyncio

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.scripted_node import ScriptedNode, running


def spec(subcloud: str = "") -> job_pb2.JobSpec:
    s = job_pb2.JobSpec(model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3))
    s.constraints.subcloud = subcloud
    return s


async def finish(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    for _ in range(200):
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        if job.state == job_pb2.JOB_STATE_SUCCEEDED:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not succeed: {job}")


async def test_subcloud_jobs_stay_in_their_pool(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    private = ScriptedNode(address, "acme-node", "scripted", lambda _n: "ok", subclouds=["acme"])
    public = ScriptedNode(address, "public-node", "scripted", lambda _n: "ok")
    async with running(private), running(public):
        acme = [
            (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec("acme")))).job.job_id
            for _ in range(3)
        ]
        open_jobs = [
            (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
            for _ in range(3)
        ]
        acme_done = [await finish(jobs, j) for j in acme]
        open_done = [await finish(jobs, j) for j in open_jobs]
    assert {j.signature.node_id for j in acme_done} == {"acme-node"}
    assert {j.signature.node_id for j in open_done} == {"public-node"}
    assert not [d for d in private.dispatches if d.job_id in open_jobs]
