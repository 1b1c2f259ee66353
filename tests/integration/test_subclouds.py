"""Subcloud isolation: a subcloud's jobs run only on its member nodes, and nodes reserved
for a subcloud take no public jobs. Names that would share a routing key with another
subcloud ("a.b" and "a_b" both once became "a_b") are refused, for jobs and nodes alike."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from nacl.signing import SigningKey

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import details
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

# Each could not be told apart from another name in a routing key (a dot is the key's word
# separator; "_" and upper case were folded), or is no name at all.
COLLIDING = ["a.b", "a_b", "Acme", "acme\n", "-acme", "a" * 65, "a/b"]


def spec(subcloud: str = "") -> job_pb2.JobSpec:
    s = job_pb2.JobSpec(model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3))
    s.constraints.subcloud = subcloud
    return s


async def finish(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    async def succeeded() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state == job_pb2.JOB_STATE_SUCCEEDED else None

    return await eventually(succeeded, within=20, interval=0.1, what=f"job {job_id} to succeed")


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


def violated(error: grpc.aio.AioRpcError) -> list[str]:
    bad = details(error).get("BadRequest")
    assert isinstance(bad, error_details_pb2.BadRequest), details(error)
    return [v.field for v in bad.field_violations]


@pytest.mark.parametrize("name", COLLIDING)
async def test_a_job_subcloud_that_could_share_a_queue_is_refused(
    jobs: job_service_pb2_grpc.JobServiceStub, name: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(name)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert violated(caught.value) == ["job.constraints.subcloud"]


async def test_a_node_subcloud_that_could_share_a_queue_is_refused_at_hello(
    scheduler: SchedulerServer,
) -> None:
    key = SigningKey.generate()
    hello = nodes_pb2.Hello(
        node_id="colliding-node",
        public_key=bytes(key.verify_key),
        models=[nodes_pb2.ServedModel(name="scripted")],
        slots=1,
        subclouds=["acme", "a.b", "a_b"],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as channel:
        call = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()
        await call.write(nodes_pb2.NodeStreamRequest(hello=hello))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert violated(caught.value) == ["hello.subclouds[1]", "hello.subclouds[2]"]
